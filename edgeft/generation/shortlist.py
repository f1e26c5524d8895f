"""The LM head as a shortlist: an int4 copy of the head proposes the best `k` tokens, and their
int8 rows score them again exactly.

Why: a decode step of SmolLM2-135M reads the body's int4 weights (56 MB) and the tied head at
int8 (30 MB): the head is a third of the bytes, and decoding is bound by memory reads. The head at
int4 alone is 15% faster but costs exact match (0.892 against 0.920 on the 500 held-out TREC
questions), because the argmax flips between close candidates. A shortlist keeps the int8 head's
choice as long as it is among the int4 head's best `k`: on the fine-tuned SmolLM2 it was in every
one of 1,536 decode steps of chats at k = 8, and of 768 steps continuing raw text it was in 99.74%
at k = 32, 99.87% at 64 and all at 128. Rescoring k int8 rows (gathered like the embedding, which
reads these same weights anyway) costs almost nothing; a step reads 16 MB of head instead of 30.
A low-rank shortlist (the head projected on the hidden states' main directions) would read less,
but kept the argmax in its top 64 in only 50-90% of steps on raw text at ranks 64-320 (all of them in
the task's chats it was fitted on), so it is not offered.

The graph still outputs the full-vocabulary `logits`: the shortlist's exact values scattered into
the int4 head's, so the runtime, greedy decoding and answer scoring are unchanged. Tokens outside
the shortlist keep their int4 logits (a log-softmax over them differs from the int8 head's in the
int4 rounding of the tail only). The rescored rows are computed in fp32 from the int8 weights, so
they are, if anything, closer to the fine-tuned model than the int8 head's int8-activation kernel.

The best `k` of 49,152 are found in two stages: the `k` blocks of 64 logits with the largest maxima,
then the best `k` of those blocks' logits. Every one of the best `k` lies in such a block (up to
ties), so the tokens are the same as one TopK's. onnxruntime 1.32's TopK over the whole vocabulary
took 119 us at 2 threads on the Intel Xeon (3% of a decode step); the two stages 33 us (blocks of
128: 46, of 256: 97).
"""
from __future__ import annotations

from edgeft import EdgeftError
from edgeft.generation.graph import int_attribute, lm_head_node


def int8_head_weights(model, head):
    """The head's int8 weights dequantized, (vocab, hidden) fp32, and its scales as (vocab, blocks)."""
    import numpy as np
    from onnx import numpy_helper

    if head.op_type != "MatMulNBits" or int_attribute(head, "bits") != 8 or len([i for i in head.input if i]) != 3:
        raise EdgeftError("quantize.variants[].head_shortlist needs the LM head at symmetric int8 (head_bits: 8); "
                          f"this graph's head is {head.op_type} at {int_attribute(head, 'bits', 32)} bits")
    inits = {i.name: i for i in model.graph.initializer}
    q = numpy_helper.to_array(inits[head.input[1]])  # (N, blocks, block bytes)
    vocab, blocks = q.shape[0], q.shape[1]
    scales = numpy_helper.to_array(inits[head.input[2]]).reshape(vocab, blocks)
    zero = 128.0  # MatMulNBits' zero point for 8 bits without a zero_points input
    weights = ((q.astype(np.float32) - zero) * scales[:, :, None]).reshape(vocab, -1)[:, :int_attribute(head, "K")]
    return weights, scales


