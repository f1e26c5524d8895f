"""The `dynamic` variant kind: int8 weights, activations quantized at run time (onnxruntime's
`quantize_dynamic`), from the optimum export. The task says which ops to quantize (a decoder keeps
its embedding: per-tensor int8 there hurts, and with a tied head every step would dequantize the
whole vocabulary matrix) and whether the graph is pre-processed first (shape inference, fusions)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edgeft.core.variants import BuildContext, Variant, VariantKind, register_variant
from edgeft.quantizers.common import copy_sidecar_files, preprocess
from edgeft.runtime.files import ONNX_FILE


class DynamicVariant(Variant):
    """int8 weights, activations quantized at run time (quantize_dynamic)."""
    source: Literal["optimum"] = "optimum"
    method: Literal["dynamic"]
    per_channel: bool = True
    reduce_range: bool = Field(False, description="7-bit weights: needed by u8s8 kernels on CPUs without VNNI")


def build_dynamic(ctx: BuildContext) -> dict:
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    copy_sidecar_files(ctx.export_dir, ctx.out)
    v, task = ctx.variant, ctx.task
    with tempfile.TemporaryDirectory(dir=ctx.out.parent) as scratch:
        src = Path(ctx.export_dir) / ONNX_FILE
        prepared = preprocess(src, Path(scratch)) if task.preprocess_before_int8 else src
        quantize_dynamic(str(prepared), str(ctx.out / ONNX_FILE), weight_type=QuantType.QInt8,
                         per_channel=v.per_channel, reduce_range=v.reduce_range, op_types_to_quantize=task.dynamic_int8_ops,
                         use_external_data_format=task.large_model)
    return {}


DYNAMIC = register_variant(VariantKind("optimum", ("dynamic",), DynamicVariant, build_dynamic,
                                       ("classification", "generation"), "int8 weights, activations quantized at run time"))
