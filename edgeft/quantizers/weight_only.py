"""What every weight-only variant kind shares: onnxruntime's MatMulNBits, block-wise, at 4 bits
(`method: int4`) or 8 (`method: int8-weights`), rounded by round-to-nearest, k-quant or HQQ.
Each task and source registers its own kind on top of these settings (classification/quantize.py,
generation/weight_only.py)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from edgeft.core.variants import Variant


class WeightOnlyVariant(Variant):
    """Weight-only MatMulNBits, block-wise: 4-bit weights (`int4`) or 8-bit ones (`int8-weights`)."""
    method: Literal["int4", "int8-weights"]
    algorithm: Literal["rtn", "k_quant"] = Field(
        "rtn", description="how the weights are rounded: rtn (round to nearest), k_quant (scale and zero point "
                           "searched per block, as llama.cpp's k-quants)")
    block_size: int = Field(32, ge=16)
    symmetric: bool = True
    accuracy_level: Optional[Literal[0, 1, 2, 3, 4]] = Field(
        None, description="MatMulNBits' compute type: 4 is int8 activations per block (fast on CPUs), 1 fp32")

    @property
    def bits(self) -> int:
        return 8 if self.method == "int8-weights" else 4


class OnnxWeightOnlyVariant(WeightOnlyVariant):
    """On the optimum export's graph, onnxruntime's own quantizer also offers HQQ."""
    source: Literal["optimum"] = "optimum"
    algorithm: Literal["rtn", "k_quant", "hqq"] = Field(
        "rtn", description="rtn (round to nearest), k_quant (scale and zero point searched per block), hqq "
                           "(half-quadratic)")


def algo_config(algorithm: str, block_size: int, bits: int):
    """onnxruntime's MatMulNBitsQuantizer settings for a variant's `algorithm` (None: its default RTN)."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    if algorithm == "rtn":
        return None
    if algorithm == "k_quant":
        return mnq.KQuantWeightOnlyQuantConfig()
    return mnq.HQQWeightOnlyQuantConfig(block_size=block_size, bits=bits)
