"""The whole classifier path on a tiny BERT and the real SMS sample: every stage, read back."""
import csv
import json

import numpy as np
import pytest

from edgeft import EdgeftError
from edgeft.core.artifacts import read_manifest
from edgeft.stages.quantize import count_ops


def test_every_stage_wrote_a_verified_manifest_with_lineage(cls_run):
    run_dir, _, _ = cls_run
    stages = {"data": "data", "tune": "tune", "merge": "merge", "export-optimum": "export",
              "quantize/int8-dynamic": "quantize", "quantize/int8-static": "quantize", "quantize/int4": "quantize",
              "bench": "bench"}
    manifests = {name: read_manifest(run_dir / name, stage=stage) for name, stage in stages.items()}
    tune_inputs = {r["role"] for r in manifests["tune"].inputs}
    assert tune_inputs == {"data", "base_model"}
    assert manifests["merge"].inputs[0]["fingerprint"] != manifests["export-optimum"].inputs[0]["fingerprint"]
    # lineage inside the run folder is relative, so the folder can move; outside it stays absolute
    assert manifests["quantize/int4"].inputs[0]["path"] == "../../export-optimum"
    assert manifests["tune"].inputs[0]["path"] == "../data"
    base_ref = next(r for r in manifests["tune"].inputs if r["role"] == "base_model")
    assert base_ref["path"].startswith("/")
    assert manifests["tune"].metrics["steps"] > 0
    assert all("torch" in m.versions for m in manifests.values())


def test_merge_parity_is_recorded_and_exact_against_the_fp32_adapter(cls_run):
    run_dir, _, _ = cls_run
    checks = read_manifest(run_dir / "merge").metrics
    assert checks["vs_adapter_fp32"]["max_abs_logit_diff"] < 1e-4
    assert checks["vs_adapter_fp32"]["agreement"] == 1.0
    assert checks["gate"]["passed"] is True and checks["gate"]["against"] == "vs_adapter_fp32"


def test_export_matches_pytorch(cls_run):
    run_dir, _, _ = cls_run
    parity = read_manifest(run_dir / "export-optimum").metrics["parity"]
    assert parity["max_abs_logit_diff"] < 1e-4 and parity["agreement"] == 1.0 and parity["passed"]


def test_every_quantized_variant_stays_close_to_fp32(cls_run):
    """Drift thresholds: the share of validation inputs whose label a variant keeps, and how far its
    logits move, measured by the quantize stage against the fp32 export."""
    run_dir, _, _ = cls_run
    limits = {"int8-dynamic": (0.95, 0.5), "int8-static": (0.9, 1.0), "int4": (0.9, 1.0)}
    for name, (min_agreement, max_diff) in limits.items():
        drift = read_manifest(run_dir / "quantize" / name).metrics["vs_fp32"]
        assert drift["compared"] > 20
        assert drift["agreement"] >= min_agreement and drift["max_abs_logit_diff"] <= max_diff, (name, drift)


def test_quantized_variants_hold_the_quantized_operators(cls_run):
    run_dir, _, _ = cls_run
    assert count_ops(run_dir / "quantize/int8-dynamic/model.onnx").get("DynamicQuantizeLinear", 0) > 0
    static = count_ops(run_dir / "quantize/int8-static/model.onnx")
    assert static.get("QuantizeLinear", 0) > 0 and static.get("DequantizeLinear", 0) > 0
    assert count_ops(run_dir / "quantize/int4/model.onnx").get("MatMulNBits", 0) > 0
    fp32 = (run_dir / "export-optimum/model.onnx").stat().st_size
    assert (run_dir / "quantize/int8-dynamic/model.onnx").stat().st_size < fp32 / 2


