"""Bundles for the device: what they hold, the torch-free runtime, and refusals."""
import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgeft import EdgeftError
from edgeft.cli import cli
from edgeft.core.artifacts import read_manifest
from edgeft.stages.package import package


@pytest.fixture(scope="module")
def cls_bundle(cls_run, tmp_path_factory):
    run_dir, recipe, _ = cls_run
    out = tmp_path_factory.mktemp("bundle") / "sms"
    package(recipe, run_dir / "quantize/int8-dynamic", out, bench_dir=run_dir / "bench", zip_bundle=True)
    return out


def test_bundle_holds_the_runtime_files_hashes_recipe_and_measurements(cls_bundle, cls_run):
    run_dir, recipe, report = cls_run
    manifest = read_manifest(cls_bundle, stage="package")
    wheel = "edgeft_runtime-0.1.0-py3-none-any.whl"
    assert set(manifest.files) == {"model.onnx", "tokenizer.json", "labels.json", "preprocess.json", "recipe.yaml",
                                      "README.md", "eval.jsonl", "tokenizer_check.json", wheel}
    assert manifest.runtime["wheel"] == wheel and manifest.self_checks["positive_label"] == "spam"
    # the evaluation slice is the head of the held-out test split, as it is
    test = (run_dir / "data/test.jsonl").read_text().splitlines()
    shipped = (cls_bundle / "eval.jsonl").read_text().splitlines()
    assert shipped == test[:recipe.package.eval_samples] and manifest.self_checks["eval_examples"] == len(shipped)
    preprocess = json.loads((cls_bundle / "preprocess.json").read_text())
    assert preprocess["max_length"] == recipe.data.max_length and preprocess["truncation_side"] == "right"
    measured = next(v for v in report["variants"] if v["name"] == "int8-dynamic")
    assert manifest.metrics["quality"] == measured["metrics"]
    assert manifest.metrics["latency"][0]["p50_ms"] == measured["latency"][0]["p50_ms"]
    assert manifest.metrics["size_bytes"] == measured["size_bytes"]
    assert manifest.config["recipe"]["name"] == recipe.name and manifest.variant == "int8-dynamic"
    readme = (cls_bundle / "README.md").read_text()
    assert "from edgeft.runtime import load" in readme and f"{measured['metrics']['accuracy']:.4f}" in readme
    assert f"pip install sms/{wheel}" in readme and "edgeft-runtime predict sms ..." in readme
    assert (cls_bundle.parent / "sms.zip").stat().st_size > 1000


