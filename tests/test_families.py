"""The model families users fine-tune, each through every stage on a tiny model built from its config
with SmolLM2's real tokenizer (llama itself is conftest's gen_run): data, tune on the NF4 and int4
grids, the merge gate, export by optimum, the genai builder and llama.cpp (where its converter takes
the family), every variant kind the assistant recipes ship (the int4 graph edits: 8-bit head and its
shortlist, int8 KV cache, prompt graphs; unmerged LoRA; dynamic int8; llama.cpp Q4_0), the bench, the
bundle, and `edgeft-runtime`. Parity is asserted at each step."""
from __future__ import annotations

import json

import pytest
from conftest import copy_tree, generation_recipe

from edgeft import EdgeftError
from edgeft.core.artifacts import read_manifest
from edgeft.core.recipe import recipe_from_dict
from edgeft.generation.families import FAMILIES as DECODERS

# family -> (transformers config class, model class, what makes the tiny config like the real ones)
FAMILIES = {
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"tie_word_embeddings": True, "head_dim": 16}),
    # sliding-window layers narrower than the test prompts; the query scale as every Gemma 3 size but 27B has it
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"tie_word_embeddings": True, "head_dim": 16,
                                                         "query_pre_attn_scalar": 16, "sliding_window": 16}),
    # NoPE every fourth layer, as SmolLM3-3B
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", {"tie_word_embeddings": True, "no_rope_layer_interval": 2}),
    # Phi-3-mini-4k's layout (fused qkv and gate/up, untied head, no long-context RoPE scaling)
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"tie_word_embeddings": False, "original_max_position_embeddings": 256}),
}
VARIANTS = [
    {"name": "int4", "source": "genai", "method": "int4", "block_size": 32, "accuracy_level": 4, "head_bits": 8,
     "head_shortlist": 64, "kv_cache": "int8", "prefill_accuracy_level": 1},
    {"name": "int4-lora", "source": "genai", "method": "int4", "lora": "unmerged", "block_size": 32,
     "accuracy_level": 4, "head_bits": 8, "head_shortlist": 64},
    {"name": "int8-dynamic", "source": "optimum", "method": "dynamic"},
    {"name": "q4_0", "source": "gguf", "method": "gguf", "type": "Q4_0"},
]


