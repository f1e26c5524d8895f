"""Tune stage: LoRA / QLoRA fine-tuning of a base model on the data artifact.

The stage checks its inputs, skips work already done, continues an interrupted tune (--resume)
and writes the artifact; the training itself is edgeft/training/finetune.py, read top to bottom.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgeft import EdgeftError
from edgeft.core.artifacts import (
    Manifest,
    folder_ref,
    input_ref,
    is_up_to_date,
    partial_path,
    read_manifest,
    sha256_json,
    stage_output,
    up_to_date,
    write_manifest,
)
from edgeft.core.models import is_gguf, resolve_model
from edgeft.core.recipe import Recipe
from edgeft.core.tasks import get_task
from edgeft.runtime.files import ADAPTER_DIR, CHECKPOINT_DIR, CHECKPOINT_PROGRESS, LABELS_FILE
from edgeft.training.finetune import Run, TrainState, finetune, rank_checksums


def resolve_base(recipe: Recipe, base_dir: Path | None) -> Path:
    base = Path(base_dir) if base_dir else resolve_model(recipe.model.base)
    if is_gguf(base):
        raise EdgeftError(f"model.base {base} is a GGUF file: convert it first with `edgeft import {base}` "
                          "(edgeft run does this for you)")
    return base


def tune_config(recipe: Recipe) -> dict:
    return {"task": recipe.task, "seed": recipe.seed, "max_length": recipe.data.max_length,
            **recipe.tune.model_dump(mode="json", exclude={"threads", "eval_batch_size", "checkpoint_every"})}


def tune(recipe: Recipe, data_dir: Path, out: Path, *, base_dir: Path | None = None, resume: bool = False,
         force: bool = True, progress: bool = True) -> Manifest | None:
    out = Path(out)
    data_manifest = read_manifest(data_dir, stage="data", what="data")
    if data_manifest.task != recipe.task:
        raise EdgeftError(f"data {data_dir} was prepared for task '{data_manifest.task}', recipe says '{recipe.task}'")
    base = resolve_base(recipe, base_dir)
    get_task(recipe.task).check_base(recipe, base)
    inputs = [input_ref("data", data_dir, data_manifest), folder_ref("base_model", base)]
    config = tune_config(recipe)
    if not force and is_up_to_date(out, inputs, config):
        return up_to_date(out)
    run_key = sha256_json({"inputs": inputs, "config": config})
    check_resume(partial_path(out), run_key, resume)
    run, state = finetune(recipe, Path(data_dir), base, partial_path(out), run_key, progress)
    ranks = rank_checksums(run.accelerator, run.unwrapped())
    if not run.main:  # data-parallel: the main process writes the artifact
        return None
    return write_output(run, state, out, inputs, config, ranks)


def check_resume(work: Path, run_key: str, resume: bool) -> None:
    checkpoint = work / CHECKPOINT_DIR
    if checkpoint.exists():
        saved = json.loads((checkpoint / CHECKPOINT_PROGRESS).read_text())
        if not resume:
            raise EdgeftError(f"an interrupted tune is in {work} (step {saved['step']}): pass --resume to continue it, "
                              f"or delete that folder to start over")
        if saved.get("run_key") != run_key:
            raise EdgeftError(f"the interrupted tune in {work} used other data, base model or settings: "
                              "delete that folder to start over")
    elif work.exists():
        shutil.rmtree(work)  # a partial output without a checkpoint holds nothing worth keeping


def write_output(run: Run, state: TrainState, out: Path, inputs: list, config: dict, ranks: list[str]) -> Manifest:
    with stage_output(out, keep_partial=True) as tmp:  # tmp is the work folder: the best adapter is there
        shutil.rmtree(tmp / CHECKPOINT_DIR, ignore_errors=True)
        for f in (tmp / ADAPTER_DIR).iterdir():
            f.rename(tmp / f.name)
        (tmp / ADAPTER_DIR).rmdir()
        run.tokenizer.save_pretrained(tmp)
        run.task.write_preprocess(run.tokenizer, tmp, run.recipe.data.max_length)
        (tmp / LABELS_FILE).write_text(json.dumps(run.label_info, indent=2) + "\n")
        seconds = state.train_seconds
        metrics = {"best_validation": state.best, "history": state.history, "steps": state.step,
                   "loss_curve": state.losses, "train_seconds": round(seconds, 1),
                   "train_tokens_per_s": round(state.tokens / max(seconds, 1e-9), 1),
                   "trainable_params": run.trainable, "processes": run.accelerator.num_processes,
                   "device": run.accelerator.device.type, "mode": run.mode, "batch_size": run.batch_size,
                   "rank_adapter_sha256": ranks, "ranks_identical": len(set(ranks)) == 1}
        return write_manifest(tmp, stage="tune", task=run.recipe.task, inputs=inputs, config=config,
                              metrics=metrics, labels=run.label_info["labels"])
