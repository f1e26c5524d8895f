"""Quantize stage: onnxruntime quantization variants of an exported fp32 model, one folder each.

- dynamic: int8 weights, activations quantized at run time (`quantize_dynamic`).
- static: int8 QDQ calibrated on training examples. Default settings destroy accuracy, so only
  MatMul/Gemm are quantized and calibration inputs are padded to one length.
- int4: weight-only MatMulNBits (block-wise), optionally with int8 activations (accuracy_level 4).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

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
from edgeft.recipe import Recipe, VariantSection
from edgeft.runtime import ONNX_FILE
from edgeft.runtime_gen import PREFILL_FILE

MODEL_FILES = {ONNX_FILE, "model.onnx_data", "model.onnx.data", PREFILL_FILE}


def copy_sidecar_files(src: Path, dst: Path) -> None:
    """Tokenizer, configs and label map travel with every variant; the ONNX model does not."""
    for f in Path(src).iterdir():
        if f.is_file() and f.name not in MODEL_FILES and f.name != "manifest.json":
            shutil.copy(f, dst / f.name)


def calibration_reader(model_path: Path, rows: list[dict], tokenizer, max_length: int):
    """Static calibration batches, padded to one length (percentile/entropy fail on ragged inputs)."""
    from onnxruntime.quantization import CalibrationDataReader

    from edgeft.runtime import session

    names = {i.name for i in session(model_path).get_inputs()}

    def feed(encoded: dict) -> dict:
        return {k: v.astype(np.int64) for k, v in encoded.items() if k in names}

    class Reader(CalibrationDataReader):
        def __init__(self):
            enc = tokenizer([r["text"] for r in rows], padding="max_length", truncation=True,
                            max_length=max_length, return_tensors="np")
            self.feeds = iter([feed({k: v[i:i + 1] for k, v in enc.items()})
                               for i in range(len(rows))])

        def get_next(self):
            return next(self.feeds, None)

    return Reader()


def preprocess(src: Path, workdir: Path) -> Path:
    """Shape inference and graph fusions before quantization (symbolic shapes fail on some graphs)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = workdir / "preprocessed.onnx"
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    return prepared


def quantize_static_int8(prepared: Path, dst: Path, variant: VariantSection, rows: list[dict], tokenizer,
                         max_length: int) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[variant.calibrate_method]
    quantize_static(str(prepared), str(dst), calibration_reader(prepared, rows, tokenizer, max_length),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm"],
                    per_channel=variant.per_channel, reduce_range=variant.reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


def quantize_dynamic_int8(src: Path, dst: Path, variant: VariantSection, task: str) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # decoders: leave the embedding (Gather) alone: per-tensor int8 there hurts and, with a tied
    # head, makes every decode step dequantize the whole vocabulary matrix
    ops = ["MatMul", "Gemm"] if task == "generation" else None
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=variant.per_channel,
                     reduce_range=variant.reduce_range, op_types_to_quantize=ops,
                     use_external_data_format=task == "generation")


def quantize_int4(src: Path, dst: Path, variant: VariantSection) -> dict:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(str(src), bits=4, block_size=variant.block_size, is_symmetric=variant.symmetric,
                                     accuracy_level=variant.accuracy_level, op_types_to_quantize=("MatMul",))
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    return {}


def compare_with_fp32(task: str, fp32_dir: Path, quant_dir: Path, rows: list[dict], limit: int = 64) -> dict:
    """How far a variant drifted: argmax agreement and max logit difference against the fp32 model on
    validation inputs (classification: the label; generation: the first answer token)."""
    rows = rows[:limit]
    if task == "classification":
        from edgeft.runtime import Classifier
        texts = [r["text"] for r in rows]

        def logits(model):
            return np.concatenate([model.logits(model.encode(texts[i:i + 32])) for i in range(0, len(texts), 32)])

        a, b = logits(Classifier(fp32_dir, verify=False)), logits(Classifier(quant_dir, verify=False))
    else:
        from edgeft.runtime_gen import Generator
        ref, new = Generator(fp32_dir, verify=False), Generator(quant_dir, verify=False)
        prompts = [ref.encode_chat(r["messages"][:-1]) for r in rows[:16]]
        a = np.stack([ref.prefill(p)[0] for p in prompts])
        b = np.stack([new.prefill(p)[0] for p in prompts])
    return {"agreement": float((a.argmax(-1) == b.argmax(-1)).mean()), "max_abs_logit_diff": float(np.abs(a - b).max()),
            "compared": int(len(a))}


def check_loads(folder: Path) -> None:
    """A quantizer can write a graph onnxruntime refuses: find out here, not on the device."""
    from edgeft.runtime import session

    for name in (ONNX_FILE, PREFILL_FILE):
        if (folder / name).exists():
            try:
                session(folder / name, threads=1)
            except Exception as e:  # onnxruntime raises its own exception types
                raise EdgeftError(f"the quantized model {name} does not load in onnxruntime: {e}") from None


