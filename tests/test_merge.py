"""merge: the parity gate refuses a merge that is not what was trained."""
import csv

import pytest
from conftest import classification_recipe

from edgeft import EdgeftError
from edgeft.core.recipe import recipe_from_dict
from edgeft.stages.data import prepare_data, read_rows
from edgeft.stages.merge import merge
from edgeft.stages.tune import tune


@pytest.fixture(scope="module")
def wide_weight_bert(tmp_path_factory):
    """A tiny BERT whose weights spread far (init std 0.5): NF4 approximates it poorly, so the fp32 merge
    of an adapter trained on its 4-bit copy does not compute what was trained."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from edgeft.core.models import resolve_model

    folder = tmp_path_factory.mktemp("wide-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128, max_position_embeddings=128, initializer_range=0.5)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_gate_refuses_a_merge_that_drifts_from_the_nf4_model_that_was_trained(tmp_path, wide_weight_bert):
    # a balanced slice of the SMS sample, so that the predictions the gate compares vary
    rows = read_rows(recipe_from_dict({"data": {"source": "sms-spam-sample"}}).data)
    spam = [r for r in rows if r["label"] == "spam"]
    ham = [r for r in rows if r["label"] == "ham"][:len(spam)]
    with open(tmp_path / "balanced.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "label": r["label"]} for r in spam + ham)
    recipe = recipe_from_dict(classification_recipe(
        wide_weight_bert, data={"source": str(tmp_path / "balanced.csv"), "validation_fraction": 0.3},
        tune={"method": "qlora", "max_steps": 10, "learning_rate": 1e-2}, merge={"min_agreement": 0.98}))
    prepare_data(recipe, tmp_path / "data")
    tune(recipe, tmp_path / "data", tmp_path / "tune", progress=False)
    with pytest.raises(EdgeftError) as err:
        merge(recipe, tmp_path / "tune", tmp_path / "merge")
    message = str(err.value)
    assert message.startswith("merge refused: the merged model agrees with what was trained (NF4 base + adapter)")
    assert "below merge.min_agreement 98.0%" in message
    assert not (tmp_path / "merge").exists() and not (tmp_path / "merge.partial").exists()

    # the same merge passes a gate set below the agreement it measured, and records it
    agreement = float(message.split(" on ")[1].split("%")[0]) / 100
    lenient = recipe.model_copy(update={"merge": recipe.merge.model_copy(update={"min_agreement": agreement - 0.01})})
    checks = merge(lenient, tmp_path / "tune", tmp_path / "merge").metrics
    assert checks["vs_trained_nf4"]["agreement"] == pytest.approx(agreement, abs=1e-3)
    assert checks["vs_trained_nf4"]["max_abs_logit_diff"] > 0.5  # the NF4 gap, far above ...
    assert checks["vs_adapter_fp32"]["max_abs_logit_diff"] < 1e-3  # ... the merge arithmetic itself
