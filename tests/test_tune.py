"""tune: LoRA and QLoRA on CPU, best adapter kept, resume after an interruption."""
import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import classification_recipe, default_sigint, write_recipe
from safetensors.torch import load_file

from edgeft import EdgeftError
from edgeft.core.artifacts import read_manifest
from edgeft.core.recipe import recipe_from_dict
from edgeft.stages.data import prepare_data
from edgeft.stages.tune import tune


@pytest.fixture(scope="module")
def sms_data(tmp_path_factory, tiny_bert):
    out = tmp_path_factory.mktemp("tune") / "data"
    prepare_data(recipe_from_dict(classification_recipe(tiny_bert)), out)
    return out


def edgeft(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "edgeft.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint, **kw)


def interrupt_at_first_checkpoint(args: list, progress, timeout: float = 180) -> tuple[int, str]:
    """Start `edgeft tune ARGS`, press Ctrl-C as soon as it has written a checkpoint."""
    proc = edgeft("tune", *args)
    deadline = time.time() + timeout
    while not progress.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_resume_after_interrupt_gives_the_same_adapter_as_an_uninterrupted_run(tmp_path, tiny_bert, sms_data):
    settings = {"max_steps": 120, "checkpoint_every": 5, "batch_size": 8}
    recipe_file = write_recipe(tmp_path / "r.yaml", classification_recipe(tiny_bert, tune=settings))
    out = tmp_path / "tuned"
    progress = tmp_path / "tuned.partial" / "checkpoint" / "progress.json"
    returncode, err = interrupt_at_first_checkpoint([sms_data, "-o", out, "-r", recipe_file], progress)
    assert returncode == 130, err
    assert "interrupted" in err and not out.exists()
    stopped_at = json.loads(progress.read_text())["step"]
    assert 0 < stopped_at < 120

    again = edgeft("tune", sms_data, "-o", out, "-r", recipe_file)
    _, err = again.communicate(timeout=60)
    assert again.returncode == 2 and "pass --resume to continue it" in err

    resumed = edgeft("tune", sms_data, "-o", out, "-r", recipe_file, "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resuming from step {stopped_at} of 120" in err
    manifest = read_manifest(out)
    assert manifest.metrics["steps"] == 120
    assert not (out / "checkpoint").exists() and not (tmp_path / "tuned.partial").exists()

    straight = tune(recipe_from_dict(classification_recipe(tiny_bert, tune=settings)), sms_data, tmp_path / "straight",
                    progress=False)
    assert straight.metrics["best_validation"]["loss"] == pytest.approx(
        manifest.metrics["best_validation"]["loss"], rel=1e-4)
    a, b = load_file(out / "adapter_model.safetensors"), load_file(tmp_path / "straight" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max() < 1e-4, key


def test_qlora_trains_on_cpu_and_keeps_the_best_epoch(tmp_path, tiny_bert, sms_data):
    recipe = recipe_from_dict(classification_recipe(tiny_bert, tune={"method": "qlora", "epochs": 3}))
    manifest = tune(recipe, sms_data, tmp_path / "q", progress=False)
    history = manifest.metrics["history"]
    assert len(history) == 3
    best = max(history, key=lambda h: (h["macro_f1"], -h["loss"]))
    assert manifest.metrics["best_validation"] == best
    assert manifest.config["method"] == "qlora"
    config = json.loads((tmp_path / "q" / "adapter_config.json").read_text())
    assert config["r"] == 8 and "classifier" in config["modules_to_save"]
    assert (tmp_path / "q" / "tokenizer.json").exists()


def test_tune_refuses_a_gguf_base_and_a_missing_data_folder(tmp_path, tiny_bert, sms_data):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    recipe = recipe_from_dict(classification_recipe(gguf))
    with pytest.raises(EdgeftError, match="is a GGUF file: convert it first with `edgeft import"):
        tune(recipe, sms_data, tmp_path / "out")
    with pytest.raises(EdgeftError, match="data folder not found"):
        tune(recipe_from_dict(classification_recipe(tiny_bert)), tmp_path / "nodata", tmp_path / "out")


def test_resume_from_an_epoch_boundary_with_gradient_accumulation(tmp_path, tiny_bert, sms_data):
    """A checkpoint written at the end of epoch 1 (not mid-epoch), with 2 batches per optimizer step:
    resuming from it ends where an uninterrupted run ends."""
    import shutil

    settings = {"epochs": 2, "batch_size": 16, "gradient_accumulation": 2, "checkpoint_every": 10_000}
    recipe = recipe_from_dict(classification_recipe(tiny_bert, tune=settings))
    straight = tune(recipe, sms_data, tmp_path / "straight", progress=False)
    steps = straight.metrics["steps"]
    assert len(straight.metrics["history"]) == 2 and steps == 2 * straight.metrics["history"][0]["step"]

    recipe_file = write_recipe(tmp_path / "r.yaml", classification_recipe(tiny_bert, tune=settings))
    out = tmp_path / "tuned"
    progress = tmp_path / "tuned.partial" / "checkpoint" / "progress.json"
    returncode, err = interrupt_at_first_checkpoint([sms_data, "-o", out, "-r", recipe_file], progress)
    assert returncode == 130, err
    saved = json.loads(progress.read_text())
    assert saved["epoch"] == 1 and saved["batch_in_epoch"] == 0 and saved["step"] == steps // 2
    shutil.copytree(tmp_path / "tuned.partial", tmp_path / "kept")  # what the interrupted run left
    resumed = edgeft("tune", sms_data, "-o", out, "-r", recipe_file, "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resuming from step {steps // 2} of {steps}" in err
    manifest = read_manifest(out)
    assert manifest.metrics["steps"] == steps
    assert [round(h["loss"], 4) for h in manifest.metrics["history"]] == \
           [round(h["loss"], 4) for h in straight.metrics["history"]]
    a, b = load_file(out / "adapter_model.safetensors"), load_file(tmp_path / "straight" / "adapter_model.safetensors")
    for key in a:
        assert (a[key] - b[key]).abs().max() < 1e-4, key
