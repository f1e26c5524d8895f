"""Bad input gives a clear error naming the field, file, line or byte, exit code 2, and leaves
earlier outputs as they were."""
import json
import shutil

import pytest
from click.testing import CliRunner

from edgeft import EdgeftError
from edgeft.cli import cli
from edgeft.core.recipe import recipe_from_dict
from edgeft.stages.data import prepare_data


def prepare(tmp_path, path, **data):
    recipe = recipe_from_dict({"data": {"source": str(path), **data}})
    return prepare_data(recipe, tmp_path / "data")


def labelled_csv(path, rows, header="text,label"):
    path.write_text(header + "\n" + "".join(f"{t},{label}\n" for t, label in rows))
    return path


def test_non_utf8_csv_names_the_file_and_the_byte_and_reads_with_data_encoding(tmp_path):
    path = tmp_path / "latin.csv"
    rows = [(f"message {i}", "a" if i % 2 else "b") for i in range(30)]
    text = "text,label\n" + "".join(f"{t},{label}\n" for t, label in rows)
    path.write_bytes(text.encode() + "caf\xe9 ouvert,a\n".encode("latin-1"))
    offset = len(text.encode()) + 3
    with pytest.raises(EdgeftError) as err:
        prepare(tmp_path, path)
    assert str(err.value).startswith(f"{path}: not valid utf-8 at byte {offset} (line 32)")
    assert "--set data.encoding=latin-1" in str(err.value)
    manifest = prepare(tmp_path, path, encoding="latin-1")
    texts = [json.loads(line)["text"] for split in ("train", "validation", "test")
             for line in (tmp_path / "data" / f"{split}.jsonl").read_text().splitlines()]
    assert "café ouvert" in texts and manifest.metrics["rows_read"] == 31


def test_jsonl_line_that_is_not_an_object_names_its_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "hi", "label": "a"}\n\n["hi", "a"]\n')
    with pytest.raises(EdgeftError, match=r"rows.jsonl:3: each line must be a JSON object, this one is a list"):
        prepare(tmp_path, path)


def test_empty_csv_file_is_refused(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(EdgeftError, match=r"empty.csv is empty: a CSV needs a header row and at least one row"):
        prepare(tmp_path, path)
    result = CliRunner().invoke(cli, ["data", "-o", str(tmp_path / "d"), "--set", f"data.source={path}"])
    assert result.exit_code == 2 and "error: data.source:" in result.output


def test_rows_with_an_empty_label_are_named_by_line(tmp_path):
    rows = [(f"message {i}", "" if i in (3, 7) else ("a" if i % 2 else "b")) for i in range(20)]
    path = labelled_csv(tmp_path / "gaps.csv", rows)
    with pytest.raises(EdgeftError) as err:
        prepare(tmp_path, path)
    assert str(err.value) == (f"data.label_column: 2 rows of {path} have an empty 'label' (line 5, 9): "
                              "fill them in or remove them")


def test_a_label_with_a_single_example_cannot_be_split_stratified(tmp_path):
    rows = [(f"message {i}", "a" if i % 2 else "b") for i in range(30)] + [("the only one", "rare")]
    path = labelled_csv(tmp_path / "rare.csv", rows)
    with pytest.raises(EdgeftError) as err:
        prepare(tmp_path, path)
    assert "needs at least 3 examples of every label; too few of 'rare' (1)" in str(err.value)
    assert not (tmp_path / "data").exists()


def test_a_damaged_onnx_file_in_a_variant_folder_is_named(cls_run, tmp_path):
    from edgeft.core.artifacts import write_manifest
    from edgeft.runtime import load

    run_dir, _, _ = cls_run
    variant = shutil.copytree(run_dir / "quantize/int8-dynamic", tmp_path / "variant")
    data = (variant / "model.onnx").read_bytes()
    (variant / "model.onnx").write_bytes(data[:len(data) // 3])  # cut short, as a broken copy would be
    with pytest.raises(EdgeftError, match=r"variant/model.onnx is damaged: its sha256 does not match"):
        load(variant)
    # the same file hashed as it is (damaged before it was packaged): onnxruntime's refusal, with the file
    manifest = json.loads((variant / "manifest.json").read_text())
    write_manifest(variant, stage="quantize", task="classification", inputs=[], config={}, variant="int8-dynamic")
    with pytest.raises(EdgeftError) as err:
        load(variant)
    assert str(err.value).startswith(f"{variant / 'model.onnx'} cannot be loaded by onnxruntime (damaged or not "
                                     "an ONNX model)")
    result = CliRunner().invoke(cli, ["predict", str(variant), "hello"])
    assert result.exit_code == 2 and "cannot be loaded by onnxruntime" in result.output
    assert manifest["stage"] == "quantize"


def test_recipe_errors_are_found_before_any_work(tmp_path):
    cases = {
        "quantize.variants.0: unknown key (did you mean 'symmetric'?)": None,
        "bench.threads.0: Input should be greater than 0": {"bench": {"threads": [0]}},
        "quantize.variants.0 (q): source 'genai' is not in export.backends ['optimum']":
            {"task": "generation", "quantize": {"variants": [{"name": "q", "method": "int4", "source": "genai"}]}},
        "quantize.variants.0 (c): no variant kind 'genai:int4' (source:method) for task classification":
            {"quantize": {"variants": [{"name": "c", "method": "int4", "source": "genai"}]}},
        "quantize.variants.0 (s): no variant kind 'optimum:static' (source:method) for task generation":
            {"task": "generation", "export": {"backends": ["optimum"]},
             "quantize": {"variants": [{"name": "s", "method": "static"}]}},
        "package.variant: 'int5' names no variant of this recipe (variants: int8-dynamic, int8-static, int4, optimum, or auto)":
            {"package": {"variant": "int5"}},
        "quantize.variants.0.block_size: unknown key": {"quantize": {"variants": [
            {"name": "d", "method": "dynamic", "block_size": 64}]}},
    }
    for message, data in cases.items():
        if data is None:
            continue
        with pytest.raises(EdgeftError) as err:
            recipe_from_dict(data)
        assert message in str(err.value), (message, str(err.value))
    result = CliRunner().invoke(cli, ["run", "-o", str(tmp_path / "run"), "--set", "package.variant=int5"])
    assert result.exit_code == 2 and "package.variant: 'int5' names no variant" in result.output
    assert not (tmp_path / "run").exists()


def test_set_into_a_value_is_a_clear_error():
    from edgeft.core.recipe import load_recipe

    with pytest.raises(EdgeftError, match=r"--set tune.epochs.max: tune.epochs is a value \(2\), not a section"):
        load_recipe(None, ["tune.epochs.max=3"])
    with pytest.raises(EdgeftError, match=r"--set export.backends.0.name: export.backends.0 is a value \('optimum'\)"):
        load_recipe(None, ["export.backends.0.name=x"])
