import pytest

from edgeft import EdgeftError
from edgeft.core.recipe import load_recipe, recipe_from_dict, resolve_recipe_path


def test_default_recipe_is_the_sms_spam_classifier():
    recipe = load_recipe()
    assert recipe.name == "sms-spam-minilm"
    assert recipe.task == "classification"
    assert recipe.model.base == "minilm" and recipe.data.source == "sms-spam"
    assert [v.method for v in recipe.quantize.variants] == ["dynamic", "static", "int4"]


def test_every_builtin_recipe_validates():
    from edgeft.core.recipe import builtin_recipes

    paths = list(builtin_recipes().values())
    assert paths
    for path in paths:
        assert load_recipe(path).name == path.stem


def test_misspelled_key_is_rejected_with_its_dotted_path_and_a_suggestion(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("tune:\n  learnig_rate: 0.1\n")
    with pytest.raises(EdgeftError) as err:
        load_recipe(path)
    assert "tune.learnig_rate: unknown key" in str(err.value)
    assert "did you mean 'learning_rate'" in str(err.value)


def test_unknown_key_in_a_list_item_names_its_index():
    with pytest.raises(EdgeftError, match=r"quantize\.variants\.1\.blocksize: unknown key"):
        recipe_from_dict({"quantize": {"variants": [{"name": "a", "method": "dynamic"},
                                                    {"name": "b", "method": "int4", "blocksize": 64}]}})


def test_wrong_type_and_range_are_reported_by_field():
    with pytest.raises(EdgeftError) as err:
        recipe_from_dict({"tune": {"epochs": "many", "lora": {"r": 0}}})
    assert "tune.epochs" in str(err.value) and "tune.lora.r" in str(err.value)


def test_set_overrides_nested_fields_and_list_items():
    recipe = load_recipe(None, ["tune.lora.r=32", "tune.method=lora", "bench.threads=[1, 4]",
                                "quantize.variants.2.block_size=64", "data.positive_label=ham"])
    assert recipe.tune.lora.r == 32 and recipe.tune.method == "lora"
    assert recipe.bench.threads == [1, 4]
    assert recipe.quantize.variants[2].block_size == 64
    assert recipe.data.positive_label == "ham"


def test_set_validates_like_the_file():
    with pytest.raises(EdgeftError, match="tune.method"):
        load_recipe(None, ["tune.method=full"])
    with pytest.raises(EdgeftError, match="expects key=value"):
        load_recipe(None, ["tune.method"])
    with pytest.raises(EdgeftError, match="no item 7"):
        load_recipe(None, ["quantize.variants.7.name=x"])


def test_duplicate_variant_names_are_rejected():
    with pytest.raises(EdgeftError, match="unique: a"):
        recipe_from_dict({"quantize": {"variants": [{"name": "a", "method": "dynamic"},
                                                    {"name": "a", "method": "int4"}]}})


def test_missing_recipe_lists_the_builtin_ones():
    with pytest.raises(EdgeftError, match="recipe not found: nope.*sms-spam-minilm"):
        resolve_recipe_path("nope")


def test_a_grid_trained_recipe_keeps_its_int4_variants_on_the_grid_and_gguf_on_its_source():
    with pytest.raises(EdgeftError, match=r"int4\): block_size 64, head_bits 8 is not the grid the adapter "
                                          r"trains against \(tune.grid_block_size 32, grid_head_bits 8\)"):
        load_recipe("assistant-trec-smollm2", ["tune.grid_block_size=32"])
    recipe = load_recipe("assistant-trec-smollm2", ["tune.grid_block_size=32", "quantize.variants.0.block_size=32",
                                                    "quantize.variants.1.block_size=32"])
    assert recipe.tune.grid_block_size == 32
    with pytest.raises(EdgeftError, match="llama.cpp types .method gguf. are made from source 'gguf'"):
        recipe_from_dict({"task": "generation", "export": {"backends": ["genai"]},
                          "quantize": {"variants": [{"name": "q", "source": "genai", "method": "gguf"}]}})
    with pytest.raises(EdgeftError, match="'gguf' exports decoders"):
        recipe_from_dict({"export": {"backends": ["gguf"]}, "quantize": {"variants": []}})
