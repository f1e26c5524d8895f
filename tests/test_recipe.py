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
    with pytest.raises(EdgeftError, match=r"quantize.variants.0 \(q\): no variant kind 'genai:gguf' \(source:method\) "
                                          r"for task generation \(known: genai:int4, genai:int8-weights, gguf:gguf, "):
        recipe_from_dict({"task": "generation", "export": {"backends": ["genai"]},
                          "quantize": {"variants": [{"name": "q", "source": "genai", "method": "gguf"}]}})
    with pytest.raises(EdgeftError, match=r"export.backends: 'gguf' does not export classification models \(use optimum\)"):
        recipe_from_dict({"export": {"backends": ["gguf"]}, "quantize": {"variants": []}})


def test_each_task_has_its_own_fields_and_variant_kinds():
    """A generation field on a classifier's recipe, and a classifier-only kind on a decoder's, are refused."""
    with pytest.raises(EdgeftError, match="data.system_prompt: unknown key"):
        recipe_from_dict({"data": {"system_prompt": "Be brief."}})
    generation = recipe_from_dict({"task": "generation", "data": {"system_prompt": "Be brief."}})
    assert generation.data.system_prompt == "Be brief." and type(generation).__name__ == "GenerationRecipe"
    assert [(v.source, v.method) for v in generation.quantize.variants] == [("optimum", "dynamic"), ("optimum", "int4")]
    with pytest.raises(EdgeftError, match="no variant kind 'optimum:static' .source:method. for task generation"):
        recipe_from_dict({"task": "generation", "quantize": {"variants": [{"name": "s", "method": "static"}]}})
    with pytest.raises(EdgeftError, match="quantize.variants.0.kv_cache: unknown key"):
        recipe_from_dict({"task": "generation", "quantize": {"variants": [{"name": "k", "method": "int4",
                                                                            "kv_cache": "int8"}]}})
    with pytest.raises(EdgeftError, match=r"task: unknown task 'vision' \(known: classification, generation\)"):
        recipe_from_dict({"task": "vision"})


def test_every_variant_kind_is_registered_by_the_module_that_builds_it():
    from edgeft.core.recipe import load_recipe
    from edgeft.core.variants import kind_of, kinds_for

    expected = {("classification", "optimum", "dynamic"): "edgeft.quantizers.dynamic",
                ("classification", "optimum", "static"): "edgeft.classification.quantize",
                ("classification", "optimum", "int4"): "edgeft.classification.quantize",
                ("generation", "optimum", "dynamic"): "edgeft.quantizers.dynamic",
                ("generation", "optimum", "int4"): "edgeft.generation.weight_only",
                ("generation", "genai", "int8-weights"): "edgeft.generation.weight_only",
                ("generation", "gguf", "gguf"): "edgeft.generation.gguf"}
    load_recipe("assistant-trec-smollm2")  # registers the generation kinds
    load_recipe("sms-spam-minilm")
    for (task, source, method), module in expected.items():
        kind = kind_of(task, source, method)
        assert kind.module == module and kind.config.__module__.startswith(("edgeft.quantizers", module))
    assert len(kinds_for("generation")) == 4 and len(kinds_for("classification")) == 3
    with pytest.raises(EdgeftError, match="no variant kind 'gguf:gguf' for task classification"):
        kind_of("classification", "gguf", "gguf")


def test_a_recipe_extends_another_and_states_only_what_differs(tmp_path):
    from edgeft.core.recipe import load_recipe

    base = load_recipe("assistant-trec-smollm2")
    child = tmp_path / "mine.yaml"
    child.write_text("extends: assistant-trec-smollm2\ntune: {epochs: 2}\n"
                     "quantize: {variants: [{name: int4, source: genai, method: int4, block_size: 64}]}\n")
    mine = load_recipe(child)
    assert mine.name == "mine" and mine.task == "generation" and mine.tune.epochs == 2
    assert mine.tune.lora == base.tune.lora and mine.data == base.data  # sections merge field by field
    assert [v.name for v in mine.quantize.variants] == ["int4"]  # a list replaces the base's whole
    assert load_recipe(child, ["tune.epochs=3"]).tune.epochs == 3
    (tmp_path / "b.yaml").write_text("extends: mine.yaml\nseed: 7\n")  # a file beside it, extended in turn
    assert load_recipe(tmp_path / "b.yaml").seed == 7 and load_recipe(tmp_path / "b.yaml").tune.epochs == 2
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(EdgeftError, match="'extends' loops back to it"):
        load_recipe(tmp_path / "loop.yaml")
    (tmp_path / "missing.yaml").write_text("extends: no-such-recipe\n")
    with pytest.raises(EdgeftError, match="recipe not found: no-such-recipe"):
        load_recipe(tmp_path / "missing.yaml")
    vs = load_recipe("assistant-trec-vs-llamacpp")  # the built-in variant recipe extends the assistant
    assert vs.data == base.data and vs.tune == base.tune and vs.export.backends == ["genai", "gguf"]
