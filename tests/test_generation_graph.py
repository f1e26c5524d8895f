"""The int4 graph rewrites of a generator: the int8 head shortlist, block-wise shortlist selection,
the int8 KV cache and sibling MatMul packing, each checked against the graph it replaces."""

import pytest
from conftest import generation_recipe

from edgeft import EdgeftError
from edgeft.core.artifacts import read_manifest
from edgeft.core.recipe import recipe_from_dict


def test_head_shortlist_rescores_the_int4_heads_best_tokens_with_the_int8_rows(gen_run, tmp_path):
    """quantize.variants[].head_shortlist: with fp32 compute (accuracy level 0) the shortlisted tokens'
    logits are the int8 head's to float precision, every other token keeps its int4 logit, and the
    greedy tokens are the int8 head's; the graph reads the int8 head only through the gather."""
    import numpy as np
    import onnx

    from edgeft.generation.bench_plan import bytes_per_token
    from edgeft.generation.weight_only import GenaiWeightOnly
    from edgeft.runtime import Generator
    from edgeft.stages.quantize import quantize_variant

    run_dir, recipe, _ = gen_run
    plain, listed = (GenaiWeightOnly(name=n, source="genai", method="int4", block_size=32, accuracy_level=0, head_bits=8,
                                 head_shortlist=k) for n, k in (("plain", None), ("listed", 12)))
    for v in (plain, listed):
        quantize_variant(recipe, run_dir / "export-genai", v, tmp_path / v.name)
    shortlist = read_manifest(tmp_path / "listed").details["head_shortlist"]
    assert shortlist["tokens"] == 12
    # the bench's decode ceiling counts the int4 copy, not the int8 rows it only gathers from
    vocab, hidden = 49152, 64
    int8_head = vocab * hidden * (1 + 4 / 32)  # 8-bit weights and an fp32 scale per block of 32
    saved = bytes_per_token(tmp_path / "plain", "onnx", 64) - bytes_per_token(tmp_path / "listed", "onnx", 64)
    assert saved == pytest.approx(int8_head - shortlist["int4_head_mib"] * 2**20, abs=0.06 * 2**20)
    graph = onnx.load(str(tmp_path / "listed/model.onnx"), load_external_data=False).graph
    assert {next(a.i for a in n.attribute if a.name == "bits") for n in graph.node if n.op_type == "MatMulNBits"} == {4}
    assert sum(n.op_type == "GatherBlockQuantized" for n in graph.node) == 2  # the embedding's and the shortlist's
    a, b = Generator(tmp_path / "plain", verify=False), Generator(tmp_path / "listed", verify=False)
    ids = a.encode_chat([{"role": "user", "content": "How far is the moon ?"}])
    (la, sa), (lb, sb) = a.prefill(ids), b.prefill(ids)
    for _ in range(12):
        # the shortlist (12 tokens, the int8 head's best among them) has the int8 head's logits, the rest int4's
        exact = np.abs(la - lb) < 1e-6
        assert exact.sum() >= 12 and exact[np.argsort(la)[-3:]].all() and (~exact).mean() > 0.9
        assert int(np.argmax(la)) == int(np.argmax(lb))
        (la, sa), (lb, sb) = a.step(int(np.argmax(la)), sa), b.step(int(np.argmax(lb)), sb)


def test_block_size_that_splits_a_shared_head_row_is_refused_before_building(gen_run, tmp_path):
    """A tied int8 head read as the embedding needs whole blocks per row: block 128 on hidden 64 is
    refused by name, with the sizes that fit, and nothing is written."""
    from edgeft.generation.weight_only import GenaiWeightOnly
    from edgeft.stages.quantize import quantize_variant

    run_dir, recipe, _ = gen_run
    variant = GenaiWeightOnly(name="wide", source="genai", method="int4", block_size=128, head_bits=8)
    with pytest.raises(EdgeftError, match="'wide': block_size 128 does not divide the model's hidden size 64.*use 16, 32, 64"):
        quantize_variant(recipe, run_dir / "export-genai", variant, tmp_path / "wide")
    assert not (tmp_path / "wide").exists()