def test_bench_report_json_csv_md_and_plot(cls_run):
    run_dir, recipe, report = cls_run
    saved = json.loads((run_dir / "bench/report.json").read_text())
    names = [v["name"] for v in saved["variants"]]
    assert names == ["trained", "pytorch-fp32", "onnx-fp32", "int4", "int8-dynamic", "int8-static", "majority-class"]
    test = [json.loads(line) for line in (run_dir / "data/test.jsonl").read_text().splitlines()]
    assert saved["test_examples"] == len(test)
    for v in saved["variants"]:
        assert "spam_f1" in v["metrics"]
        if v["name"] == "majority-class":
            share = sum(r["label"] == v["predicts"] for r in test) / len(test)
            assert v["metrics"]["accuracy"] == pytest.approx(share)
            continue
        # the accuracy is what the stored predictions score against the test labels
        assert len(v["predictions"]) == len(test)
        assert v["metrics"]["accuracy"] == pytest.approx(np.mean([p == r["label"] for p, r in zip(v["predictions"], test)]))
        if v["name"] == "trained":  # scored for the ledger, not timed
            assert v["stage"] == "tune" and v["latency"] == [] and v["peak_rss_bytes"] == {}
            continue
        lat = v["latency"][0]
        assert lat["threads"] == 1 and lat["samples"] == recipe.bench.iterations * recipe.bench.rounds
        assert v["throughput"][0]["examples_per_s"]["median"] > 0
        model_file = "model.safetensors" if v["format"] == "pytorch" else "model.onnx"
        assert v["size_bytes"] >= (run_dir / v["path"].split(str(run_dir) + "/")[1] / model_file).stat().st_size
    # ONNX workers never load torch: each peaks below the PyTorch worker
    peaks = {v["name"]: v["peak_rss_bytes"]["1"] for v in saved["variants"] if v["peak_rss_bytes"]}
    assert all(peaks[name] < peaks["pytorch-fp32"] for name in peaks if name != "pytorch-fp32"), peaks
    # the ONNX fp32 model predicts what the PyTorch model predicts
    by_name = {v["name"]: v for v in saved["variants"]}
    assert by_name["onnx-fp32"]["metrics"]["accuracy"] == by_name["pytorch-fp32"]["metrics"]["accuracy"]
    with open(run_dir / "bench/report.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and rows[0]["variant"] == "trained"
    assert float(rows[1]["p50_ms"]) == pytest.approx(by_name["pytorch-fp32"]["latency"][0]["p50_ms"])
    assert "table" not in saved and "plot" not in saved  # shown from the rows, never stored pre-formatted
    assert "| pytorch-fp32 " in (run_dir / "bench/report.md").read_text()
    assert (run_dir / "bench/accuracy_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved["machine"]["cpus"] >= 1 and saved["versions"]["onnxruntime"]


def test_rerun_skips_up_to_date_stages(cls_run, capsys):
    from edgeft.pipeline import run_pipeline

    run_dir, recipe, _ = cls_run
    before = {p: (run_dir / p / "manifest.json").read_text() for p in ("tune", "merge", "export-optimum", "bench", "package")}
    built = json.loads((run_dir / "run.json").read_text())["stage_seconds"]
    run_pipeline(recipe, run_dir, progress=False)
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["skipped"] == ["data", "tune", "merge", "export optimum", "quantize optimum", "bench", "package"]
    assert summary["stage_seconds"] == built and summary["failed"] is None  # how long each took to build, kept
    assert before == {p: (run_dir / p / "manifest.json").read_text() for p in before}


def test_a_moved_run_folder_still_verifies_its_lineage(cls_run, tmp_path):
    import shutil

    from edgeft.core.artifacts import find_in_lineage
    from edgeft.stages.quantize import quantize

    run_dir, recipe, _ = cls_run
    moved = shutil.copytree(run_dir, tmp_path / "elsewhere" / "run")
    manifest = read_manifest(moved / "quantize/int8-dynamic")
    assert find_in_lineage(manifest, "data") == moved / "data"
    (run_dir / "data").rename(run_dir / "data.away")  # the original no longer matters
    try:
        again = quantize(recipe, moved / "export-optimum", moved / "quantize", only=["int8-dynamic"])[0]
        assert again.folder == moved / "quantize" / "int8-dynamic" and not again.reused
        assert again.metrics["vs_fp32"]["agreement"] == manifest.metrics["vs_fp32"]["agreement"]
    finally:
        (run_dir / "data.away").rename(run_dir / "data")


def test_damaged_input_is_refused_by_the_next_stage(cls_run, tmp_path):
    import shutil

    from edgeft.stages.quantize import quantize

    run_dir, recipe, _ = cls_run
    broken = tmp_path / "export"
    shutil.copytree(run_dir / "export-optimum", broken)
    with open(broken / "model.onnx", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02")
    with pytest.raises(EdgeftError, match="export/model.onnx is damaged"):
        quantize(recipe, broken, tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_runtime_classifier_agrees_with_the_bench(cls_run):
    from edgeft.runtime import load

    run_dir, _, report = cls_run
    model = load(run_dir / "export-optimum")
    test = [json.loads(line) for line in (run_dir / "data/test.jsonl").read_text().splitlines()]
    preds = model.predict([r["text"] for r in test])
    onnx = next(v for v in report["variants"] if v["name"] == "onnx-fp32")
    assert [label for label, _ in preds] == onnx["predictions"]
    accuracy = np.mean([p[0] == r["label"] for p, r in zip(preds, test)])
    assert accuracy == pytest.approx(onnx["metrics"]["accuracy"])


def test_the_ledger_follows_the_model_through_every_step(cls_run):
    run_dir, _, _ = cls_run
    saved = json.loads((run_dir / "bench/report.json").read_text())
    ledger, rows = saved["ledger"], {v["name"]: v for v in saved["variants"]}
    steps = {s["model"]: s for s in ledger["steps"]}
    assert list(steps) == ["trained", "pytorch-fp32", "onnx-fp32", "int4", "int8-dynamic", "int8-static"]
    assert [steps[m]["previous"] for m in steps] == [None, "trained", "pytorch-fp32"] + ["onnx-fp32"] * 3
    assert steps["trained"]["step"] == "trained (adapter on its training base)"
    for step in steps.values():
        assert [saved["labels"][i] for i in step["top1"]] == rows[step["model"]]["predictions"]
        assert step["metric"] == rows[step["model"]]["metrics"]["accuracy"]
        if step["previous"]:  # recomputed here from each step's first outputs
            prev = steps[step["previous"]]
            assert step["agreement"] == pytest.approx(np.mean([a == b for a, b in zip(prev["top1"], step["top1"])]))
            assert step["change_pts"] == pytest.approx(100 * (step["metric"] - prev["metric"]))
            assert step["mean_kl"] >= 0 and (step["mean_kl"] > 0 or step["agreement"] == 1)
    losses = [s["change_pts"] for s in steps.values() if s["change_pts"] is not None]
    assert (ledger["worst"] is None) == (min(losses) >= 0)
    if ledger["worst"]:
        assert steps[ledger["worst"]]["change_pts"] == min(losses)
    markdown = (run_dir / "bench/report.md").read_text()
    assert "## Accuracy ledger" in markdown and "\n| trained (adapter on its training base) | trained " in markdown