def tiny(family: str, smollm_base, folder):
    import torch
    import transformers
    from transformers import AutoTokenizer

    config_class, model_class, extra = FAMILIES[family]
    tokenizer = AutoTokenizer.from_pretrained(smollm_base)
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=2, **extra)
    torch.manual_seed(0)
    getattr(transformers, model_class)(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


OPTIMUM_INT4 = {"name": "int4", "source": "optimum", "method": "int4", "block_size": 32, "accuracy_level": 4,
                "head_bits": 8}


def family_recipe(base, family: str, **sections) -> dict:
    """Every backend the family takes (the tiny phi3's vocabulary is one llama.cpp cannot convert: see the
    refusal test), and every variant kind of those backends; without genai, the int4 is optimum's."""
    takes = DECODERS[family]
    backends = [b for b in ("optimum", "genai", "gguf") if not getattr(takes, b, "")]
    variants = [v for v in VARIANTS if v["source"] in backends] + ([OPTIMUM_INT4] if "genai" not in backends else [])
    # llama.cpp's SmolLM3 computes the tiny model's prefill logits 2e-3 from transformers' (greedy tokens equal)
    atol = 3e-3 if family == "smollm3" else 1e-3
    settings = {"tune": {"method": "lora", "max_steps": 2},
                "export": {"backends": backends, "parity_samples": 2, "parity_new_tokens": 8, "parity_atol": atol},
                "quantize": {"variants": variants}, "data": {"test_size": 8},
                "bench": {"threads": [1], "rounds": 1, "prompt_tokens": 16, "new_tokens": 4, "max_new_tokens_eval": 3,
                          "include_pytorch": False},
                "package": {"variant": "int4"}}
    for section, values in sections.items():
        settings[section] = {**settings.get(section, {}), **values}
    recipe = generation_recipe(base, **settings)
    recipe["name"] = f"tiny-{family}"
    return recipe


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_run(request, smollm_base, tmp_path_factory):
    from edgeft.pipeline import run_pipeline

    family = request.param
    run_dir = tmp_path_factory.mktemp(f"family-{family}")
    base = tiny(family, smollm_base, run_dir / "base")
    recipe = recipe_from_dict(family_recipe(base, family))
    return family, run_dir, recipe, run_pipeline(recipe, run_dir, progress=False)


def test_every_stage_holds_parity(family_run):
    family, run_dir, recipe, report = family_run
    assert read_manifest(run_dir / "merge", stage="merge").metrics["gate"]["passed"]
    for backend in recipe.export.backends:
        parity = read_manifest(run_dir / f"export-{backend}", stage="export").metrics["parity"]
        assert parity["passed"] and parity["greedy_identical"], (family, backend, parity)
    drifts = {v.name: read_manifest(run_dir / "quantize" / v.name).metrics["vs_fp32"] for v in recipe.quantize.variants}
    assert set(drifts) >= {"int4", "int8-dynamic"}
    for name, drift in drifts.items():  # each variant against its own fp32 export, on the same chats
        assert drift["compared"] == 16 and 0 < drift["max_abs_logit_diff"] < 1.0, (family, name, drift)
    assert drifts["int8-dynamic"]["mean_abs_logit_diff"] < drifts["int4"]["mean_abs_logit_diff"]
    rows = {r["name"]: r for r in report["variants"]}
    assert {v.name for v in recipe.quantize.variants} <= set(rows)
    onnx = [n for n in ("onnx-fp32", "genai-fp32") if n in rows]  # fp32 exports score the answers alike
    assert onnx and all(rows[n]["metrics"]["answer_nll"] == pytest.approx(rows[onnx[0]]["metrics"]["answer_nll"],
                                                                          rel=1e-4) for n in onnx)
    timed = [v.name for v in recipe.quantize.variants] + [f"{b}-fp32" for b in ("onnx", "genai", "gguf")
                                                         if b.replace("onnx", "optimum") in recipe.export.backends]
    assert all(rows[n]["decode"][0]["decode_tokens_per_s"]["median"] > 0 for n in timed), family


def test_the_bundle_answers_as_the_bench_scored(family_run):
    from edgeft.runtime import load

    family, run_dir, recipe, report = family_run
    shipped = next(r for r in report["variants"] if r["name"] == "int4")
    test = [json.loads(line) for line in (run_dir / "data/test.jsonl").read_text().splitlines()]
    bundle = load(run_dir / "package")
    said = [bundle.answer(r["messages"][:-1], recipe.bench.max_new_tokens_eval) for r in test]
    assert said == shipped["predictions"], family
    assert json.loads((run_dir / "package/generation.json").read_text())["eos_token_ids"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tune_trains_on_the_nf4_and_the_int4_grid(family, smollm_base, tmp_path):
    from edgeft.stages.data import prepare_data
    from edgeft.stages.tune import tune

    base = tiny(family, smollm_base, tmp_path / "base")
    for grid in ({"base_quant": "nf4"}, {"base_quant": "int4", "grid_block_size": 32, "grid_head_bits": 8}):
        recipe = recipe_from_dict(family_recipe(base, family, tune={"method": "qlora", "max_steps": 1, **grid},
                                                quantize={"variants": []}, package={"variant": None}))
        prepare_data(recipe, tmp_path / "data")
        out = tmp_path / f"tune-{grid['base_quant']}"
        manifest = tune(recipe, tmp_path / "data", out, progress=False)
        assert (out / "adapter_model.safetensors").exists(), (family, grid)
        metrics = manifest.metrics
        assert metrics["steps"] == 1 and metrics["best_validation"]["loss"] > 0, (family, grid)
        assert metrics["mode"]["mode"] == ("int4 grid" if grid["base_quant"] == "int4" else "dequantized"), family


def test_a_backend_a_family_cannot_take_is_refused_before_any_work(smollm_base, tmp_path):
    """llama.cpp's converter reads phi3's vocabulary from a SentencePiece tokenizer.model or a
    GPT2Tokenizer; this tiny phi3's fast BPE tokenizer (SmolLM2's) is neither, and cannot become a GGUF."""
    from click.testing import CliRunner
    from conftest import write_recipe

    from edgeft.cli import cli

    base = tiny("phi3", smollm_base, tmp_path / "base")
    recipe = family_recipe(base, "phi3", export={"backends": ["genai", "gguf"]})
    recipe["quantize"]["variants"] = [VARIANTS[0], VARIANTS[3]]
    result = CliRunner().invoke(cli, ["run", str(write_recipe(tmp_path / "r.yaml", recipe)), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "export.backends: gguf: llama.cpp converts a phi3 model only with a SentencePiece tokenizer.model or a " \
           "GPT2Tokenizer (Phi-4-mini's)" in result.output
    assert not (tmp_path / "run" / "data").exists()
    bert = copy_tree(base, tmp_path / "bert")
    (bert / "config.json").write_text(json.dumps({**json.loads((bert / "config.json").read_text()), "model_type": "bert"}))
    with pytest.raises(EdgeftError, match=r"model.base: .*bert is a 'bert' model; generation recipes take llama, "
                                          r"smollm3, qwen2, qwen3, gemma3, phi3"):
        from edgeft.core.tasks import get_task

        get_task("generation").check_base(recipe_from_dict(recipe), bert)


# --- classifiers ---------------------------------------------------------------------------------------
ENCODERS = {
    "distilbert": ("DistilBertConfig", "DistilBertModel", {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}),
    "roberta": ("RobertaConfig", "RobertaModel", {}),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel", {}),
    # a local-attention window narrower than the messages, and global attention every other layer
    "modernbert": ("ModernBertConfig", "ModernBertModel", {"global_attn_every_n_layers": 2, "local_attention": 16}),
}


def tiny_encoder(family: str, folder):
    """A 2-layer encoder of the family (bert is conftest's tiny_bert) with all-MiniLM-L6-v2's tokenizer;
    a DistilBERT's tokenizer gives no token type ids, as the real one does not."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    from edgeft.core.models import resolve_model

    config_class, model_class, extra = ENCODERS[family]
    inputs = {"model_input_names": ["input_ids", "attention_mask"]} if family == "distilbert" else {}
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm"), **inputs)
    sizes = {} if family == "distilbert" else {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                               "intermediate_size": 64, "pad_token_id": tokenizer.pad_token_id}
    config = getattr(transformers, config_class)(vocab_size=tokenizer.vocab_size, max_position_embeddings=128,
                                                 **sizes, **extra)
    torch.manual_seed(0)
    getattr(transformers, model_class)(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_bert_tunes_on_the_int4_grid(tiny_bert, tmp_path):
    """BERT's whole path is conftest's cls_run (QLoRA on NF4); here its tune on the int4 grid."""
    from conftest import classification_recipe

    from edgeft.stages.data import prepare_data
    from edgeft.stages.tune import tune

    recipe = recipe_from_dict(classification_recipe(tiny_bert, tune={"method": "qlora", "base_quant": "int4",
                                                                     "max_steps": 1}, quantize={"variants": []}))
    prepare_data(recipe, tmp_path / "data")
    assert tune(recipe, tmp_path / "data", tmp_path / "tune", progress=False).metrics["steps"] == 1


@pytest.mark.parametrize("family", list(ENCODERS))
def test_each_encoder_family_through_every_stage(family, tmp_path):
    from conftest import classification_recipe

    from edgeft.pipeline import run_pipeline
    from edgeft.runtime import load

    base = tiny_encoder(family, tmp_path / "base")
    recipe = recipe_from_dict(classification_recipe(base, tune={"method": "qlora", "max_steps": 4},
                                                    merge={"min_agreement": 0.9}, package={"variant": "int8-static"}))
    report = run_pipeline(recipe, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert read_manifest(run / "merge", stage="merge").metrics["gate"]["passed"]
    assert read_manifest(run / "export-optimum", stage="export").metrics["parity"]["passed"]
    rows = {r["name"]: r for r in report["variants"]}
    assert {"onnx-fp32", "int8-dynamic", "int8-static", "int4"} <= set(rows)
    assert rows["onnx-fp32"]["correct"] == rows["pytorch-fp32"]["correct"]  # the fp32 export answers as PyTorch
    test = [json.loads(line) for line in (run / "data/test.jsonl").read_text().splitlines()]
    said = load(run / "package").predict([r["text"] for r in test])
    assert [label for label, _ in said] == rows["int8-static"]["predictions"], family
    from edgeft.stages.tune import tune  # and the int4 grid, as the generation recipes train on it

    grid = recipe_from_dict(classification_recipe(base, tune={"method": "qlora", "base_quant": "int4", "max_steps": 1},
                                                  quantize={"variants": []}))
    assert tune(grid, run / "data", tmp_path / "tune-grid", progress=False).metrics["steps"] == 1
