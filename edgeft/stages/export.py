"""Export stage: the merged model to ONNX, checked against PyTorch on real inputs.

Backends: `optimum` (optimum-onnx's exporter; classification, and decoders with a KV cache),
`genai` (onnxruntime-genai's model builder; decoders only) and `gguf` (llama.cpp's converter, F32;
decoders only; generation/gguf.py). Each call writes one artifact.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from edgeft import EdgeftError
from edgeft.core.artifacts import (
    Manifest,
    find_in_lineage,
    input_ref,
    is_up_to_date,
    read_manifest,
    stage_output,
    up_to_date,
    write_manifest,
)
from edgeft.core.console import say
from edgeft.core.recipe import Recipe
from edgeft.core.splits import load_split
from edgeft.core.tasks import get_task
from edgeft.runtime.files import GGUF_FILE, HF_CONFIG_FILE, LABELS_FILE, PREPROCESS_FILE, TOKENIZER_FILE


def export_config(recipe: Recipe, backend: str) -> dict:
    cfg = recipe.export
    return {"backend": backend, "opset": cfg.opset, "parity_atol": cfg.parity_atol,
            "parity_samples": cfg.parity_samples, "parity_new_tokens": cfg.parity_new_tokens}


def run_exporter(task, backend: str, merge_dir: Path, tmp: Path, opset: int | None) -> None:
    if backend == "optimum":
        from optimum.exporters.onnx import main_export
        main_export(str(merge_dir), output=tmp, task=task.optimum_task, opset=opset, do_validation=False,
                    local_files_only=True)
    elif backend == "gguf":  # F32, so that parity with PyTorch is as tight as for ONNX
        from edgeft.generation.gguf import convert
        convert(Path(merge_dir), tmp / GGUF_FILE, "f32")
    else:
        from edgeft.generation.genai import build_genai
        build_genai(Path(merge_dir), tmp, precision="fp32")
    sidecar = (TOKENIZER_FILE, HF_CONFIG_FILE) if backend == "gguf" else ()  # the runtime's ids; bench's shapes
    for name in (LABELS_FILE, PREPROCESS_FILE, *sidecar):
        if (Path(merge_dir) / name).exists():
            shutil.copy(Path(merge_dir) / name, tmp / name)


def check_parity(parity: dict, backend: str, atol: float) -> None:
    parity["passed"] = parity["max_abs_logit_diff"] <= atol and parity.get("greedy_identical", True)
    if not parity["passed"]:
        raise EdgeftError(f"export parity check failed ({backend}): max |ONNX - PyTorch| logit difference "
                          f"{parity['max_abs_logit_diff']:.3g} (export.parity_atol {atol:g})"
                          + ("" if parity.get("greedy_identical", True) else
                             f"; greedy tokens differ from PyTorch in {parity['greedy_mismatches']} prompts"))
    for tie in parity.get("greedy_ties", []):
        say(f"export ({backend}): prompt {tie['prompt']} takes another token at step {tie['step']}, where PyTorch's "
            f"two logits are {tie['logit_gap']:.2g} apart (within export.parity_atol {atol:g}): a tie, counted as "
            "agreeing")


def export(recipe: Recipe, merge_dir: Path, out: Path, *, backend: str = "optimum", force: bool = True) -> Manifest:
    merged = read_manifest(merge_dir, stage="merge", what="merged model")
    task = get_task(merged.task)
    if backend not in task.export_backends:
        raise EdgeftError(f"export backend '{backend}' does not export {task.name} models "
                          f"(use {' or '.join(task.export_backends)})")
    inputs = [input_ref("merged_model", merge_dir, merged)]
    config = export_config(recipe, backend)
    if not force and is_up_to_date(out, inputs, config):
        return up_to_date(out)
    data_dir = find_in_lineage(merged, "data")
    rows = load_split(data_dir, "validation")[:recipe.export.parity_samples]
    with stage_output(out) as tmp:
        run_exporter(task, backend, Path(merge_dir), tmp, recipe.export.opset)
        task.finish_export(Path(merge_dir), tmp, backend, data_dir)
        parity = task.export_parity(Path(merge_dir), tmp, backend, rows, recipe.export)
        check_parity(parity, backend, recipe.export.parity_atol)
        return write_manifest(tmp, stage="export", task=task.name, inputs=inputs, config=config,
                              metrics={"parity": parity}, labels=merged.labels, backend=backend,
                              format="gguf" if backend == "gguf" else "onnx", precision="fp32",
                              lm_head=task.exported_lm_head)