def count_ops(model_path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def variant_config(variant: VariantSection, task: str) -> dict:
    return {"task": task, **variant.model_dump(mode="json")}


def quantize_variant(recipe: Recipe, export_dir: Path, variant: VariantSection, out: Path, *,
                     force: bool = True) -> dict:
    exported = read_manifest(export_dir, stage="export", what="exported model")
    task = exported["task"]
    if exported.get("precision") != "fp32":
        raise EdgeftError(f"{export_dir} is not an fp32 export: quantize starts from the fp32 model")
    if variant.source != exported.get("backend", "optimum"):
        raise EdgeftError(f"variant '{variant.name}' wants source '{variant.source}', but {export_dir} was "
                          f"exported by '{exported.get('backend')}'")
    inputs = [input_ref("onnx_fp32", export_dir, exported)]
    config = variant_config(variant, task)
    if not force and is_up_to_date(out, inputs, config):
        return up_to_date(out)
    if variant.method == "static" and task != "classification":
        raise EdgeftError(f"variant '{variant.name}': static int8 is implemented for classification only")
    src = Path(export_dir) / ONNX_FILE

    with stage_output(out) as tmp:
        details = {}
        if variant.source == "genai":
            from edgeft.genai import build_genai
            if variant.method != "int4":
                raise EdgeftError(f"variant '{variant.name}': source 'genai' builds int4 only")
            build_genai(find_in_lineage(exported, "merged_model"), tmp, precision="int4", variant=variant)
            shutil.copy(Path(export_dir) / "generation.json", tmp / "generation.json")
        else:
            copy_sidecar_files(export_dir, tmp)
            dst = tmp / ONNX_FILE
            if variant.method in ("dynamic", "static"):
                scratch = tmp.parent / f".{tmp.name}.scratch"
                scratch.mkdir(exist_ok=True)
                try:
                    prepared = preprocess(src, scratch) if task == "classification" else src
                    if variant.method == "dynamic":
                        quantize_dynamic_int8(prepared, dst, variant, task)
                    else:
                        from transformers import AutoTokenizer
                        rows = load_split(find_in_lineage(exported, "data"), "train")
                        rows = rows[::max(1, len(rows) // variant.calibration_samples)][:variant.calibration_samples]
                        quantize_static_int8(prepared, dst, variant, rows, AutoTokenizer.from_pretrained(export_dir),
                                             recipe.data.max_length)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
            elif task == "generation":
                from edgeft.decoder import quantize_decoder_int4
                details = quantize_decoder_int4(src, dst, variant)
            else:
                quantize_int4(src, dst, variant)
        if variant.prefill_accuracy_level is not None:
            from edgeft.decoder import write_prefill_graph
            details["prefill_graph"] = write_prefill_graph(tmp, variant.prefill_accuracy_level)
        details["op_counts"] = count_ops(tmp / ONNX_FILE)
        check_loads(tmp)
        shutil.copy(Path(export_dir) / "labels.json", tmp / "labels.json")
        rows = load_split(find_in_lineage(exported, "data"), "validation")
        try:
            drift = compare_with_fp32(task, Path(export_dir), tmp, rows)
        except Exception as e:  # onnxruntime's own errors: a graph that loads but cannot run
            raise EdgeftError(f"variant '{variant.name}' fails on a validation input: {e}") from None
        if drift["agreement"] < 0.5:
            print(f"warning: variant '{variant.name}' agrees with the fp32 model on only {drift['agreement']:.0%} "
                  f"of {drift['compared']} validation predictions: it is likely broken", file=sys.stderr)
        manifest = write_manifest(tmp, stage="quantize", task=task, inputs=inputs, config=config,
                                  metrics={"vs_fp32": drift}, labels=exported.get("labels", []), backend=exported.get("backend"),
                                  format="onnx", precision=variant.name, variant=variant.name, details=details)
    return manifest


def quantize(recipe: Recipe, export_dir: Path, out_root: Path, *, force: bool = True,
             only: list[str] | None = None) -> list[dict]:
    """Every recipe variant whose source is this export's backend, each into out_root/<name>."""
    backend = read_manifest(export_dir, stage="export", what="exported model", verify=False).get("backend")
    variants = [v for v in recipe.quantize.variants if v.source == backend and (not only or v.name in only)]
    if only and not variants:
        raise EdgeftError(f"no variant named {', '.join(only)} with source '{backend}' in the recipe")
    return [quantize_variant(recipe, export_dir, v, Path(out_root) / v.name, force=force) for v in variants]
