"""Edits of exported decoder graphs: the LM head over the last position only, the tied head
folded into a constant, int4 weights with an int8 head, and a prefill graph over the same weights."""
from __future__ import annotations

from pathlib import Path

from edgeft import EdgeftError
from edgeft.runtime.files import ONNX_FILE, PREFILL_FILE


def lm_head_node(model):
    producers = {o: n for n in model.graph.node for o in n.output}
    node = producers.get("logits")
    if node is None or node.op_type not in ("MatMul", "MatMulNBits", "Gemm"):
        raise EdgeftError("cannot find the LM head (a MatMul producing 'logits') in the exported graph")
    return node


def prune_lm_head(path: Path) -> None:
    """Compute logits for the last position only: the head over every prompt token is wasted work
    in generation (PyTorch's generate() does the same)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    head = lm_head_node(model)
    hidden = head.input[0]
    consts = [helper.make_tensor(f"edgeft_prune_{k}", TensorProto.INT64, [1], [v])
              for k, v in (("start", -1), ("end", 2**62), ("axis", 1))]
    model.graph.initializer.extend(consts)
    sliced = hidden + "_last"
    model.graph.node.insert(list(model.graph.node).index(head), helper.make_node(
        "Slice", [hidden, *(c.name for c in consts)], [sliced], name="/edgeft/prune_lm_head/Slice"))
    head.input[0] = sliced
    logits = next(o for o in model.graph.output if o.name == "logits")
    logits.type.tensor_type.shape.dim[1].dim_value = 1
    onnx.save(model, str(path), save_as_external_data=path.stat().st_size > 1.9e9)


def fold_tied_head(model) -> None:
    """optimum exports a tied head as MatMul(hidden, Transpose(embedding)); quantizers skip a
    non-constant B, so the transposed weight becomes an initializer of its own."""
    from onnx import numpy_helper

    head = lm_head_node(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    transpose = producers.get(head.input[1])
    if transpose is None or transpose.op_type != "Transpose":
        return
    inits = {i.name: i for i in model.graph.initializer}
    if transpose.input[0] not in inits:
        return
    weight = numpy_helper.to_array(inits[transpose.input[0]]).T.copy()
    model.graph.initializer.append(numpy_helper.from_array(weight, "lm_head.weight_folded"))
    head.input[1] = "lm_head.weight_folded"
    if not any(transpose.output[0] in n.input for n in model.graph.node if n is not head):
        model.graph.node.remove(transpose)


def quantize_decoder_int4(src: Path, dst: Path, variant) -> dict:
    """MatMulNBits for the body (4 bits, or 8 for int8-weights); the LM head at int8 (or int4, or
    fp32) and, optionally, the embedding as GatherBlockQuantized."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from edgeft.core.grid import algo_config

    model = onnx.load(str(src))
    fold_tied_head(model)
    head = lm_head_node(model).name
    body_exclude = [head] if variant.head_bits != variant.bits else []
    ops = ("MatMul", "Gather") if variant.embedding_bits == 4 else ("MatMul",)
    q = MatMulNBitsQuantizer(model, bits=variant.bits, block_size=variant.block_size, is_symmetric=variant.symmetric,
                             accuracy_level=variant.accuracy_level, nodes_to_exclude=body_exclude,
                             op_types_to_quantize=ops,
                             algo_config=algo_config(variant.algorithm, variant.block_size, variant.bits))
    q.process()
    model = q.model.model
    if body_exclude and variant.head_bits == 8:  # the only float MatMul with a constant weight left is the head
        q8 = MatMulNBitsQuantizer(model, bits=8, block_size=variant.block_size, is_symmetric=variant.symmetric,
                                  accuracy_level=variant.accuracy_level, op_types_to_quantize=("MatMul",))
        q8.process()
        model = q8.model.model
    # weights in model.onnx.data: a prefill graph can then share them (write_prefill_graph)
    onnx.save(model, str(dst), save_as_external_data=True, location=dst.name + ".data")
    return {"lm_head_bits": variant.head_bits or 32, "embedding_bits": variant.embedding_bits or 32}


def write_prefill_graph(folder: Path, accuracy_level: int) -> bool:
    """A second graph over the same weights whose MatMulNBits use another accuracy level for the
    prompt; it references the same external data file, so it costs only the graph's bytes."""
    import onnx

    model = onnx.load(str(Path(folder) / ONNX_FILE), load_external_data=False)
    changed = 0
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for attr in node.attribute:
                if attr.name == "accuracy_level" and attr.i != accuracy_level:
                    attr.i = accuracy_level
                    changed += 1
    if not changed or not any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer):
        return False
    onnx.save(model, str(Path(folder) / PREFILL_FILE))
    return True


