"""Merge stage: fold the LoRA adapter into a full-precision copy of the base model.

The merge goes into fp32 weights, never into 4-bit modules. A parity gate compares the merged
model on validation examples with the adapter model (same fp32 base, unmerged) and, after QLoRA,
with what was trained (the NF4 base + adapter). Below `merge.min_agreement` it refuses.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from edgeft import EdgeftError
from edgeft.artifacts import (
    input_ref,
    is_up_to_date,
    lineage_input,
    read_manifest,
    stage_output,
    up_to_date,
    write_manifest,
)
from edgeft.batches import Examples, collect_logits
from edgeft.data import load_split
from edgeft.models import load_model, load_tokenizer
from edgeft.recipe import Recipe

GATE_NAMES = {"vs_adapter_fp32": "the adapter on the fp32 base",
              "vs_trained_nf4": "what was trained (NF4 base + adapter)"}


def compare(reference, candidate) -> dict:
    """Max |logit difference| and argmax agreement between two logit tensors of the same shape."""
    diff = (reference - candidate).abs()
    return {"max_abs_logit_diff": float(diff.max()), "mean_abs_logit_diff": float(diff.mean()),
            "agreement": float((reference.argmax(-1) == candidate.argmax(-1)).float().mean()),
            "compared": int(reference.shape[0])}


def merge(recipe: Recipe, tune_dir: Path, out: Path, *, force: bool = True) -> dict:
    import torch
    from peft import PeftModel

    tuned = read_manifest(tune_dir, stage="tune", what="tune output")
    task, labels = tuned["task"], tuned.get("labels", [])
    base = Path(tuned["base_model"])
    data_dir = lineage_input(tuned, "data")
    if not (base / "config.json").exists():
        raise EdgeftError(f"base model {base} (recorded in {tune_dir}/manifest.json) is missing")
    inputs = [input_ref("adapter", tune_dir, tuned),
              next(r for r in tuned["inputs"] if r["role"] == "base_model")]
    config = {"task": task, **recipe.merge.model_dump(mode="json")}
    if not force and is_up_to_date(out, inputs, config):
        return up_to_date(out)
    lineage_input(tuned, "base_model")

    tokenizer = load_tokenizer(tune_dir, task)
    rows = load_split(data_dir, "validation")[:recipe.merge.samples]
    examples = Examples(rows, tokenizer, task, tuned["config"]["max_length"], labels)
    batch = 16

    model = PeftModel.from_pretrained(load_model(base, task, labels), tune_dir).eval()
    adapter_logits = collect_logits(model, examples, batch)
    merged = model.merge_and_unload().eval()
    merged_logits = collect_logits(merged, examples, batch)
    checks = {"vs_adapter_fp32": compare(adapter_logits, merged_logits)}
    gate = "vs_adapter_fp32"
    if tuned["config"]["method"] == "qlora":
        # what was trained: the NF4 base with the adapter; the merge must not drift far from it
        from edgeft.tune import quantization_config
        trained = load_model(base, task, labels, quantization_config=quantization_config("qlora", False),
                             device_map={"": "cpu"})
        trained = PeftModel.from_pretrained(trained, tune_dir).eval()
        checks["vs_trained_nf4"] = compare(collect_logits(trained, examples, batch), merged_logits)
        gate = "vs_trained_nf4"
        del trained
    agreement = checks[gate]["agreement"]
    checks["gate"] = {"against": gate, "min_agreement": recipe.merge.min_agreement, "passed":
                      agreement >= recipe.merge.min_agreement}
    if agreement < recipe.merge.min_agreement:
        raise EdgeftError(f"merge refused: the merged model agrees with {GATE_NAMES[gate]} on "
                          f"{agreement:.1%} of {checks[gate]['compared']} validation predictions, below "
                          f"merge.min_agreement {recipe.merge.min_agreement:.1%} "
                          f"(max logit difference {checks[gate]['max_abs_logit_diff']:.3g})")

    with stage_output(out) as tmp:
        merged = merged.to(torch.float32)
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.copy(Path(tune_dir) / "labels.json", tmp / "labels.json")
        manifest = write_manifest(tmp, stage="merge", task=task, inputs=inputs, config=config, metrics=checks,
                                  labels=labels, format="pytorch")
    return manifest
