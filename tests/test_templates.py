"""Base models without a chat template, and greedy ties in the export parity gate."""
import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import generation_recipe, write_recipe

from edgeft import EdgeftError
from edgeft.cli import cli
from edgeft.core.models import resolve_model
from edgeft.generation.parity import first_difference
from edgeft.generation.templates import TEMPLATES, has_chat_template


def without_template(tiny_llama, folder):
    shutil.copytree(tiny_llama, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    return folder


def test_a_base_without_a_chat_template_is_refused_before_any_work(tiny_llama, tmp_path):
    assert has_chat_template(resolve_model("smollm2")) and has_chat_template(tiny_llama)
    base = without_template(tiny_llama, tmp_path / "base-model")
    assert not has_chat_template(base)
    path = write_recipe(tmp_path / "recipe.yaml", generation_recipe(base))
    result = CliRunner().invoke(cli, ["run", str(path), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert f"model.base: {base} has no chat template (a base model, not an instruct one)" in result.output
    assert "--set data.chat_template=NAME" in result.output and "chatml, gemma" in result.output
    assert not (tmp_path / "run" / "data").exists()  # refused before the data stage
    wrong = CliRunner().invoke(cli, ["run", str(path), "-o", str(tmp_path / "run"), "--set", "data.chat_template=chatm"])
    assert wrong.exit_code == 2 and "data.chat_template: 'chatm' is neither a template edgeft names" in wrong.output


def test_the_recipes_template_trains_merges_and_ships(tiny_llama, tmp_path):
    from edgeft.core.recipe import recipe_from_dict
    from edgeft.runtime import load
    from edgeft.stages.data import prepare_data
    from edgeft.stages.export import export
    from edgeft.stages.merge import merge
    from edgeft.stages.tune import tune

    base = without_template(tiny_llama, tmp_path / "base-model")
    recipe = recipe_from_dict(generation_recipe(base, data={"chat_template": "gemma"}, tune={"max_steps": 2},
                                                export={"backends": ["genai"], "parity_samples": 2},
                                                quantize={"variants": []}))
    prepare_data(recipe, tmp_path / "data")
    tune(recipe, tmp_path / "data", tmp_path / "tune", progress=False)
    merge(recipe, tmp_path / "tune", tmp_path / "merge")
    assert (tmp_path / "merge/chat_template.jinja").read_text() == TEMPLATES["gemma"]
    export(recipe, tmp_path / "merge", tmp_path / "export", backend="genai")
    generator = load(tmp_path / "export")
    text = generator.chat_text([{"role": "user", "content": "Who?"}])
    # the runtime's flattened template: BOS, Gemma's turns, the recipe's system prompt, the model's turn open
    assert text == (f"{generator.tokenizer.id_to_token(1)}<start_of_turn>system\n{recipe.data.system_prompt}<end_of_turn>\n"
                    "<start_of_turn>user\nWho?<end_of_turn>\n<start_of_turn>model\n")


def test_a_greedy_difference_at_a_tie_counts_as_agreeing_and_elsewhere_not():
    steps = [np.array([0.0, 5.0, 1.0]), np.array([2.0, 2.0 - 4e-4, 0.0]), np.array([3.0, 0.0, 1.0])]
    assert first_difference([1, 0, 0], [1, 0, 0], steps, 1e-3) is None
    tie = first_difference([1, 0, 2], [1, 1, 0], steps, 1e-3)  # step 1: 0 and 1 are 4e-4 apart
    assert tie["step"] == 1 and tie["tie"] and tie["logit_gap"] == pytest.approx(4e-4)
    assert not first_difference([1, 0, 0], [1, 0, 2], steps, 1e-3)["tie"]  # step 2: 2 logits apart
    with pytest.raises(EdgeftError, match="is neither a template edgeft names"):
        from edgeft.generation.templates import resolve
        resolve("no template here")


def test_an_imported_tokenizer_that_splits_text_otherwise_than_the_gguf_is_refused():
    """The import checks transformers' rebuilt tokenizer against llama.cpp's on the GGUF itself (with
    transformers 4.57, Gemma 3's came out cutting text into twice as many pieces)."""
    from transformers import AutoTokenizer

    from edgeft.generation.spm import sentencepiece_model
    from edgeft.stages.importer import check_tokenizer

    if os.environ.get("EDGEFT_REQUIRE_GGUF") != "1":
        pytest.importorskip("llama_cpp", reason="the gguf extra (edgeft llamacpp-setup) is not installed")
    gguf = resolve_model("smollm2")
    check_tokenizer(gguf, AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name))  # agrees
    other = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    with pytest.raises(EdgeftError, match=r"the tokenizer transformers rebuilds from this GGUF splits text differently "
                                          r"from the GGUF's own \(\d+ tokens against llama.cpp's \d+ for 'Where is"):
        check_tokenizer(gguf, other)
    assert sentencepiece_model(gguf) is None  # SmolLM2's vocabulary is byte-level BPE, not SentencePiece