def test_shortlist_selection_in_blocks_finds_the_same_tokens_as_one_topk():
    """The shortlist's two-stage selection (best blocks of 64, then the best of their logits) returns
    exactly the k best tokens, clustered in a few blocks or spread out; a vocabulary that does not
    split into blocks of 64 gets one TopK."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgeft.generation.shortlist import top_k_nodes

    def run(scores: np.ndarray, k: int) -> tuple[np.ndarray, list[str]]:
        nodes, inits = top_k_nodes("s", k, scores.shape[-1], "sel/", "ids")
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["b", 1, scores.shape[-1]])],
                                  [helper.make_tensor_value_info("ids", TensorProto.INT64, None)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"s": scores})[0], [n.op_type for n in nodes]

    rng = np.random.default_rng(0)
    spread = rng.standard_normal((2, 1, 49152)).astype(np.float32)
    clustered = spread.copy()
    clustered[0, 0, 640:704] += 10  # the best 64 all in one block, the next in the block beside it
    clustered[0, 0, 704:720] += 9
    for scores, k in ((spread, 64), (clustered, 64), (clustered, 80), (spread, 8)):
        ids, ops = run(scores, k)
        assert ops.count("TopK") == 2 and ids.shape == (2, 1, k)
        for row, found in zip(scores[:, 0], ids[:, 0]):
            assert sorted(found) == sorted(np.argsort(row)[-k:])
            assert (np.diff(row[found]) <= 0).all()  # best first, as TopK orders them
    odd = rng.standard_normal((1, 1, 1000)).astype(np.float32)
    ids, ops = run(odd, 16)
    assert ops == ["TopK"] and sorted(ids[0, 0]) == sorted(np.argsort(odd[0, 0])[-16:])


def test_int8_kv_cache_is_calibrated_and_keeps_the_answers(gen_run, tmp_path):
    """quantize.variants[].kv_cache: int8: the graph's cache inputs and outputs are int8 with a scale per
    channel from the training chats, the bench counts a quarter of the fp32 cache's bytes; the prompt
    runs the fp32 attention of model.prefill.onnx, whose cache arrives in the runtime's int8 buffers as
    the fp32 one divided by the scales and rounded; decoding's logits stay close to the fp32 cache's.
    With prefill_accuracy_level, CPUs with AVX-512 run that prompt graph's fp32-compute copy instead."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from edgeft.generation.bench_plan import bytes_per_token
    from edgeft.generation.weight_only import GenaiWeightOnly
    from edgeft.runtime import Generator
    from edgeft.stages.quantize import quantize_variant

    run_dir, recipe, _ = gen_run
    plain, kv8 = (GenaiWeightOnly(name=n, source="genai", method="int4", block_size=32, accuracy_level=4, head_bits=8,
                              kv_cache=kv, prefill_accuracy_level=level)
                 for n, kv, level in (("plain", None, None), ("kv8", "int8", 1)))
    for v in (plain, kv8):
        quantize_variant(recipe, run_dir / "export-genai", v, tmp_path / v.name)
    assert read_manifest(tmp_path / "kv8").details["kv_cache"]["layers"] == 2
    graph = onnx.load(str(tmp_path / "kv8/model.onnx"), load_external_data=False).graph
    caches = [v for v in list(graph.input) + list(graph.output) if v.name.startswith(("past", "present"))]
    assert len(caches) == 8 and {v.type.tensor_type.elem_type for v in caches} == {onnx.TensorProto.INT8}
    scales = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith(".scale")}
    assert len(scales) == 4 and all(s.shape == (1, 2, 1, 16) and (s > 0).all() for s in scales.values())
    # keys by rotary pair (i, i + 8): one scale for both channels of a pair, values per channel
    keys = [s for n, s in scales.items() if ".key." in n]
    assert len(keys) == 2 and all(np.array_equal(s[..., :8], s[..., 8:]) for s in keys)
    assert not all(np.array_equal(s[..., :8], s[..., 8:]) for n, s in scales.items() if ".value." in n)
    # the cache at context 64: 2 layers x (k, v) x 2 heads x 16 dims, 4 bytes a value against 1; the scales read
    assert bytes_per_token(tmp_path / "plain", "onnx", 64) - bytes_per_token(tmp_path / "kv8", "onnx", 64) == \
        2 * 2 * 2 * 16 * 3 * 64 - sum(s.nbytes for s in scales.values())
    a, b = Generator(tmp_path / "plain", verify=False), Generator(tmp_path / "kv8", verify=False, cpu={"avx2"})
    assert b.kv.dtype == np.int8 and b.prefill_returns_cache and b.prompt_graph_file == "model.prefill.onnx"
    ids = a.encode_chat([{"role": "user", "content": "How far is the moon ?"}])
    (la, sa), (lb, sb) = a.prefill(ids), b.prefill(ids)
    assert np.abs(la - lb).max() < 1e-4  # the prompt's attention is fp32 in both
    fast = Generator(tmp_path / "kv8", verify=False, cpu={"avx2", "avx512f"})
    levels = {attr.i for n in onnx.load(str(tmp_path / "kv8/model.prefill.avx512.onnx"), load_external_data=False).graph.node
              if n.op_type == "MatMulNBits" for attr in n.attribute if attr.name == "accuracy_level"}
    assert fast.prompt_graph_file == "model.prefill.avx512.onnx" and fast.prefill_returns_cache and levels == {1}
    lf, _ = fast.prefill(ids)  # fp32 activations instead of int8 ones: close, not equal
    assert 0 < np.abs(lf - la).max() < 0.01 * (la.max() - la.min())
    assert all((np.abs(fast.kv.arrays[n][:, :, :len(ids)].astype(int) - b.kv.arrays[n][:, :, :len(ids)]) <= 1).mean()
               > 0.99 for n in b.past_names)
    for name in b.past_names:
        expected = np.clip(np.rint(a.kv.arrays[name][:, :, :len(ids)] / scales[f"{name}.scale"]), -128, 127)
        assert (b.kv.arrays[name][:, :, :len(ids)] == expected).mean() > 0.999
    for _ in range(8):
        assert np.abs(la - lb).max() < 0.01 * (la.max() - la.min())  # 0.3% here
        token = int(np.argmax(la))
        (la, sa), (lb, sb) = a.step(token, sa), b.step(token, sb)