def test_predicting_from_a_bundle_imports_neither_torch_nor_transformers(cls_bundle):
    code = ("import sys; from edgeft.runtime import load; m = load(sys.argv[1]); "
            "print(m.predict(['WINNER!! claim your free prize now', 'see you at lunch'])); "
            "print(sorted(k for k in ('torch', 'transformers', 'optimum') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(cls_bundle)], capture_output=True, text=True, check=True)
    predictions, heavy = out.stdout.strip().splitlines()
    assert heavy == "[]"
    assert predictions.count("'ham'") + predictions.count("'spam'") == 2


def test_predict_command_reads_arguments_and_stdin(cls_bundle):
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    text = "Call now to win £1000"
    result = CliRunner().invoke(cli, ["predict", str(cls_bundle), text, "--json"])
    assert result.exit_code == 0
    row = json.loads(result.output)
    # the same number straight from onnxruntime and the tokenizer file, without edgeft's runtime
    ids = Tokenizer.from_file(str(cls_bundle / "tokenizer.json")).encode(text).ids
    session = ort.InferenceSession(str(cls_bundle / "model.onnx"))
    feed = {"input_ids": np.array([ids]), "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
            "token_type_ids": np.zeros((1, len(ids)), dtype=np.int64)}
    logits = session.run(None, {k: v for k, v in feed.items() if k in {i.name for i in session.get_inputs()}})[0][0]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    labels = json.loads((cls_bundle / "labels.json").read_text())["labels"]
    assert row["label"] == labels[int(probs.argmax())] and row["probability"] == pytest.approx(probs.max(), abs=1e-4)
    piped = CliRunner().invoke(cli, ["predict", str(cls_bundle)], input="ok see you\nFREE entry txt WIN\n")
    assert piped.exit_code == 0
    assert [line.split("\t")[2] for line in piped.output.strip().splitlines()] == ["ok see you", "FREE entry txt WIN"]


def test_predict_on_the_bundle_gives_exactly_the_predictions_the_bench_scored(cls_bundle, cls_run):
    """Train/serve skew: the bundle carries its preprocessing, so the device predicts what was measured."""
    run_dir, _, report = cls_run
    result = CliRunner().invoke(cli, ["predict", str(cls_bundle), "--input", str(run_dir / "data/test.jsonl"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    said = [json.loads(line)["label"] for line in result.output.splitlines()]
    test = [json.loads(line) for line in (run_dir / "data/test.jsonl").read_text().splitlines()]
    scored = next(v for v in report["variants"] if v["name"] == "int8-dynamic")
    assert len(said) == len(test) == report["test_examples"] == len(scored["predictions"])
    assert said == scored["predictions"]
    accuracy = sum(s == r["label"] for s, r in zip(said, test)) / len(test)
    assert accuracy == pytest.approx(scored["metrics"]["accuracy"])


def test_tampered_missing_and_wrong_kind_bundles_are_refused(cls_bundle, tmp_path):
    from edgeft.runtime import load

    tampered = shutil.copytree(cls_bundle, tmp_path / "tampered")
    with open(tampered / "labels.json", "w") as f:
        f.write('{"labels": ["spam", "ham"]}\n')  # swapped labels: the kind of change that must not pass
    with pytest.raises(EdgeftError, match=r"tampered/labels.json is damaged"):
        load(tampered)
    missing = shutil.copytree(cls_bundle, tmp_path / "missing")
    (missing / "tokenizer.json").unlink()
    with pytest.raises(EdgeftError, match=r"missing/tokenizer.json is missing"):
        load(missing)
    result = CliRunner().invoke(cli, ["predict", str(tampered), "hello"])
    assert result.exit_code == 2 and "labels.json is damaged" in result.output
    # a classifier is not a chat model, and a data folder is not a bundle
    chat = CliRunner().invoke(cli, ["chat", str(cls_bundle)], input="hi\n")
    assert chat.exit_code == 2 and "holds a 'classification' model" in chat.output
    with pytest.raises(EdgeftError, match="has no manifest.json: it is not an edgeft artifact"):
        load(cls_bundle.parent)  # the folder around the bundle
    with pytest.raises(EdgeftError, match="is a 'package' artifact; expected 'export' or 'quantize'"):
        package(None, cls_bundle, tmp_path / "again")


def test_generation_bundle_streams_through_the_runtime(gen_run, tmp_path):
    from edgeft.runtime import load

    run_dir, recipe, _ = gen_run
    bundle = tmp_path / "gen"
    package(recipe, run_dir / "quantize/int4", bundle, bench_dir=run_dir / "bench")
    manifest = read_manifest(bundle, stage="package")
    assert {"model.onnx", "model.onnx.data", "model.prefill.avx512.onnx", "generation.json",
            "tokenizer.json"} <= set(manifest.files)
    assert manifest.metrics["decode"][0]["decode_tokens_per_s"]["median"] > 0
    code = ("import sys, json; from edgeft.runtime import load; g = load(sys.argv[1]); "
            "print(json.dumps(''.join(g.stream('Who wrote Hamlet ?', max_new_tokens=6)))); "
            "print(sorted(k for k in ('torch', 'transformers') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, check=True)
    streamed, heavy = out.stdout.strip().splitlines()[-2:]
    assert heavy == "[]"
    # the reference: greedy ids of the quantized folder itself, through onnxruntime, decoded whole
    from tokenizers import Tokenizer

    reference = load(run_dir / "quantize/int4")
    ids = reference.encode_chat([{"role": "user", "content": "Who wrote Hamlet ?"}])
    greedy = list(reference.generate_ids(ids, 6))
    text = Tokenizer.from_file(str(bundle / "tokenizer.json")).decode(greedy)
    assert json.loads(streamed) == text and greedy
    wrong = CliRunner().invoke(cli, ["predict", str(bundle), "hello"])
    assert wrong.exit_code == 2 and "holds a 'generation' model, not a classifier" in wrong.output


def test_verify_checks_hashes_and_the_tokenizer_against_its_recorded_ids(cls_bundle, gen_run, tmp_path):
    from edgeft.core.artifacts import write_manifest

    ok = CliRunner().invoke(cli, ["verify", str(cls_bundle)])
    assert ok.exit_code == 0
    samples = len(json.loads((cls_bundle / "tokenizer_check.json").read_text())["samples"])
    assert ok.output.strip() == f"{cls_bundle}: 9 files match their sha256; the tokenizer gives the recorded ids " \
                                f"for all {samples} sample texts" and samples == 11

    run_dir, recipe, _ = gen_run
    bundle = tmp_path / "gen"
    package(recipe, run_dir / "quantize/int4", bundle, bench_dir=run_dir / "bench")
    check = json.loads((bundle / "tokenizer_check.json").read_text())
    # change one merge of the BPE tokenizer, then rewrite the manifest as a careless copy would: the hashes
    # pass, the ids do not
    tokenizer = json.loads((bundle / "tokenizer.json").read_text())
    merges = tokenizer["model"]["merges"]
    used = next(i for i, m in enumerate(merges) if (m if isinstance(m, str) else " ".join(m)) == "Ġ t")
    del merges[used]
    (bundle / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    manifest = read_manifest(bundle, verify=False)
    write_manifest(bundle, stage="package", task="generation", inputs=[], config=manifest.config)
    first_changed = next(s["text"] for s in check["samples"] if " t" in s["text"])
    result = CliRunner().invoke(cli, ["verify", str(bundle)])
    assert result.exit_code == 2
    assert f"tokenizer.json tokenizes {first_changed!r} differently than when the bundle was made" in result.output
    from edgeft.runtime import load
    with pytest.raises(EdgeftError, match="differently than when the bundle was made"):
        load(bundle)


def test_the_runtime_wheel_is_byte_identical_when_rebuilt_and_needs_only_three_packages(tmp_path):
    import hashlib
    import zipfile

    from edgeft.core.wheel import build_runtime_wheel

    first, second = build_runtime_wheel(tmp_path / "a"), build_runtime_wheel(tmp_path / "b")
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    with zipfile.ZipFile(first) as wheel:
        names = wheel.namelist()
        metadata = wheel.read("edgeft_runtime-0.1.0.dist-info/METADATA").decode()
        scripts = wheel.read("edgeft_runtime-0.1.0.dist-info/entry_points.txt").decode()
    assert {n.split("/")[0] for n in names} == {"edgeft", "edgeft_runtime-0.1.0.dist-info"}
    assert all(n.startswith("edgeft/runtime/") for n in names if n.startswith("edgeft/"))
    assert "edgeft/__init__.py" not in names and "edgeft/runtime/cli.py" in names
    requires = sorted(line.split(":", 1)[1].split(">")[0].strip() for line in metadata.splitlines()
                      if line.startswith("Requires-Dist:") and "extra ==" not in line)
    assert requires == ["numpy", "onnxruntime", "tokenizers"]  # the server's starlette, uvicorn: an extra
    assert 'Requires-Dist: uvicorn>=0.30; extra == "serve"' in metadata
    assert "edgeft-runtime = edgeft.runtime.cli:main" in scripts


def test_the_runtime_metrics_are_scikit_learns():
    """The device has no scikit-learn: its accuracy and F1 must still be the same numbers."""
    import random

    from sklearn.metrics import accuracy_score, f1_score

    from edgeft.runtime.metrics import classification_metrics

    labels = ["ham", "spam", "other", "never-said"]
    for seed in range(100):
        rng = random.Random(seed)
        n = rng.randint(1, 40)
        truth, said = [rng.choice(labels[:3]) for _ in range(n)], [rng.choice(labels) for _ in range(n)]
        ours = classification_metrics(truth, said, labels, "spam")
        assert ours["accuracy"] == pytest.approx(accuracy_score(truth, said), abs=1e-12)
        assert ours["macro_f1"] == pytest.approx(f1_score(truth, said, labels=labels, average="macro", zero_division=0),
                                                 abs=1e-12)
        assert ours["spam_f1"] == pytest.approx(f1_score(truth, said, labels=["spam"], average="macro", zero_division=0),
                                                abs=1e-12)
