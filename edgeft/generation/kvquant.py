"""The KV cache at int8 (`quantize.variants[].kv_cache: int8`): onnxruntime's GroupQueryAttention
keeps past keys and values as int8, one fixed scale per channel (kv head x head dim), calibrated here.

Why: onnxruntime's CPU attention reads every layer's whole cache at every step, so each token of
context makes a step longer: on SmolLM2-135M int4 (2 Xeon cores) a step takes 3.4 ms at 8 tokens
of context, 3.9 ms at 128 and 4.9 ms at 256, and the fp32 cache competes with the weights for the
CPU's caches. At int8 it is a quarter of the bytes. Measured on the fine-tuned TREC assistant
(bench/compare_llamacpp.py, 5 interleaved rounds, 2 threads, two runs): after a 128-token prompt
decoding went 237 -> 252 and 223 -> 234 tok/s (1 thread: 120 -> 150, 99 -> 118); after a 1024-token
prompt 109 -> 162 and 92 -> 124 (llama.cpp Q4_0: 98 and 79). Exact match was the same on the 500
held-out questions (0.918; every answer identical), and perplexity on held-out questions 93.6 -> 92.8.

onnxruntime's int8 attention is slower than its fp32 one over many query tokens at once (a 128-token
prompt 10% slower, 1024 tokens 38%), so the prompt runs a second graph over the same weights file,
`model.prefill.onnx`, with the fp32 attention; it returns the prompt's cache quantized with the same
scales, and the runtime puts it into the int8 buffers (kvcache.py). The price is memory: the second
session holds its own copy of the prepacked weights (peak RSS 341 MiB against 220 at 128 tokens of
context, 453 against 354 at 1024). So it is opt-in: the assistant-trec-vs-llamacpp recipe, which races
llama.cpp, ships it; the other recipes leave it off.

Scales are static (the graph's inputs, as the operator wants them): the largest |value| of each
channel over `CALIBRATION_CHATS` training chats (prompt and `CALIBRATION_TOKENS` greedy tokens), times
`MARGIN`, over 127 (room for values the calibration did not see; beyond it they are clipped). Keys
are held after the rotary embedding, which turns each pair of channels by an angle that grows with
the position, so a key's scale is its pair's largest length (`magnitudes`), which no position changes.
With plain per-channel maxima from the short chats, 0.8% of the keys of a 1024-token text were clipped
(up to 5x the range) and perplexity at positions 1000-1100 rose 59.2 -> 61.0; by pairs 0.005% were,
and it read 57.8.
"""
from __future__ import annotations

from pathlib import Path

from edgeft import EdgeftError
from edgeft.generation.graph import int_attribute

CALIBRATION_CHATS = 64
CALIBRATION_TOKENS = 8
MARGIN = 1.25


