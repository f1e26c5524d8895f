"""Merge stage: fold the LoRA adapter into a full-precision copy of the base model.

The merge goes into fp32 weights, never into 4-bit modules. A parity gate compares the merged
model on validation examples with the adapter model (same fp32 base, unmerged) and, after QLoRA,
with what was trained (the NF4 base + adapter; or, for `tune.base_quant: int4`, the int4-grid base +
adapter against the merged model rounded to that grid). Below `merge.min_agreement` it refuses.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from edgeft import EdgeftError
from edgeft.core.artifacts import (
    carried_ref,
    input_ref,
    is_up_to_date,
    lineage_input,
    read_manifest,
    stage_output,
    up_to_date,
    write_manifest,
)
from edgeft.core.parity import compare_logits
from edgeft.core.recipe import Recipe
from edgeft.core.splits import load_split
from edgeft.core.tasks import get_task
from edgeft.runtime.files import HF_CONFIG_FILE, LABELS_FILE, PREPROCESS_FILE

GATE_NAMES = {"vs_adapter_fp32": "the adapter on the fp32 base",
              "vs_trained_nf4": "what was trained (NF4 base + adapter)",
              "vs_trained_int4": "what was trained (int4-grid base + adapter), both on the int4 grid"}
BATCH = 16
REMEDY = {"vs_trained_nf4": ": the adapter learned on the 4-bit base does not carry over exactly to the fp32 weights. "
                            "The bench scores the merged model and every variant either way: accept the gap with "
                            "--set merge.min_agreement=<lower>, or train on the fp32 base with --set tune.method=lora"}


def merge(recipe: Recipe, tune_dir: Path, out: Path, *, force: bool = True) -> dict:
    tuned = read_manifest(tune_dir, stage="tune", what="tune output")
    task, labels = get_task(tuned.task), tuned.labels
    inputs = [input_ref("adapter", tune_dir, tuned), carried_ref(tuned, "base_model")]
    config = {"task": task.name, **recipe.merge.model_dump(mode="json")}
    if not force and is_up_to_date(out, inputs, config):
        return up_to_date(out)
    base = lineage_input(tuned, "base_model")
    if not (base / HF_CONFIG_FILE).exists():
        raise EdgeftError(f"base model {base} (recorded in {tune_dir}/manifest.json) has no {HF_CONFIG_FILE}")
    tokenizer = task.load_tokenizer(tune_dir)
    rows = load_split(lineage_input(tuned, "data"), "validation")[:recipe.merge.samples]
    examples = task.examples(rows, tokenizer, tuned.config["max_length"], labels)
    merged, checks = merge_and_check(task, base, Path(tune_dir), examples, labels, tuned.config)
    gate = checks["gate"]["against"]
    agreement = checks[gate]["agreement"]
    checks["gate"].update(min_agreement=recipe.merge.min_agreement, passed=agreement >= recipe.merge.min_agreement)
    if not checks["gate"]["passed"]:
        raise EdgeftError(f"merge refused: the merged model agrees with {GATE_NAMES[gate]} on "
                          f"{agreement:.1%} of {checks[gate]['compared']} validation predictions, below "
                          f"merge.min_agreement {recipe.merge.min_agreement:.1%} "
                          f"(max logit difference {checks[gate]['max_abs_logit_diff']:.3g})" + REMEDY.get(gate, ""))
    with stage_output(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name in (LABELS_FILE, PREPROCESS_FILE):
            if (Path(tune_dir) / name).exists():
                shutil.copy(Path(tune_dir) / name, tmp / name)
        return write_manifest(tmp, stage="merge", task=task.name, inputs=inputs, config=config, metrics=checks,
                              labels=labels, format="pytorch")


def merge_and_check(task, base: Path, tune_dir: Path, examples, labels: list[str], tune_config: dict):
    """The merged fp32 model, and its logits compared with the adapter model's and, after QLoRA,
    with what was trained: the gate is the last of them. An adapter trained on the int4 grid is
    compared there: the merged model rounded to that grid (what the int4 variant computes)."""
    import copy

    import torch
    from peft import PeftModel

    from edgeft.training.qlora import grid_options, load_trained, trained_grid

    model = PeftModel.from_pretrained(task.load_model(base, labels), tune_dir).eval()
    adapter_logits = examples.collect_logits(model, BATCH)
    merged = model.merge_and_unload().eval().to(torch.float32)
    merged_logits = examples.collect_logits(merged, BATCH)
    checks = {"vs_adapter_fp32": compare_logits(adapter_logits, merged_logits), "gate": {"against": "vs_adapter_fp32"}}
    if tune_config["method"] != "qlora":
        return merged, checks
    trained_logits = examples.collect_logits(load_trained(task, tune_dir, labels), BATCH)
    grid = trained_grid(tune_config)
    if grid:
        from edgeft.training.grid import put_on_grid
        rounded = copy.deepcopy(merged)
        put_on_grid(rounded, grid, **grid_options(tune_config))
        checks["vs_trained_int4"] = compare_logits(trained_logits, examples.collect_logits(rounded, BATCH))
        checks["gate"]["against"] = "vs_trained_int4"
    else:  # the NF4 base with the adapter; the merge must not drift far from it
        checks["vs_trained_nf4"] = compare_logits(trained_logits, merged_logits)
        checks["gate"]["against"] = "vs_trained_nf4"
    return merged, checks
