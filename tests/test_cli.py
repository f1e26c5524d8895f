"""The command line: fast help, clear errors with exit code 2, reports in every format."""
import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import classification_recipe, write_recipe

from edgeft.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_help_is_fast_and_imports_nothing_heavy():
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", "import sys; from edgeft.cli import cli; "
                          "sys.argv=['edgeft','--help']\ntry: cli()\nexcept SystemExit: pass\n"
                          "print(sorted(m for m in ('torch','transformers','onnxruntime') if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert time.perf_counter() - start < 2.0
    assert out.stdout.strip().endswith("[]")
    for command in ("run", "tune", "merge", "export", "quantize", "bench", "data", "report"):
        assert command in out.stdout


@pytest.mark.parametrize("command", ["run", "tune", "merge", "export", "quantize", "bench"])
def test_every_command_explains_itself(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Usage: " in result.output and len(result.output) > 200


def test_bad_recipe_key_exits_2_naming_the_key(tmp_path):
    path = write_recipe(tmp_path / "bad.yaml", {"tune": {"epoch": 3}})
    result = invoke("run", path, "-o", tmp_path / "run")
    assert result.exit_code == 2
    assert "tune.epoch: unknown key (did you mean 'epochs'?)" in result.output
    assert not (tmp_path / "run").exists()


def test_missing_inputs_exit_2_naming_the_path(tmp_path, tiny_bert):
    recipe = write_recipe(tmp_path / "r.yaml", classification_recipe(tiny_bert))
    result = invoke("tune", tmp_path / "nowhere", "-o", tmp_path / "t", "-r", recipe)
    assert result.exit_code == 2 and f"data folder not found: {tmp_path / 'nowhere'}" in result.output
    result = invoke("data", "-o", tmp_path / "d", "--set", f"data.source={tmp_path / 'none.csv'}")
    assert result.exit_code == 2 and "data.source: file not found" in result.output
    result = invoke("run", "-o", tmp_path / "x", "--set", "model.base=/no/such/model")
    assert result.exit_code == 2 and "model.base: model not found: /no/such/model" in result.output


def test_wrong_kind_of_folder_is_refused(tmp_path, cls_run):
    run_dir, _, _ = cls_run
    result = invoke("merge", run_dir / "export-optimum", "-o", tmp_path / "m")
    assert result.exit_code == 2 and "is a 'export' artifact; expected 'tune'" in result.output
    result = invoke("quantize", run_dir / "merge", "-o", tmp_path / "q")
    assert result.exit_code == 2 and "expected 'export'" in result.output


def test_label_column_error_through_the_cli(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("message,category\nhello,a\n")
    result = invoke("data", "-o", tmp_path / "d", "--set", f"data.source={path}", "--set", "data.text_column=message")
    assert result.exit_code == 2
    assert "data.label_column: 'label' is not a column of" in result.output and "message, category" in result.output


def test_report_prints_every_format(cls_run):
    run_dir, _, report = cls_run
    table = invoke("report", run_dir / "bench")
    assert table.exit_code == 0 and "int8-dynamic" in table.output and "p50 ms @1t" in table.output
    as_json = json.loads(invoke("report", run_dir / "bench", "--format", "json").output)
    assert [v["name"] for v in as_json["variants"]] == [v["name"] for v in report["variants"]]
    assert invoke("report", run_dir / "bench", "--format", "csv").output.startswith("variant,format,size_bytes")
    assert "|" in invoke("report", run_dir / "bench", "--format", "md").output