def channel_maxima(folder: Path, rows: list[dict]) -> dict:
    """The largest |value| per (kv head, head dim) of every past key/value input, shape (1, heads, 1, dim),
    over the chats of `rows` as the model in `folder` decodes them."""
    import numpy as np

    from edgeft.runtime.generator import Generator

    generator = Generator(folder, verify=False)
    if generator.kv is None:
        raise EdgeftError("quantize.variants[].kv_cache: int8 needs onnxruntime's GroupQueryAttention with a shared "
                          f"cache (the genai builder's graphs); {folder} has none")
    chats = rows[::max(1, len(rows) // CALIBRATION_CHATS)][:CALIBRATION_CHATS]
    if not chats:
        raise EdgeftError("quantize.variants[].kv_cache: int8 is calibrated on training chats, and the data has none")
    maxima = {n: np.zeros((1, generator.kv_heads, 1, generator.head_dim), np.float32) for n in generator.past_names}
    for row in chats:
        ids = generator.encode_chat(row["messages"][:-1])
        produced = list(generator.generate_ids(ids, CALIBRATION_TOKENS, stop=False))
        written = len(ids) + len(produced) - 1  # the last token was chosen, not yet run
        for name, array in generator.kv.arrays.items():
            np.maximum(maxima[name], magnitudes(array[:, :, :written], name.endswith("key")).max(axis=2, keepdims=True),
                       out=maxima[name])
    return maxima


def magnitudes(cache, rotated: bool):
    """|value| per channel; for keys (after the rotary embedding) the length of each rotated pair,
    channels i and i + dim/2, on both of its channels."""
    import numpy as np

    if not rotated:
        return np.abs(cache)
    half = cache.shape[-1] // 2
    norm = np.sqrt(cache[..., :half] ** 2 + cache[..., half:] ** 2)
    return np.concatenate([norm, norm], axis=-1)


def quantize_kv_cache(model, maxima: dict) -> dict:
    """Every GroupQueryAttention node reads and writes an int8 cache with per-channel scales."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes = [n for n in model.graph.node if n.op_type == "GroupQueryAttention"]
    if not nodes:
        raise EdgeftError("quantize.variants[].kv_cache: int8 found no GroupQueryAttention node to quantize")
    if any(int_attribute(n, "rotary_interleaved", 0) for n in nodes):
        raise EdgeftError("quantize.variants[].kv_cache: int8 calibrates keys by rotary pairs (i, i + dim/2); "
                          "this graph's attention rotates interleaved pairs")
    cache_names = set()
    for node in nodes:
        scales = []
        for name in (node.input[3], node.input[4]):  # past key, past value
            scale = np.maximum(maxima[name] * MARGIN / 127.0, np.float32(1e-8)).astype(np.float32)
            model.graph.initializer.append(numpy_helper.from_array(scale, f"{name}.scale"))
            scales.append(f"{name}.scale")
        del node.input[12:]
        node.input.extend([""] * (12 - len(node.input)) + scales)  # inputs 12 and 13: k_scale, v_scale
        node.attribute.extend([helper.make_attribute("k_quant_type", "PER_CHANNEL"),
                               helper.make_attribute("v_quant_type", "PER_CHANNEL"),
                               helper.make_attribute("kv_cache_bit_width", 8)])
        cache_names.update([node.input[3], node.input[4], node.output[1], node.output[2]])
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name in cache_names:
            value.type.tensor_type.elem_type = TensorProto.INT8
    return {"kv_cache": "int8", "calibration_chats": CALIBRATION_CHATS, "scale_margin": MARGIN,
            "layers": len(nodes)}


def write_cache_prefill_graph(folder: Path) -> bool:
    """`model.prefill.onnx` for the prompt: the same weights (the same external data file) with the fp32
    attention, whose new keys and values the graph quantizes (times the inverse of the decode graph's
    scales, then QuantizeLinear: rounded to nearest even, saturated) and returns as int8 outputs; the
    runtime puts them into the cache (kvcache.py)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeft.runtime.files import ONNX_FILE, PREFILL_FILE

    model = onnx.load(str(Path(folder) / ONNX_FILE), load_external_data=False)
    inits = {i.name: i for i in model.graph.initializer}
    added = []
    for node in [n for n in model.graph.node if n.op_type == "GroupQueryAttention"]:
        scales = list(node.input[12:14])
        del node.input[12:]
        for attr in [a for a in node.attribute if a.name in ("k_quant_type", "v_quant_type", "kv_cache_bit_width")]:
            node.attribute.remove(attr)
        for out, scale in zip(node.output[1:3], scales):
            inverse = 1.0 / numpy_helper.to_array(inits[scale], base_dir=str(folder))
            model.graph.initializer.remove(inits[scale])
            model.graph.initializer.append(numpy_helper.from_array(inverse.astype(np.float32), f"{scale}.inverse"))
            node.output[list(node.output).index(out)] = f"{out}.fp32"
            added += [helper.make_node("Mul", [f"{out}.fp32", f"{scale}.inverse"], [f"{out}.scaled"]),
                      helper.make_node("QuantizeLinear", [f"{out}.scaled", "kv_cache.unit_scale", "kv_cache.zero"], [out])]
    if not added:  # no quantized cache
        return False
    model.graph.initializer.extend([numpy_helper.from_array(np.array(1.0, np.float32), "kv_cache.unit_scale"),
                                    numpy_helper.from_array(np.array(0, np.int8), "kv_cache.zero")])
    model.graph.node.extend(added)
    for value in model.graph.input:
        if value.name.startswith("past_key_values"):
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.save(model, str(Path(folder) / PREFILL_FILE))
    return True
