"""Quantize stage: the recipe's quantization variants of an exported fp32 model, one folder each.

Each variant's kind, (source, method), is looked up in the registry (core/variants.py), whose
builder writes the model files; `edgeft variants` lists every kind with the module that builds it.
Then, for every kind alike: the model is checked to load (onnxruntime; llama.cpp for GGUF), its ops
are counted, and it is measured against the fp32 model on validation inputs (`vs_fp32`).
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
from edgeft.core.parity import compare_logits
from edgeft.core.recipe import Recipe
from edgeft.core.splits import load_split
from edgeft.core.tasks import get_task
from edgeft.core.variants import BuildContext, kind_of
from edgeft.runtime.files import LABELS_FILE, ONNX_FILE, PREFILL_AVX512_FILE, PREFILL_FILE
from edgeft.runtime.onnx import ort_errors, session

DRIFT_ROWS = 64


def check_loads(folder: Path) -> None:
    """A quantizer can write a graph onnxruntime refuses: find out here, not on the device."""
    for name in (ONNX_FILE, PREFILL_FILE, PREFILL_AVX512_FILE):
        if (folder / name).exists():
            session(folder / name, threads=1)


def count_ops(model_path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def drift(task, variant, export_dir: Path, tmp: Path, rows: list[dict]) -> dict:
    """How far the variant moved from the fp32 model on validation inputs (classification: the
    label; generation: the first answer token)."""
    try:
        result = compare_logits(*task.drift_logits(Path(export_dir), tmp, rows[:DRIFT_ROWS]))
    except ort_errors() as e:  # a graph that loads but cannot run
        raise EdgeftError(f"variant '{variant.name}' fails on a validation input: {e}") from None
    if result["agreement"] < 0.5:
        say(f"warning: variant '{variant.name}' agrees with the fp32 model on only {result['agreement']:.0%} "
            f"of {result['compared']} validation predictions: it is likely broken")
    return result


def quantize_variant(recipe: Recipe, export_dir: Path, variant, out: Path, *, force: bool = True) -> Manifest:
    exported = read_manifest(export_dir, stage="export", what="exported model")
    task = get_task(exported.task)
    if exported.precision != "fp32":
        raise EdgeftError(f"{export_dir} is not an fp32 export: quantize starts from the fp32 model")
    if variant.source != (exported.backend or "optimum"):
        raise EdgeftError(f"variant '{variant.name}' wants source '{variant.source}', but {export_dir} was "
                          f"exported by '{exported.backend}'")
    kind = kind_of(task.name, variant.source, variant.method)
    inputs = [input_ref("onnx_fp32", export_dir, exported)]
    config = {"task": task.name, **variant.model_dump(mode="json")}
    if not force and is_up_to_date(out, inputs, config):
        return up_to_date(out)
    data_dir = find_in_lineage(exported, "data")
    with stage_output(out) as tmp:
        details = kind.build(BuildContext(task, variant, Path(export_dir), exported, data_dir, recipe, tmp))
        if (tmp / ONNX_FILE).exists():
            details["op_counts"] = count_ops(tmp / ONNX_FILE)
            check_loads(tmp)
        shutil.copy(Path(export_dir) / LABELS_FILE, tmp / LABELS_FILE)
        vs_fp32 = drift(task, variant, Path(export_dir), tmp, load_split(data_dir, "validation"))
        return write_manifest(tmp, stage="quantize", task=task.name, inputs=inputs, config=config,
                              metrics={"vs_fp32": vs_fp32}, labels=exported.labels, backend=exported.backend,
                              format=exported.format or "onnx", precision=variant.name, variant=variant.name,
                              details=details)


def quantize(recipe: Recipe, export_dir: Path, out_root: Path, *, force: bool = True,
             only: list[str] | None = None) -> list[Manifest]:
    """Every recipe variant whose source is this export's backend, each into out_root/<name>."""
    backend = read_manifest(export_dir, stage="export", what="exported model", verify=False).backend
    variants = [v for v in recipe.quantize.variants if v.source == backend and (not only or v.name in only)]
    if only and not variants:
        raise EdgeftError(f"no variant named {', '.join(only)} with source '{backend}' in the recipe")
    return [quantize_variant(recipe, export_dir, v, Path(out_root) / v.name, force=force) for v in variants]
