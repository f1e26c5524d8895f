"""The classifier's own variant kinds: static int8 (QDQ, calibrated on training texts) and weight-only
MatMulNBits, both from the optimum export (the `dynamic` kind is shared: quantizers/dynamic.py).

Static int8 with onnxruntime's default settings destroyed accuracy (BERT 0.87 -> 0.33), so only
MatMul/Gemm are quantized, and calibration inputs are padded to one length (percentile and entropy
calibration fail on ragged inputs)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from edgeft.core.splits import load_split
from edgeft.core.variants import BuildContext, Variant, VariantKind, register_variant
from edgeft.quantizers.common import copy_sidecar_files, preprocess
from edgeft.quantizers.weight_only import OnnxWeightOnlyVariant, algo_config
from edgeft.runtime.files import ONNX_FILE


class StaticVariant(Variant):
    """int8 QDQ calibrated on training examples."""
    source: Literal["optimum"] = "optimum"
    method: Literal["static"]
    per_channel: bool = True
    reduce_range: bool = False
    calibration_samples: int = Field(128, gt=0)
    calibrate_method: Literal["minmax", "percentile", "entropy"] = "minmax"


def calibration_reader(model_path: Path, rows: list[dict], tokenizer, max_length: int):
    from onnxruntime.quantization import CalibrationDataReader

    from edgeft.runtime.onnx import session

    names = {i.name for i in session(model_path).get_inputs()}

    class Reader(CalibrationDataReader):
        def __init__(self):
            enc = tokenizer([r["text"] for r in rows], padding="max_length", truncation=True,
                            max_length=max_length, return_tensors="np")
            self.feeds = iter([{k: v[i:i + 1].astype(np.int64) for k, v in enc.items() if k in names}
                               for i in range(len(rows))])

        def get_next(self):
            return next(self.feeds, None)

    return Reader()


def build_static(ctx: BuildContext) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    v = ctx.variant
    copy_sidecar_files(ctx.export_dir, ctx.out)
    rows = load_split(ctx.data_dir, "train")
    rows = rows[::max(1, len(rows) // v.calibration_samples)][:v.calibration_samples]
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[v.calibrate_method]
    with tempfile.TemporaryDirectory(dir=ctx.out.parent) as scratch:
        prepared = preprocess(Path(ctx.export_dir) / ONNX_FILE, Path(scratch))
        reader = calibration_reader(prepared, rows, ctx.task.load_tokenizer(ctx.export_dir), ctx.recipe.data.max_length)
        quantize_static(str(prepared), str(ctx.out / ONNX_FILE), reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Gemm"], per_channel=v.per_channel, reduce_range=v.reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    return {}


def build_weight_only(ctx: BuildContext) -> dict:
    """MatMulNBits over every MatMul with a constant weight (the classifier head included)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    v = ctx.variant
    copy_sidecar_files(ctx.export_dir, ctx.out)
    quantizer = MatMulNBitsQuantizer(str(Path(ctx.export_dir) / ONNX_FILE), bits=v.bits, block_size=v.block_size,
                                     is_symmetric=v.symmetric, accuracy_level=v.accuracy_level,
                                     op_types_to_quantize=("MatMul",),
                                     algo_config=algo_config(v.algorithm, v.block_size, v.bits))
    quantizer.process()
    quantizer.model.save_model_to_file(str(ctx.out / ONNX_FILE), use_external_data_format=False)
    return {}


STATIC = register_variant(VariantKind("optimum", ("static",), StaticVariant, build_static, ("classification",),
                                      "int8 QDQ calibrated on training texts"))
WEIGHT_ONLY = register_variant(VariantKind("optimum", ("int4", "int8-weights"), OnnxWeightOnlyVariant, build_weight_only,
                                           ("classification",), "MatMulNBits weights, block-wise"))
