"""Quantize stage: onnxruntime quantization variants of an exported fp32 model, one folder each.

- dynamic: int8 weights, activations quantized at run time (`quantize_dynamic`).
- static: int8 QDQ calibrated on training examples (classification; classification/quantize.py).
- int4, int8-weights: weight-only MatMulNBits (block-wise; rtn, k_quant or hqq rounding),
  optionally with int8 activations (accuracy_level 4); from the optimum export by the task's own
  graph edits, or by onnxruntime-genai's builder.
- gguf: llama.cpp's types (Q4_0, Q4_K_M, Q8_0, ...) of the GGUF export, by llama.cpp's quantizer.
Every variant is checked to load (onnxruntime; llama.cpp for GGUF) and measured against the fp32 model (`vs_fp32`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from edgeft import EdgeftError
from edgeft.core.artifacts import (
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
from edgeft.runtime.files import (
    GENERATION_FILE,
    GGUF_FILE,
    LABELS_FILE,
    MANIFEST,
    MODEL_FILES,
    ONNX_FILE,
    PREFILL_AVX512_FILE,
    PREFILL_FILE,
)
from edgeft.runtime.onnx import ort_errors, session

DRIFT_ROWS = 64


def copy_sidecar_files(src: Path, dst: Path) -> None:
    """Tokenizer, configs, label map and preprocessing travel with every variant; the model does not."""
    for f in Path(src).iterdir():
        if f.is_file() and f.name not in MODEL_FILES and f.name != MANIFEST:
            shutil.copy(f, dst / f.name)


def preprocess(src: Path, workdir: Path) -> Path:
    """Shape inference and graph fusions before quantization (symbolic shapes fail on some graphs)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = workdir / "preprocessed.onnx"
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    return prepared


def quantize_int8(task, variant, src: Path, dst: Path, exported: dict, max_length: int) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    scratch = dst.parent.parent / f".{dst.parent.name}.scratch"
    scratch.mkdir(exist_ok=True)
    try:
        prepared = preprocess(src, scratch) if task.preprocess_before_int8 else src
        if variant.method == "dynamic":
            quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8, per_channel=variant.per_channel,
                             reduce_range=variant.reduce_range, op_types_to_quantize=task.dynamic_int8_ops,
                             use_external_data_format=task.large_model)
        else:
            from edgeft.classification.quantize import quantize_static_int8
            rows = load_split(find_in_lineage(exported, "data"), "train")
            rows = rows[::max(1, len(rows) // variant.calibration_samples)][:variant.calibration_samples]
            quantize_static_int8(prepared, dst, variant, rows, task.load_tokenizer(exported["_folder"]), max_length)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def build_variant(task, variant, export_dir: Path, exported: dict, tmp: Path, max_length: int,
                  adapter_name: str = "adapter") -> dict:
    """Write the variant's model files into tmp; returns what the quantizer reported."""
    if getattr(variant, "lora", "merged") == "unmerged":
        from edgeft.generation.adapters import build_unmerged
        details = build_unmerged(find_in_lineage(exported, "base_model"), find_in_lineage(exported, "adapter"), tmp,
                                 f"int{variant.bits}", variant, adapter_name)
        shutil.copy(Path(export_dir) / GENERATION_FILE, tmp / GENERATION_FILE)
        return details
    if variant.source == "gguf":
        from edgeft.generation.gguf import quantize_file
        copy_sidecar_files(export_dir, tmp)
        quantize_file(Path(export_dir) / GGUF_FILE, tmp / GGUF_FILE, variant.type)
        return {"gguf_type": variant.type}
    if variant.source == "genai":
        from edgeft.generation.genai import build_genai
        build_genai(find_in_lineage(exported, "merged_model"), tmp, precision=f"int{variant.bits}", variant=variant)
        shutil.copy(Path(export_dir) / GENERATION_FILE, tmp / GENERATION_FILE)
        return {}
    copy_sidecar_files(export_dir, tmp)
    src, dst = Path(export_dir) / ONNX_FILE, tmp / ONNX_FILE
    if variant.method in ("int4", "int8-weights"):
        return task.quantize_int4(src, dst, variant)
    quantize_int8(task, variant, src, dst, exported, max_length)
    return {}


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


def quantize_variant(recipe: Recipe, export_dir: Path, variant, out: Path, *, force: bool = True) -> dict:
    exported = read_manifest(export_dir, stage="export", what="exported model")
    task = get_task(exported["task"])
    if exported.get("precision") != "fp32":
        raise EdgeftError(f"{export_dir} is not an fp32 export: quantize starts from the fp32 model")
    if variant.source != exported.get("backend", "optimum"):
        raise EdgeftError(f"variant '{variant.name}' wants source '{variant.source}', but {export_dir} was "
                          f"exported by '{exported.get('backend')}'")
    inputs = [input_ref("onnx_fp32", export_dir, exported)]
    config = {"task": task.name, **variant.model_dump(mode="json")}
    if not force and is_up_to_date(out, inputs, config):
        return up_to_date(out)
    with stage_output(out) as tmp:
        details = build_variant(task, variant, Path(export_dir), exported, tmp, recipe.data.max_length, recipe.name)
        details.update(task.finish_quantize(tmp, variant, find_in_lineage(exported, "data")))
        if getattr(variant, "prefill_accuracy_level", None) is not None:
            from edgeft.generation.graph import write_prefill_graph
            details["prefill_graph"] = write_prefill_graph(tmp, variant.prefill_accuracy_level)
        if (tmp / ONNX_FILE).exists():
            details["op_counts"] = count_ops(tmp / ONNX_FILE)
            check_loads(tmp)
        shutil.copy(Path(export_dir) / LABELS_FILE, tmp / LABELS_FILE)
        vs_fp32 = drift(task, variant, Path(export_dir), tmp, load_split(find_in_lineage(exported, "data"), "validation"))
        return write_manifest(tmp, stage="quantize", task=task.name, inputs=inputs, config=config,
                              metrics={"vs_fp32": vs_fp32}, labels=exported.get("labels", []),
                              backend=exported.get("backend"), format=exported.get("format", "onnx"),
                              precision=variant.name,
                              variant=variant.name, details=details)


def quantize(recipe: Recipe, export_dir: Path, out_root: Path, *, force: bool = True,
             only: list[str] | None = None) -> list[dict]:
    """Every recipe variant whose source is this export's backend, each into out_root/<name>."""
    backend = read_manifest(export_dir, stage="export", what="exported model", verify=False).get("backend")
    variants = [v for v in recipe.quantize.variants if v.source == backend and (not only or v.name in only)]
    if only and not variants:
        raise EdgeftError(f"no variant named {', '.join(only)} with source '{backend}' in the recipe")
    return [quantize_variant(recipe, export_dir, v, Path(out_root) / v.name, force=force) for v in variants]