def test_int8_kv_cache_is_refused_outside_the_genai_attention():
    base = generation_recipe("smollm2")
    base["quantize"] = {"variants": [{"name": "int4", "source": "optimum", "method": "int4", "kv_cache": "int8"}]}
    with pytest.raises(EdgeftError, match="quantize.variants.0.kv_cache: unknown key"):  # optimum's kind has none
        recipe_from_dict(base)
    base["quantize"]["variants"][0].update(source="genai", lora="unmerged")
    with pytest.raises(EdgeftError, match="kv_cache: int8 needs lora merged"):
        recipe_from_dict({**base, "export": {"backends": ["genai"]}})


def test_sibling_matmuls_are_packed_into_one_with_the_same_logits(gen_run, tmp_path):
    """pack_sibling_matmuls on the optimum int4 graph: q, k, v and gate, up become one MatMulNBits
    each (two per layer), the outputs unchanged through the prompt and 8 decode steps."""
    import shutil

    import numpy as np
    import onnx

    from edgeft.generation.graph import pack_sibling_matmuls, quantize_decoder_int4, save_with_data
    from edgeft.quantizers.common import copy_sidecar_files
    from edgeft.runtime import Generator

    run_dir, recipe, _ = gen_run
    variant = next(v for v in recipe.quantize.variants if v.name == "int4-optimum")
    export = run_dir / "export-optimum"
    (tmp_path / "apart").mkdir()
    copy_sidecar_files(export, tmp_path / "apart")
    quantize_decoder_int4(export / "model.onnx", tmp_path / "apart/model.onnx", variant)  # before the graph edits
    shutil.copytree(tmp_path / "apart", tmp_path / "packed")
    model = onnx.load(str(tmp_path / "packed/model.onnx"))
    assert pack_sibling_matmuls(model) == 2 * 5  # 2 layers: q, k, v; gate, up
    save_with_data(model, tmp_path / "packed/model.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "packed/model.onnx"), load_external_data=False).graph.node]
    assert ops.count("Split") == 4 and ops.count("MatMulNBits") == 2 * 4 + 1  # + the head
    a, b = Generator(tmp_path / "apart", verify=False), Generator(tmp_path / "packed", verify=False)
    ids = a.encode_chat([{"role": "user", "content": "Where is Kyoto ?"}])
    (la, sa), (lb, sb) = a.prefill(ids), b.prefill(ids)
    for _ in range(8):
        assert np.abs(la - lb).max() < 1e-5
        token = int(np.argmax(la))
        (la, sa), (lb, sb) = a.step(token, sa), b.step(token, sb)


def test_head_shortlist_is_refused_without_an_int8_head():
    base = generation_recipe("smollm2")
    base["quantize"] = {"variants": [{"name": "int4", "source": "genai", "method": "int4", "head_bits": 4,
                                      "head_shortlist": 32}]}
    with pytest.raises(EdgeftError, match="head_shortlist needs method int4, head_bits 8 and symmetric"):
        recipe_from_dict(base)
