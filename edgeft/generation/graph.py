"""Edits of exported decoder graphs: the LM head over the last position only, the tied head
folded into a constant, int4 weights with an int8 head, sibling MatMulNBits packed into one, and
a prefill graph over the same weights."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from edgeft import EdgeftError
from edgeft.runtime.files import ONNX_FILE, PREFILL_AVX512_FILE, PREFILL_FILE


def int_attribute(node, name: str, default=None):
    """An integer attribute of an ONNX node (MatMulNBits' bits, K, N, block_size...)."""
    return next((a.i for a in node.attribute if a.name == name), default)


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

    from edgeft.quantizers.weight_only import algo_config

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
    """The prompt graph (model.prefill.onnx where the variant has one, else model.onnx) with its
    MatMulNBits at another accuracy level, as model.prefill.avx512.onnx: the runtime takes it on CPUs
    with AVX-512 only. On the 2-core Xeon (AVX-512, VNNI) fp32 compute (level 1) prefilled SmolLM2-135M
    at 942 tok/s against int8 compute's 781; on the AVX2 EPYC at 274 against 348. It references the
    same external data file, so it costs only the graph's bytes (and, loaded, its own prepacked weights)."""
    import onnx

    source = Path(folder) / (PREFILL_FILE if (Path(folder) / PREFILL_FILE).exists() else ONNX_FILE)
    model = onnx.load(str(source), load_external_data=False)
    changed = 0
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for attr in node.attribute:
                if attr.name == "accuracy_level" and attr.i != accuracy_level:
                    attr.i = accuracy_level
                    changed += 1
    if not changed or not any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer):
        return False
    onnx.save(model, str(Path(folder) / PREFILL_AVX512_FILE))
    return True


def _packable(node, inits, uses) -> tuple | None:
    """What MatMulNBits nodes must share to become one: input, attributes, weights of their own, no extras."""
    weights = [n for n in node.input[1:] if n]
    if node.op_type != "MatMulNBits" or len(node.input) > 4 or any(n not in inits or uses[n] > 1 for n in weights):
        return None
    attrs = tuple(sorted((a.name, a.i) for a in node.attribute if a.name != "N"))
    return node.input[0], attrs, len([n for n in node.input if n])


def pack_sibling_matmuls(model) -> int:
    """MatMulNBits nodes that read the same input with the same settings (a decoder's gate and up
    projections; q, k and v where the exporter left them apart) become one MatMulNBits over their
    stacked weights and a Split: the same numbers, fewer and larger kernels. The genai builder packs
    q, k and v this way; gate and up it leaves apart, and packing them decoded SmolLM2-135M 5-9%
    faster on 2 Xeon cores in two runs (README). Edits `model` in place; returns the nodes packed."""
    import numpy as np
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    uses = Counter(name for node in model.graph.node for name in node.input)
    groups: dict[tuple, list] = {}
    for node in model.graph.node:
        key = _packable(node, inits, uses)
        if key is not None:
            groups.setdefault(key, []).append(node)
    packed = 0
    for nodes in (g for g in groups.values() if len(g) > 1):
        name = nodes[0].name + "/packed"
        stacked = [numpy_helper.from_array(np.concatenate([numpy_helper.to_array(inits[n.input[i]]) for n in nodes]),
                                           f"{name}.input{i}") for i in range(1, len(nodes[0].input))]
        sizes = [int_attribute(n, "N") for n in nodes]
        attrs = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute} | {"N": sum(sizes)}
        matmul = helper.make_node("MatMulNBits", [nodes[0].input[0], *(t.name for t in stacked)], [name + "/output"],
                                  name=name, domain="com.microsoft", **attrs)
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(sizes, dtype=np.int64), name + ".sizes"))
        split = helper.make_node("Split", [matmul.output[0], name + ".sizes"], [n.output[0] for n in nodes],
                                 axis=-1, name=name + "/Split")
        model.graph.initializer.extend(stacked)
        at = list(model.graph.node).index(nodes[0])
        for n in nodes:
            model.graph.node.remove(n)
            for weight in n.input[1:]:
                model.graph.initializer.remove(inits[weight])
        model.graph.node.insert(at, split)
        model.graph.node.insert(at, matmul)
        packed += len(nodes)
    return packed


def save_with_data(model, path: Path) -> None:
    """The model at `path`, its weights in `<name>.data` (rewritten), readable by any user of the device."""
    import onnx

    data = Path(str(path) + ".data")
    data.unlink(missing_ok=True)
    onnx.save(model, str(path), save_as_external_data=True, location=data.name)
    data.chmod(0o644)  # onnx writes it owner-only
