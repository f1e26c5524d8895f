"""onnxruntime-genai's model builder as an export backend (decoders only).

The builder writes a decoder graph with fused kernels (GroupQueryAttention, SkipSimplifiedLayerNorm),
the KV cache, and, for int4, MatMulNBits weights; plain onnxruntime runs it, so edgeft's runtime
does not need onnxruntime-genai on the device. It runs offline on the merged model's folder.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from edgeft import EdgeftError
from edgeft.generation.graph import int_attribute
from edgeft.runtime.files import ONNX_FILE


def builder_options(precision: str, variant=None) -> list[str]:
    # last-token logits in prefill: the head over every prompt position is a fifth of the work
    options = ["hf_token=false", "prune_lm_head=true"]
    if precision in ("int4", "int8") and variant is not None:
        options += [f"block_size={variant.block_size}", f"is_symmetric={str(variant.symmetric).lower()}"]
        if variant.accuracy_level is not None:
            options.append(f"accuracy_level={variant.accuracy_level}")
        if precision == "int4" and variant.head_bits == 8:
            # an int8 head shared with the embedding; the builder names those tensors consistently
            # only under the rtn and k_quant algorithms (the default one leaves the embedding's inputs dangling)
            options += ["matmul_mixed_precision=last_matmul:int8", f"algo_config={variant.algorithm}"]
        elif variant.algorithm != "rtn" or precision == "int4":
            # int8 under algo_config=rtn comes out at 4 bits (onnxruntime-genai 0.15.2): int8 takes the default
            options.append(f"algo_config={variant.algorithm}")
    return options


def build_genai(merge_dir: Path, out: Path, precision: str = "fp32", variant=None, extra=()) -> None:
    """Run the builder into `out` (an existing, empty stage folder); `extra`: more builder options."""
    if precision not in ("fp32", "int4", "int8"):
        raise EdgeftError(f"genai builder precision '{precision}' is not supported here (fp32, int4, int8)")
    if precision == "int4" and variant is not None and variant.head_bits == 8:
        refuse_partial_shared_blocks(Path(merge_dir), variant)
    with tempfile.TemporaryDirectory() as cache:
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(merge_dir), "-o", str(out),
               "-p", precision, "-e", "cpu", "-c", cache, "--extra_options", *builder_options(precision, variant), *extra]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not (Path(out) / ONNX_FILE).exists():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        raise EdgeftError(f"onnxruntime-genai's builder failed on {merge_dir}:\n{tail}")
    if precision == "int8":
        repair_shared_embedding(Path(out) / ONNX_FILE)


def refuse_partial_shared_blocks(merge_dir: Path, variant) -> None:
    """With tied embeddings, the builder reads the embedding from the int8 head by reshaping its blocks
    to (vocab, hidden): when the block size does not divide the hidden size, the last block is padded
    and that reshape fails on the first token (onnxruntime-genai 0.15.2). Refused here instead."""
    import json

    config = json.loads((merge_dir / "config.json").read_text()) if (merge_dir / "config.json").is_file() else {}
    hidden = config.get("hidden_size")
    if config.get("tie_word_embeddings") and hidden and hidden % variant.block_size:
        fits = ", ".join(str(b) for b in (16, 32, 64, 128, 256) if hidden % b == 0)
        raise EdgeftError(f"quantize.variants[] '{variant.name}': block_size {variant.block_size} does not divide "
                          f"the model's hidden size {hidden}, which its int8 head shares with the embedding "
                          f"(onnxruntime-genai's builder then writes an embedding that cannot be read); "
                          f"use {fits or 'head_bits: 4'}")


def repair_shared_embedding(path: Path) -> bool:
    """onnxruntime-genai 0.15.2 at int8 points the shared embedding (GatherBlockQuantized) at a
    4-bit head weight that it never writes (`lm_head.MatMul.weight_Q4`): point it at the int8 head
    weight that is there, with its shape and bit width. Returns whether it had to."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path), load_external_data=False)
    known = {i.name: i for i in model.graph.initializer}
    gather = next((n for n in model.graph.node if n.op_type == "GatherBlockQuantized"), None)
    reshape = next((n for n in model.graph.node if gather is not None and n.output[0] == gather.input[0]), None)
    if reshape is None or reshape.input[0] in known:
        return False
    head = next(n for n in model.graph.node if n.op_type == "MatMulNBits" and n.output[0] in
                {i for m in model.graph.node if m.name.startswith("/lm_head") for i in m.output} | {"logits"})
    weight, bits = known[head.input[1]], int_attribute(head, "bits")
    rows, blocks, blob = weight.dims
    shape = helper.make_tensor("edgeft/shared_embedding_shape", TensorProto.INT64, [2], [rows, blocks * blob * 8 // bits])
    for v in [v for v in model.graph.value_info if v.name == reshape.output[0]]:  # its 4-bit shape
        model.graph.value_info.remove(v)
    users = [n for n in model.graph.node if reshape.input[1] in n.input]
    for n in [n for n in model.graph.node if n.op_type == "Constant" and n.output[0] == reshape.input[1]]:
        if len(users) == 1:
            model.graph.node.remove(n)
    model.graph.initializer.append(shape)
    reshape.input[0], reshape.input[1] = weight.name, shape.name
    for attr in gather.attribute:
        if attr.name == "bits":
            attr.i = bits
    onnx.save(model, str(path))
    return True
