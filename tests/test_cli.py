"""The command line: fast help, clear errors with exit code 2, reports in every format."""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import classification_recipe, write_recipe

from edgeft.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_help_imports_nothing_heavy():
    out = subprocess.run([sys.executable, "-c", "import sys; from edgeft.cli import cli; "
                          "sys.argv=['edgeft','--help']\ntry: cli()\nexcept SystemExit: pass\n"
                          "print(sorted(m for m in ('torch','transformers','onnxruntime') if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("[]")
    for command in ("run", "tune", "merge", "export", "quantize", "bench", "data", "report"):
        assert command in out.stdout


@pytest.mark.parametrize("command", ["run", "tune", "merge", "export", "quantize", "bench"])
def test_every_command_explains_itself(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Usage: " in result.output and len(result.output) > 200


def test_variants_names_the_module_that_builds_each_kind():
    result = invoke("variants")
    assert result.exit_code == 0
    generation = result.output.split("generation:")[1]
    for kind, module in (("genai:int4|int8-weights", "edgeft/generation/weight_only.py"),
                         ("gguf:gguf", "edgeft/generation/gguf.py"), ("optimum:dynamic", "edgeft/quantizers/dynamic.py")):
        line = generation.split(kind)[1].split("\n")[1]
        assert f"built in {module}" in line, line
    assert "optimum:static" in result.output.split("generation:")[0] and "optimum:static" not in generation
    wrong = invoke("variants", "--task", "vision")
    assert wrong.exit_code == 2 and "unknown task 'vision'" in wrong.output


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


def test_recipes_lists_the_builtin_ones_and_init_copies_one_out(tmp_path, monkeypatch):
    listed = invoke("recipes")
    assert listed.exit_code == 0
    lines = {line.split()[0]: line.split()[1] for line in listed.output.strip().splitlines()}
    assert lines == {"assistant-spam-smollm2": "generation", "assistant-trec-smollm2": "generation",
                     "assistant-trec-gemma3": "generation",
                     "assistant-trec-vs-llamacpp": "generation", "sms-spam-minilm": "classification"}
    monkeypatch.chdir(tmp_path)
    made = invoke("init", "assistant-trec-smollm2")
    assert made.exit_code == 0 and (tmp_path / "assistant-trec-smollm2.yaml").exists()
    from edgeft.core.recipe import load_recipe
    assert load_recipe(tmp_path / "assistant-trec-smollm2.yaml").data.source == "trec"
    again = invoke("init", "assistant-trec-smollm2")
    assert again.exit_code == 2 and "assistant-trec-smollm2.yaml exists: pass --force" in again.output
    unknown = invoke("init", "nope", "-o", tmp_path / "x.yaml")
    assert unknown.exit_code == 2 and "no built-in recipe named 'nope'" in unknown.output


def test_a_wheel_carries_the_builtin_recipes(tmp_path):
    import shutil
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    # a copy of the source: an in-tree build would leave build/ behind, whose stale files later wheels pick up
    src = shutil.copytree(root, tmp_path / "src", symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(src)], capture_output=True, text=True, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(tmp_path.glob("edgeft-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"edgeft/recipes/sms-spam-minilm.yaml", "edgeft/recipes/assistant-trec-smollm2.yaml",
            "edgeft/data/sms-spam-sample.csv"} <= set(names)
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_run_force_through_the_cli_reruns_every_stage_and_keeps_the_console_quiet(tmp_path, tiny_bert):
    import json

    recipe = write_recipe(tmp_path / "r.yaml", classification_recipe(
        tiny_bert, tune={"max_steps": 4}, bench={"iterations": 4, "rounds": 1}))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgeft.cli", "run", str(recipe), "-o", str(run)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    created = {p: json.loads((run / p / "manifest.json").read_text())["created"] for p in ("data", "tune", "bench")}
    files = {p: json.loads((run / p / "manifest.json").read_text())["files"] for p in ("data",)}
    forced = subprocess.run(cmd + ["--force"], capture_output=True, text=True, timeout=600)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["skipped"] == []
    assert "up to date, skipped" not in forced.stderr and forced.stderr.count(": done in") == 7
    assert all(json.loads((run / p / "manifest.json").read_text())["created"] >= created[p] for p in created)
    assert {p: json.loads((run / p / "manifest.json").read_text())["files"] for p in files} == files  # same split
    # the console: the stages' own lines and the table; the libraries' noise is in the log
    for out in (first, forced):
        assert "TracerWarning" not in out.stderr and "matmul_nbits_quantizer" not in out.stderr
        assert (out.stdout + out.stderr).count("\n") < 60  # lines as a terminal shows them (bars redraw with \\r)
        assert "int8-dynamic" in out.stdout and "accuracy" in out.stdout
    log = (run / "edgeft.log").read_text()
    assert "TracerWarning" in log or "DeprecationWarning" in log
