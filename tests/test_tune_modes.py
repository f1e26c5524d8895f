"""How QLoRA holds its base (edgeft/training/qlora.py), partial checkpointing, and data-parallel training."""
import json
import socket
import subprocess
import sys

import pytest
from conftest import classification_recipe, generation_recipe, write_recipe

from edgeft.core.recipe import recipe_from_dict
from edgeft.stages.data import prepare_data
from edgeft.stages.tune import tune
from edgeft.training.qlora import choose_mode, set_checkpointing


def test_auto_mode_follows_model_size_and_free_memory():
    mode, why = choose_mode("auto", params=500_000_000, device_type="cuda", free_bytes=80 * 2**30)
    assert mode == "dequantized" and "0.93 GiB of 80.0 GiB free GPU memory" in why
    mode, why = choose_mode("auto", params=8_000_000_000, device_type="cuda", free_bytes=20 * 2**30)
    assert mode == "4bit" and "would not leave room" in why
    assert choose_mode("plain", 1, "cpu", free_bytes=1)[0] == "plain"


@pytest.fixture(scope="module")
def trec_data(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("modes") / "data"
    prepare_data(recipe_from_dict(generation_recipe(tiny_llama)), out)
    return out


def test_every_qlora_mode_learns_the_same_curve_from_the_same_nf4_weights(tmp_path, tiny_llama, trec_data):
    curves = {}
    for mode in ("plain", "dequantized", "4bit"):
        recipe = recipe_from_dict(generation_recipe(
            tiny_llama, tune={"method": "qlora", "qlora_mode": mode, "max_steps": 5, "batch_size": 8}))
        manifest = tune(recipe, trec_data, tmp_path / mode, progress=False)
        assert manifest.metrics["mode"]["mode"] == mode
        curves[mode] = manifest.metrics["loss_curve"]
    assert len(curves["plain"]) == 5 and curves["plain"][0] > curves["plain"][-1]
    for mode in ("dequantized", "4bit"):
        for a, b in zip(curves["plain"], curves[mode]):
            assert abs(a - b) / a < 1e-3, (mode, curves)


def test_partial_checkpointing_keeps_the_gradients(tiny_llama, trec_data):
    import torch
    from transformers import AutoTokenizer

    from edgeft.generation.examples import ChatExamples, answer_nll
    from edgeft.generation.models import load_model
    from edgeft.stages.data import load_split

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    batch = ChatExamples(load_split(trec_data, "train")[:4], tokenizer, 64, []).batch([0, 1, 2, 3])
    grads = []
    for layers in (0, 1):
        torch.manual_seed(0)
        model = load_model(tiny_llama).train()
        for p in model.parameters():
            p.requires_grad_(False)
        model.model.layers[0].mlp.up_proj.weight.requires_grad_(True)
        assert set_checkpointing(model, layers) == layers
        assert [getattr(l, "gradient_checkpointing", False) for l in model.model.layers] == [bool(layers), False]
        nll, _ = answer_nll(model, batch)
        nll.backward()
        grads.append(model.model.layers[0].mlp.up_proj.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_data_parallel_and_end_with_identical_adapters(tmp_path, tiny_bert):
    recipe = classification_recipe(tiny_bert, tune={"method": "qlora", "max_steps": 6, "batch_size": 8})
    recipe_file = write_recipe(tmp_path / "r.yaml", recipe)
    prepare_data(recipe_from_dict(recipe), tmp_path / "data")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "edgeft.cli", "tune", str(tmp_path / "data"), "-o", str(tmp_path / "tuned"), "-r", str(recipe_file)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "tuned" / "manifest.json").read_text())["metrics"]
    assert metrics["processes"] == 2 and len(metrics["rank_adapter_sha256"]) == 2
    assert metrics["ranks_identical"] is True
    assert metrics["steps"] == 6 and len(metrics["loss_curve"]) == 6


def test_packed_cpu_kernel_path_is_guarded_for_shapes_it_cannot_hold(tiny_llama):
    """bitsandbytes repacks a 4-bit weight for its AVX512-BF16 CPU kernel on the first eval-mode call;
    forced on here (whatever this CPU is), a Linear with in_features 96 (not a multiple of 64) crashes
    the repacking unless edgeft keeps that layer on the generic path."""
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM

    from edgeft.training.qlora import guard_packed_cpu_path, nf4_config, packed_cpu_unfit

    def load():
        model = AutoModelForCausalLM.from_pretrained(tiny_llama, quantization_config=nf4_config(False),
                                                     device_map={"": "cpu"}, dtype=torch.float32).eval()
        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                module.support_avx512bf16_for_cpu = True  # what bitsandbytes sets on such a CPU
        return model

    x = torch.randn(1, 3, 96)
    unguarded = load()
    down = unguarded.model.layers[0].mlp.down_proj
    assert down.in_features == 96 and packed_cpu_unfit(down)
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"shape '\[64, 1\]' is invalid for input of size 96"):
        down(x)  # the crash seen on Intel Xeon with AVX-512/AMX

    model = load()
    guarded = guard_packed_cpu_path(model)
    assert guarded == [f"model.layers.{i}.mlp.down_proj" for i in range(2)]
    down = model.model.layers[0].mlp.down_proj
    assert not down.support_avx512bf16_for_cpu
    assert model.model.layers[0].mlp.up_proj.support_avx512bf16_for_cpu  # shapes that fit keep the fast kernel
    with torch.no_grad():
        out = down(x)
    reference = x @ bnb.functional.dequantize_4bit(down.weight.data, down.weight.quant_state).T
    assert torch.allclose(out, reference, atol=1e-4)


def test_qlora_decoder_goes_through_merge_against_the_nf4_model(tmp_path, tiny_llama, trec_data):
    from edgeft.stages.merge import merge

    recipe = recipe_from_dict(generation_recipe(
        tiny_llama, tune={"method": "qlora", "qlora_mode": "plain", "max_steps": 4, "batch_size": 8},
        merge={"min_agreement": 0.9}))
    tuned = tune(recipe, trec_data, tmp_path / "tune", progress=False)
    assert tuned.metrics["mode"]["mode"] == "plain"
    checks = merge(recipe, tmp_path / "tune", tmp_path / "merge").metrics
    assert checks["gate"] == {"against": "vs_trained_nf4", "min_agreement": 0.9, "passed": True}
    assert checks["vs_trained_nf4"]["compared"] == checks["vs_adapter_fp32"]["compared"] > 0
    # the NF4 gap is real but small next to the answer-token logits; the merge arithmetic is exact
    assert 0 < checks["vs_trained_nf4"]["max_abs_logit_diff"] < 1.0
    assert checks["vs_adapter_fp32"]["max_abs_logit_diff"] < 1e-4