def int4_head_node(weights, hidden: str, output: str, block_size: int, accuracy_level: int):
    """onnxruntime's own quantizer on the dequantized head: MatMulNBits at 4 bits, and its initializers."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    vocab, size = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["h", "lm_head.shortlist.weight"], ["y"], name="/lm_head/shortlist/MatMul")],
        "head", [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 1, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, vocab])],
        [numpy_helper.from_array(weights.T.copy(), "lm_head.shortlist.weight")])
    quantizer = MatMulNBitsQuantizer(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), bits=4,
                                     block_size=block_size, is_symmetric=True, accuracy_level=accuracy_level)
    quantizer.process()
    quantized = quantizer.model.model.graph
    node = quantized.node[0]
    node.input[0], node.output[0] = hidden, output
    return node, list(quantized.initializer)


def gathered_rows(model, head, scales, indices: str, output: str) -> list:
    """GatherBlockQuantized over the int8 head weights seen as (vocab, hidden), as the embedding reads
    them (the genai builder's shared embedding already has that view: it is reused, not copied)."""
    import numpy as np
    from onnx import helper, numpy_helper

    weight, scale_name = head.input[1], head.input[2]
    reshape = next((n for n in model.graph.node if n.op_type == "Reshape" and n.input[0] == weight), None)
    nodes, rows = [], reshape.output[0] if reshape is not None else weight + "/rows"
    if reshape is None:
        model.graph.initializer.append(numpy_helper.from_array(
            np.asarray([scales.shape[0], -1], dtype=np.int64), "lm_head.shortlist.rows_shape"))
        nodes.append(helper.make_node("Reshape", [weight, "lm_head.shortlist.rows_shape"], [rows],
                                      name="/lm_head/shortlist/Reshape"))
    if list(next(i for i in model.graph.initializer if i.name == scale_name).dims) != list(scales.shape):
        scale_name = "lm_head.shortlist.scales"  # MatMulNBits may keep them flat; the gather wants (vocab, blocks)
        model.graph.initializer.append(numpy_helper.from_array(scales, scale_name))
    nodes.append(helper.make_node("GatherBlockQuantized", [rows, indices, scale_name], [output], domain="com.microsoft",
                                  bits=8, block_size=int_attribute(head, "block_size"), gather_axis=0, quantize_axis=1,
                                  name="/lm_head/shortlist/GatherRows"))
    return nodes


SELECTION_BLOCK = 64  # logits per block in the two-stage selection


def top_k_nodes(scores: str, k: int, vocab: int, name: str, output: str) -> tuple[list, list]:
    """Nodes writing the indices of the best `k` of `scores` (..., vocab) into `output`, and their
    initializers: two stages where the vocabulary splits into at least `k` blocks, else one TopK."""
    import numpy as np
    from onnx import helper, numpy_helper

    def const(suffix: str, value) -> object:
        return numpy_helper.from_array(np.asarray(value, dtype=np.int64), name + suffix)

    inits = [const("k", [k])]
    blocks = vocab // SELECTION_BLOCK
    if vocab % SELECTION_BLOCK or blocks < k:
        return [helper.make_node("TopK", [scores, name + "k"], [name + "top", output], axis=-1, name=name + "TopK")], inits
    inits += [const("blocks_shape", [0, 0, blocks, SELECTION_BLOCK]), const("block", SELECTION_BLOCK),
              const("in_block", np.arange(SELECTION_BLOCK)), const("last", [-1]), const("flat_shape", [0, 0, -1])]
    node = helper.make_node
    return [node("Reshape", [scores, name + "blocks_shape"], [name + "blocks"], name=name + "Blocks"),
            node("ReduceMax", [name + "blocks", name + "last"], [name + "block_max"], keepdims=0, name=name + "BlockMax"),
            node("TopK", [name + "block_max", name + "k"], [name + "_", name + "best_blocks"], axis=-1,
                 name=name + "TopBlocks"),
            node("Unsqueeze", [name + "best_blocks", name + "last"], [name + "best_blocks4d"], name=name + "Unsqueeze"),
            node("Mul", [name + "best_blocks4d", name + "block"], [name + "starts"], name=name + "Starts"),
            node("Add", [name + "starts", name + "in_block"], [name + "candidates4d"], name=name + "Candidates"),
            node("Reshape", [name + "candidates4d", name + "flat_shape"], [name + "candidates"], name=name + "Flat"),
            node("GatherElements", [scores, name + "candidates"], [name + "candidate_scores"], axis=-1,
                 name=name + "CandidateScores"),
            node("TopK", [name + "candidate_scores", name + "k"], [name + "top", name + "best"], axis=-1,
                 name=name + "TopK"),
            node("GatherElements", [name + "candidates", name + "best"], [output], axis=-1, name=name + "Ids")], inits


def add_head_shortlist(model, tokens: int, block_size: int) -> dict:
    """Make the decoder's head a `tokens`-long shortlist (edits `model` in place); returns what it built."""
    import numpy as np
    from onnx import helper, numpy_helper

    head = lm_head_node(model)
    weights, scales = int8_head_weights(model, head)
    if not 1 < tokens < weights.shape[0]:
        raise EdgeftError(f"quantize.variants[].head_shortlist: {tokens} tokens, but the vocabulary has "
                          f"{weights.shape[0]}")
    hidden, name = head.input[0], "/lm_head/shortlist/"
    int4, int4_inits = int4_head_node(weights, hidden, name + "logits4", block_size, int_attribute(head, "accuracy_level", 0))
    model.graph.initializer.extend(int4_inits)
    select, select_inits = top_k_nodes(name + "logits4", tokens, weights.shape[0], name + "select/", name + "ids")
    model.graph.initializer.extend([*select_inits, numpy_helper.from_array(np.asarray([-1], dtype=np.int64), name + "last")])
    nodes = [int4, *select,
             *gathered_rows(model, head, scales, name + "ids", name + "rows"),  # (..., k, hidden)
             helper.make_node("Unsqueeze", [hidden, name + "last"], [name + "column"], name=name + "Unsqueeze"),
             helper.make_node("MatMul", [name + "rows", name + "column"], [name + "exact4d"], name=name + "MatMul"),
             helper.make_node("Squeeze", [name + "exact4d", name + "last"], [name + "exact"], name=name + "Squeeze"),
             helper.make_node("ScatterElements", [name + "logits4", name + "ids", name + "exact"], [head.output[0]],
                              axis=-1, name=name + "Scatter")]
    at = list(model.graph.node).index(head)
    model.graph.node.remove(head)
    for offset, node in enumerate(nodes):
        model.graph.node.insert(at + offset, node)
    return {"tokens": tokens, "int4_block_size": block_size,
            "int4_head_mib": round(sum(numpy_helper.to_array(i).nbytes for i in int4_inits) / 2**20, 1)}
