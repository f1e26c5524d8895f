"""The decoder's weight-only variant kinds (MatMulNBits, `method: int4` or `int8-weights`) and the
graph edits that make them decode faster.

Two kinds, by the export they start from:
- `source: optimum`: onnxruntime's quantizer on optimum's graph, with the tied head folded into a
  constant so that it can be quantized, the head at int8 (or int4, or fp32) and optionally a 4-bit
  embedding (graph.py, `quantize_decoder_int4`).
- `source: genai`: onnxruntime-genai's builder from the merged model (genai.py): fused attention with
  the KV cache kept in place; or, with `lora: unmerged`, the int4 base with the adapter beside it as
  an onnxruntime adapter file (adapters.py).

Then, for both (`finish`): sibling MatMulNBits packed into one (gate and up; q, k, v), the LM head as
a shortlist (shortlist.py), the KV cache at int8 (kvquant.py, calibrated on training chats) and a
prompt graph at another accuracy level for CPUs with AVX-512 (graph.py, `write_prefill_graph`).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, model_validator

from edgeft.core.artifacts import find_in_lineage
from edgeft.core.variants import BuildContext, VariantKind, register_variant
from edgeft.quantizers.common import copy_sidecar_files
from edgeft.quantizers.weight_only import WeightOnlyVariant
from edgeft.runtime.files import GENERATION_FILE, ONNX_FILE


class DecoderWeightOnly(WeightOnlyVariant):
    """What both decoder kinds take beyond the MatMulNBits settings: the head, the prompt graph."""
    head_bits: Optional[Literal[4, 8]] = Field(8, description="LM head at int8/int4; null keeps fp32")
    head_shortlist: Optional[int] = Field(
        None, ge=2, le=1024, description="int4 with head_bits 8: an int4 copy of the head picks this many tokens and "
                                         "their int8 rows rescore them (edgeft/generation/shortlist.py)")
    prefill_accuracy_level: Optional[Literal[0, 1, 2, 3, 4]] = Field(
        None, description="MatMulNBits accuracy level for the prompt (a second graph, same weights, used on CPUs "
                          "with AVX-512: 1, fp32 compute, prefilled 21% faster there and slower on AVX2)")

    @model_validator(mode="after")
    def _shortlist_of_an_int8_head(self):
        if self.head_shortlist is not None and (self.method != "int4" or self.head_bits != 8 or not self.symmetric):
            raise ValueError("head_shortlist needs method int4, head_bits 8 and symmetric (it rescores the int8 head's "
                             "rows)")
        return self


class OptimumWeightOnly(DecoderWeightOnly):
    """MatMulNBits on optimum's decoder graph."""
    source: Literal["optimum"] = "optimum"
    algorithm: Literal["rtn", "k_quant", "hqq"] = Field(
        "rtn", description="rtn (round to nearest), k_quant (scale and zero point searched per block), hqq "
                           "(half-quadratic)")
    embedding_bits: Optional[Literal[4]] = Field(
        None, description="the embedding as 4-bit GatherBlockQuantized (the genai builder shares it with the head)")


class GenaiWeightOnly(DecoderWeightOnly):
    """MatMulNBits by onnxruntime-genai's builder (rtn or k_quant)."""
    source: Literal["genai"]
    lora: Literal["merged", "unmerged"] = Field(
        "merged", description="unmerged keeps the LoRA A/B matrices in fp32 beside the quantized base, as an "
                              "onnxruntime adapter file (per-user adapters on one base)")
    kv_cache: Optional[Literal["int8"]] = Field(
        None, description="past keys and values at int8, per-channel scales calibrated on training chats "
                          "(edgeft/generation/kvquant.py): faster decoding; the prompt runs a second graph with fp32 "
                          "attention (more memory)")

    @model_validator(mode="after")
    def _kv_cache_of_a_shared_cache(self):
        if self.kv_cache and self.lora != "merged":
            raise ValueError("kv_cache: int8 needs lora merged (onnxruntime's GroupQueryAttention with a shared cache)")
        return self


def build_optimum(ctx: BuildContext) -> dict:
    from edgeft.generation.graph import quantize_decoder_int4

    copy_sidecar_files(ctx.export_dir, ctx.out)
    details = quantize_decoder_int4(Path(ctx.export_dir) / ONNX_FILE, ctx.out / ONNX_FILE, ctx.variant)
    return {**details, **finish(ctx)}


def build_genai_variant(ctx: BuildContext) -> dict:
    """The builder from the merged model; or, unmerged, from the base with the adapter beside it."""
    from edgeft.generation.adapters import build_unmerged
    from edgeft.generation.genai import build_genai

    v, precision = ctx.variant, f"int{ctx.variant.bits}"
    if v.lora == "unmerged":
        details = build_unmerged(find_in_lineage(ctx.exported, "base_model"), find_in_lineage(ctx.exported, "adapter"),
                                 ctx.out, precision, v, ctx.recipe.name)
    else:
        build_genai(find_in_lineage(ctx.exported, "merged_model"), ctx.out, precision=precision, variant=v)
        details = {}
    shutil.copy(Path(ctx.export_dir) / GENERATION_FILE, ctx.out / GENERATION_FILE)
    return {**details, **finish(ctx)}


def finish(ctx: BuildContext) -> dict:
    """The graph edits, in order: the KV cache's calibration (on the graph as the builder wrote it),
    packing (and, for an unmerged base, the packed projections' LoRA paths fused), the shortlist, the
    int8 cache with its prompt graph, the AVX-512 prompt graph."""
    import onnx

    from edgeft.core.splits import load_split
    from edgeft.generation.adapters import fuse_lora
    from edgeft.generation.graph import pack_sibling_matmuls, save_with_data, write_prefill_graph
    from edgeft.generation.kvquant import channel_maxima, quantize_kv_cache, write_cache_prefill_graph
    from edgeft.generation.shortlist import add_head_shortlist

    v, path = ctx.variant, ctx.out / ONNX_FILE
    maxima = channel_maxima(ctx.out, load_split(ctx.data_dir, "train")) if getattr(v, "kv_cache", None) else None
    model = onnx.load(str(path))
    details = {"packed_matmuls": pack_sibling_matmuls(model)}
    if getattr(v, "lora", "merged") == "unmerged":
        details["fused_lora_groups"] = fuse_lora(model)
    if v.head_shortlist:
        details["head_shortlist"] = add_head_shortlist(model, v.head_shortlist, v.block_size)
    if maxima:
        details["kv_cache"] = quantize_kv_cache(model, maxima)
    save_with_data(model, path)
    if maxima:
        details["kv_cache"]["prefill_graph"] = write_cache_prefill_graph(ctx.out)
    if v.prefill_accuracy_level is not None:
        details["prefill_graph"] = write_prefill_graph(ctx.out, v.prefill_accuracy_level)
    return details


OPTIMUM = register_variant(VariantKind("optimum", ("int4", "int8-weights"), OptimumWeightOnly, build_optimum,
                                       ("generation",), "MatMulNBits on optimum's decoder graph, head at int8"))
GENAI = register_variant(VariantKind("genai", ("int4", "int8-weights"), GenaiWeightOnly, build_genai_variant,
                                     ("generation",), "MatMulNBits by onnxruntime-genai's builder, graph edits"))
