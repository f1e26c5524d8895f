"""MLflow tracking of a run: every stage logs to a temp file store, read back with MLflow's client;
without MLflow the flag is one clear error naming the extra."""
from __future__ import annotations

import json
import sys

import pytest
from conftest import copy_tree

from edgeft import EdgeftError
from edgeft.core.recipe import recipe_from_dict


def test_every_stage_of_a_run_logs_settings_metrics_and_reports_to_mlflow(cls_run, tmp_path):
    from mlflow.tracking import MlflowClient

    from edgeft.pipeline import run_pipeline

    run_dir, recipe, _ = cls_run
    moved = copy_tree(run_dir, tmp_path / "run")
    store = (tmp_path / "store").as_uri()
    tracked = recipe_from_dict({**recipe.model_dump(mode="json"), "tracking": {"uri": store, "experiment": "tiny"}})
    run_pipeline(tracked, moved, progress=False, track="mlflow")

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("tiny")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    parent = runs.pop("tiny-sms")
    assert set(runs) == {"data", "tune", "merge", "export optimum", "quantize optimum", "bench", "package"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in runs.values())
    assert parent.data.params["tune.learning_rate"] == str(recipe.tune.learning_rate)
    assert parent.info.status == "FINISHED" and runs["bench"].info.status == "FINISHED"
    report = json.loads((moved / "bench/report.json").read_text())
    bench = runs["bench"].data.metrics
    for row in report["variants"]:
        assert bench[f"{row['name']}.metrics.accuracy"] == pytest.approx(row["metrics"]["accuracy"])
    int8 = next(r for r in report["variants"] if r["name"] == "int8-dynamic")
    assert bench["int8-dynamic.latency.1t.p50_ms"] == pytest.approx(int8["latency"][0]["p50_ms"])
    assert runs["tune"].data.params["epochs"] == str(recipe.tune.epochs)
    tuned = json.loads((moved / "tune/manifest.json").read_text())["metrics"]["best_validation"]
    assert runs["tune"].data.metrics["best_validation.accuracy"] == pytest.approx(tuned["accuracy"])
    assert runs["data"].data.metrics["test_examples"] == report["test_examples"]
    quantized = runs["quantize optimum"].data.params
    assert quantized["int8-dynamic.method"] == "dynamic" and quantized["int4.block_size"] == "16"
    artifacts = {a.path for a in client.list_artifacts(runs["bench"].info.run_id)}
    assert {"report.json", "report.html", "report.md", "manifest.json"} <= artifacts
    assert runs["bench"].data.tags["edgeft.skipped"] == "True" and runs["bench"].data.metrics["seconds"] >= 0


def test_without_mlflow_the_flag_names_the_extra(cls_recipe, tmp_path, monkeypatch):
    from edgeft.core.tracking import tracker

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed: importing it fails
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(EdgeftError, match=r"needs its client, an optional extra: pip install 'edgeft\[track\]'"):
        tracker(cls_recipe, tmp_path, "mlflow")
    assert type(tracker(cls_recipe, tmp_path)).__name__ == "NoTracking"  # not asked for: nothing imported
