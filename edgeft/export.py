"""Export stage: the merged model to ONNX, checked against PyTorch on real inputs.

Backends: `optimum` (optimum-onnx's exporter; classification, and decoders with a KV cache) and
`genai` (onnxruntime-genai's model builder; decoders only). Each call writes one artifact.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from edgeft import EdgeftError
from edgeft.artifacts import (
    find_in_lineage,
    input_ref,
    is_up_to_date,
    read_manifest,
    stage_output,
    up_to_date,
    write_manifest,
)
from edgeft.data import load_split
from edgeft.recipe import Recipe
from edgeft.runtime import ONNX_FILE


def export_config(recipe: Recipe, backend: str) -> dict:
    cfg = recipe.export
    return {"backend": backend, "opset": cfg.opset, "parity_atol": cfg.parity_atol,
            "parity_samples": cfg.parity_samples, "parity_new_tokens": cfg.parity_new_tokens}


def finish_decoder_export(merge_dir: Path, folder: Path, backend: str, data_dir: Path) -> None:
    """Last-token logits (the genai builder does this itself) and the runtime's chat settings."""
    from transformers import AutoConfig

    from edgeft.decoder import prune_lm_head, write_generation_settings
    from edgeft.models import load_tokenizer

    if backend == "optimum":
        prune_lm_head(folder / ONNX_FILE)
    config = AutoConfig.from_pretrained(merge_dir)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    system_prompt = read_manifest(data_dir, verify=False)["config"].get("system_prompt")
    write_generation_settings(load_tokenizer(merge_dir, "generation"), folder, config, system_prompt, head_dim)


def classification_parity(torch_dir: Path, onnx_dir: Path, rows: list[dict], labels: list[str]) -> dict:
    """PyTorch and ONNX logits on the same real texts, tokenized as the device runtime does."""
    import numpy as np
    import torch

    from edgeft.models import load_model
    from edgeft.runtime import Classifier

    classifier = Classifier(onnx_dir, verify=False)
    encoded = classifier.encode([r["text"] for r in rows])
    model = load_model(torch_dir, "classification", labels).eval()
    with torch.no_grad():
        reference = model(**{k: torch.from_numpy(v) for k, v in encoded.items()}).logits.numpy()
    logits = classifier.logits(encoded)
    return {"max_abs_logit_diff": float(np.abs(reference - logits).max()), "compared": len(rows),
            "agreement": float((reference.argmax(-1) == logits.argmax(-1)).mean())}


def export(recipe: Recipe, merge_dir: Path, out: Path, *, backend: str = "optimum", force: bool = True) -> dict:
    merged = read_manifest(merge_dir, stage="merge", what="merged model")
    task = merged["task"]
    if backend == "genai" and task != "generation":
        raise EdgeftError("export backend 'genai' (onnxruntime-genai) builds decoders only; use 'optimum'")
    inputs = [input_ref("merged_model", merge_dir, merged)]
    config = export_config(recipe, backend)
    if not force and is_up_to_date(out, inputs, config):
        return up_to_date(out)
    data_dir = find_in_lineage(merged, "data")
    rows = load_split(data_dir, "validation")[:recipe.export.parity_samples]

    with stage_output(out) as tmp:
        if backend == "optimum":
            from optimum.exporters.onnx import main_export
            main_export(str(merge_dir), output=tmp, task="text-classification" if task == "classification"
                        else "text-generation-with-past", opset=recipe.export.opset, do_validation=False,
                        local_files_only=True)
        else:
            from edgeft.genai import build_genai
            build_genai(Path(merge_dir), tmp, precision="fp32")
        shutil.copy(Path(merge_dir) / "labels.json", tmp / "labels.json")
        if task == "generation":
            finish_decoder_export(Path(merge_dir), tmp, backend, data_dir)
        if task == "classification":
            parity = classification_parity(Path(merge_dir), tmp, rows, merged.get("labels", []))
        else:
            from edgeft.decoder import generation_parity
            parity = generation_parity(Path(merge_dir), tmp, backend, rows, recipe.export.parity_new_tokens)
        ok = parity["max_abs_logit_diff"] <= recipe.export.parity_atol and parity.get("greedy_identical", True)
        parity["passed"] = ok
        if not ok:
            raise EdgeftError(f"export parity check failed ({backend}): max |ONNX - PyTorch| logit difference "
                              f"{parity['max_abs_logit_diff']:.3g} (export.parity_atol {recipe.export.parity_atol:g})"
                              + ("" if parity.get("greedy_identical", True) else
                                 f"; greedy tokens differ from PyTorch in {parity['greedy_mismatches']} prompts"))
        manifest = write_manifest(tmp, stage="export", task=task, inputs=inputs, config=config,
                                  metrics={"parity": parity}, labels=merged.get("labels", []),
                                  backend=backend, format="onnx", precision="fp32",
                                  lm_head="last_token_only" if task == "generation" else "all")
    return manifest
