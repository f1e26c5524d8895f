import pytest

from edgeft import EdgeftError
from edgeft.core.artifacts import (
    find_in_lineage,
    input_ref,
    is_up_to_date,
    partial_path,
    read_manifest,
    stage_output,
    write_manifest,
)


def make_artifact(folder, stage="export", content=b"weights", inputs=()):
    with stage_output(folder) as tmp:
        (tmp / "model.onnx").write_bytes(content)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "tokenizer.json").write_text("{}")
        return write_manifest(tmp, stage=stage, task="classification", inputs=list(inputs), config={"a": 1},
                              metrics={"accuracy": 0.5})


def test_manifest_records_hashes_versions_and_metrics(tmp_path):
    make_artifact(tmp_path / "a")
    manifest = read_manifest(tmp_path / "a", stage="export")
    assert set(manifest.files) == {"model.onnx", "sub/tokenizer.json"}
    assert manifest.files["model.onnx"]["bytes"] == len(b"weights")
    assert manifest.versions["onnxruntime"] and manifest.versions["edgeft"]
    assert manifest.metrics == {"accuracy": 0.5}
    assert not partial_path(tmp_path / "a").exists()


def test_damaged_and_missing_files_are_named(tmp_path):
    make_artifact(tmp_path / "a")
    (tmp_path / "a" / "model.onnx").write_bytes(b"weightz")
    with pytest.raises(EdgeftError, match=r"a/model.onnx is damaged"):
        read_manifest(tmp_path / "a")
    (tmp_path / "a" / "sub" / "tokenizer.json").unlink()
    (tmp_path / "a" / "model.onnx").write_bytes(b"weights")
    with pytest.raises(EdgeftError, match=r"sub/tokenizer.json is missing"):
        read_manifest(tmp_path / "a")


def test_missing_folder_missing_manifest_bad_json_and_wrong_stage(tmp_path):
    with pytest.raises(EdgeftError, match="input folder not found"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x").write_text("1")
    with pytest.raises(EdgeftError, match="has no manifest.json: it is not an edgeft artifact"):
        read_manifest(tmp_path / "plain")
    make_artifact(tmp_path / "a")
    with pytest.raises(EdgeftError, match="is a 'export' artifact; expected 'merge'"):
        read_manifest(tmp_path / "a", stage="merge")
    (tmp_path / "a" / "manifest.json").write_text("{not json")
    with pytest.raises(EdgeftError, match="manifest.json is damaged: not valid JSON"):
        read_manifest(tmp_path / "a")


def test_failed_stage_keeps_the_previous_output(tmp_path):
    make_artifact(tmp_path / "a", content=b"first")
    with pytest.raises(RuntimeError, match="boom"):
        with stage_output(tmp_path / "a") as tmp:
            (tmp / "model.onnx").write_bytes(b"second")
            raise RuntimeError("boom")
    assert (tmp_path / "a" / "model.onnx").read_bytes() == b"first"
    assert not partial_path(tmp_path / "a").exists()
    read_manifest(tmp_path / "a")


def test_up_to_date_compares_inputs_and_config(tmp_path):
    src = make_artifact(tmp_path / "src", stage="merge")
    ref = input_ref("merged_model", tmp_path / "src", src)
    make_artifact(tmp_path / "out", inputs=[ref])
    assert is_up_to_date(tmp_path / "out", [ref], {"a": 1})
    assert not is_up_to_date(tmp_path / "out", [ref], {"a": 2})
    changed = make_artifact(tmp_path / "src", stage="merge", content=b"retrained")
    assert not is_up_to_date(tmp_path / "out", [input_ref("merged_model", tmp_path / "src", changed)], {"a": 1})


def test_lineage_is_followed_and_checked(tmp_path):
    data = make_artifact(tmp_path / "data", stage="data")
    merged = make_artifact(tmp_path / "merge", stage="merge", inputs=[input_ref("data", tmp_path / "data", data)])
    exported = make_artifact(tmp_path / "export", inputs=[input_ref("merged_model", tmp_path / "merge", merged)])
    assert find_in_lineage(exported, "data") == tmp_path / "data"
    make_artifact(tmp_path / "data", stage="data", content=b"other")  # the data was made anew since
    with pytest.raises(EdgeftError, match=r"data .*/data changed since it was used"):
        find_in_lineage(exported, "data")


def test_a_manifest_of_a_newer_format_is_refused_naming_both_formats(tmp_path):
    import json
    import subprocess
    import sys

    from edgeft.runtime.manifest import FORMAT_VERSION

    make_artifact(tmp_path / "a", stage="package")
    path = tmp_path / "a" / "manifest.json"
    data = json.loads(path.read_text())
    assert data["edgeft_manifest"] == FORMAT_VERSION and list(data)[-1] == "files"
    assert "folder" not in data and "reused" not in data and not any(k.startswith("_") for k in data)
    path.write_text(json.dumps({**data, "edgeft_manifest": FORMAT_VERSION + 1}))
    newer = f"manifest format {FORMAT_VERSION + 1}, newer than the format {FORMAT_VERSION} this edgeft-runtime"
    with pytest.raises(EdgeftError, match=newer):
        read_manifest(tmp_path / "a")
    done = subprocess.run([sys.executable, "-m", "edgeft.runtime", "verify", str(tmp_path / "a")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and newer in done.stderr and "upgrade edgeft-runtime" in done.stderr
    path.write_text(json.dumps({**data, "surprise": 1}))
    with pytest.raises(EdgeftError, match="manifest.json is damaged: unknown field"):
        read_manifest(tmp_path / "a")
