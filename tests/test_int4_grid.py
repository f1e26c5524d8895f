"""Training against the shipped int4 grid (`tune.base_quant: int4`, edgeft/training/grid.py) and the
weight-only variants' choices (`int8-weights`, `algorithm`). algorithm k_quant is not run here:
onnxruntime's k-quant fails on the tiny model's K=96 weights (a reshape inside the quantizer); it
was measured on the real model (bench/int4_retention.py)."""
import numpy as np
import onnx
import pytest
import torch
from conftest import generation_recipe

from edgeft import EdgeftError
from edgeft.core.recipe import recipe_from_dict
from edgeft.generation.genai import build_genai
from edgeft.generation.models import load_model
from edgeft.generation.weight_only import GenaiWeightOnly
from edgeft.runtime import Generator
from edgeft.runtime.files import GENERATION_FILE
from edgeft.stages.data import prepare_data
from edgeft.stages.quantize import quantize_variant
from edgeft.training.grid import grid_linears, put_on_grid

PROMPT = [1, 504, 3243, 314, 253, 1345, 30, 2]  # a few real SmolLM2 token ids


def matmulnbits_bits(folder) -> dict:
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    return {n.name: next(a.i for a in n.attribute if a.name == "bits") for n in model.graph.node
            if n.op_type in ("MatMulNBits", "GatherBlockQuantized")}


def test_the_grid_is_what_the_shipped_int4_graph_computes(tiny_llama, tmp_path):
    """PyTorch on the grid and onnxruntime's int4 graph (fp32 compute: accuracy level 1) give the same logits; the
    fp32 model is far from both, so the comparison can fail."""
    variant = GenaiWeightOnly(name="int4", method="int4", source="genai", accuracy_level=1, head_bits=8)
    out = tmp_path / "int4"
    out.mkdir()
    build_genai(tiny_llama, out, precision="int4", variant=variant)
    (out / GENERATION_FILE).write_text('{"eos_token_ids": [2], "chat": {}, "max_new_tokens": 4, "head_dim": 16}')
    device = Generator(out, verify=False).prefill(PROMPT)[0]

    model = load_model(tiny_llama).eval()
    with torch.no_grad():
        fp32 = model(torch.tensor([PROMPT])).logits[0, -1].numpy()
        info = put_on_grid(model)
        on_grid = model(torch.tensor([PROMPT])).logits[0, -1].numpy()
    assert info["grid_linears"] == 14 and info["body_bits"] == 4 and info["head_bits"] == 8
    assert info["max_weight_change"] > 0
    assert np.abs(on_grid - device).max() < 1e-3
    assert np.abs(fp32 - device).max() > 20 * np.abs(on_grid - device).max()
    # 4 bits: at most 16 values in each block of 32 input weights of a linear layer
    weight = grid_linears(model)["model.layers.0.mlp.up_proj"].weight
    assert len(torch.unique(weight[0, :32])) <= 16 < len(torch.unique(load_model(tiny_llama).model.layers[0].mlp
                                                                      .up_proj.weight[0, :32]))


def test_qlora_on_the_int4_grid_trains_and_merges_through_a_gate_on_that_grid(tiny_llama, tmp_path):
    from edgeft.core.tasks import get_task
    from edgeft.stages.merge import merge
    from edgeft.stages.tune import tune
    from edgeft.training.qlora import load_trained

    recipe = recipe_from_dict(generation_recipe(
        tiny_llama, tune={"method": "qlora", "base_quant": "int4", "max_steps": 4, "batch_size": 8},
        merge={"min_agreement": 0.9}))
    prepare_data(recipe, tmp_path / "data")
    tuned = tune(recipe, tmp_path / "data", tmp_path / "tune", progress=False)
    assert tuned.config["base_quant"] == "int4"
    assert tuned.metrics["mode"]["mode"] == "int4 grid" and tuned.metrics["mode"]["grid_linears"] == 14
    checks = merge(recipe, tmp_path / "tune", tmp_path / "merge").metrics
    assert checks["gate"]["against"] == "vs_trained_int4" and checks["gate"]["passed"]
    assert checks["vs_trained_int4"]["compared"] > 0
    # trained and merged-then-rounded differ only where rounding W + BA differs from W's rounding + BA
    assert checks["vs_trained_int4"]["max_abs_logit_diff"] < 1.0
    trained = load_trained(get_task("generation"), tmp_path / "tune", [])
    base = trained.get_base_model().model.layers[1].self_attn.o_proj.base_layer.weight
    assert len(torch.unique(base[0, :32])) <= 16


def test_int8_weight_variant_ships_8_bit_weights_with_the_shared_embedding_repaired(gen_run, tmp_path):
    """onnxruntime-genai 0.15.2 writes int8 with a dangling shared-embedding weight; edgeft repairs it."""
    run_dir, recipe, _ = gen_run
    variant = GenaiWeightOnly(name="int8", method="int8-weights", source="genai", accuracy_level=4)
    manifest = quantize_variant(recipe, run_dir / "export-genai", variant, tmp_path / "int8")
    bits = matmulnbits_bits(tmp_path / "int8")
    assert set(bits.values()) == {8} and any("embed" in n for n in bits)
    assert manifest.metrics["vs_fp32"]["agreement"] >= 0.9
    fp32 = Generator(run_dir / "export-genai", verify=False)
    int8 = Generator(tmp_path / "int8", verify=False)
    assert list(int8.generate_ids(PROMPT, 6, stop=False)) == list(fp32.generate_ids(PROMPT, 6, stop=False))


def test_hqq_on_the_genai_builder_is_refused_by_name(tiny_llama):
    recipe = generation_recipe(tiny_llama)
    recipe["quantize"]["variants"][0]["algorithm"] = "hqq"
    with pytest.raises(EdgeftError, match=r"quantize.variants.0.algorithm: Input should be 'rtn' or 'k_quant'"):
        recipe_from_dict(recipe)
