import json

import pytest

from edgeft import EdgeftError
from edgeft.core.recipe import recipe_from_dict
from edgeft.stages.data import load_split, prepare_data, read_rows


def prepare(tmp_path, name="data", **data):
    recipe = recipe_from_dict({"data": {"source": "sms-spam-sample", "positive_label": "spam", **data}})
    return prepare_data(recipe, tmp_path / name), tmp_path / name


def test_sample_split_is_stratified_deduplicated_and_complete(tmp_path):
    manifest, out = prepare(tmp_path)
    splits = {s: load_split(out, s) for s in ("train", "validation", "test")}
    rows = read_rows(recipe_from_dict({"data": {"source": "sms-spam-sample"}}).data)
    unique_texts = {r["text"] for r in rows}
    assert sum(len(v) for v in splits.values()) == len(unique_texts)
    assert manifest.metrics["duplicates_removed"] == len(rows) - len(unique_texts)
    texts = [{r["text"] for r in v} for v in splits.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    overall = sum(r["label"] == "spam" for r in rows) / len(rows)
    for part in splits.values():
        assert abs(sum(r["label"] == "spam" for r in part) / len(part) - overall) < 0.04
    assert len(splits["test"]) == round(len(unique_texts) * 0.15)


def test_split_is_deterministic_and_follows_the_seed(tmp_path):
    _, a = prepare(tmp_path, "a")
    _, b = prepare(tmp_path, "b")
    assert (a / "test.jsonl").read_text() == (b / "test.jsonl").read_text()
    recipe = recipe_from_dict({"seed": 7, "data": {"source": "sms-spam-sample"}})
    prepare_data(recipe, tmp_path / "c")
    assert (a / "test.jsonl").read_text() != (tmp_path / "c" / "test.jsonl").read_text()


def test_user_csv_with_its_own_column_names(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("body,kind\n" + "".join(f"message number {i},{'bad' if i % 4 == 0 else 'good'}\n"
                                             for i in range(40)))
    _, out = prepare(tmp_path, source=str(path), text_column="body", label_column="kind", positive_label="bad")
    train = load_split(out, "train")
    assert {r["label"] for r in train} == {"bad", "good"}
    assert json.loads((out / "labels.json").read_text())["labels"] == ["bad", "good"]


def test_missing_label_column_names_the_field_and_the_columns(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("body,kind\nhello,good\n")
    with pytest.raises(EdgeftError) as err:
        prepare(tmp_path, source=str(path), text_column="body", label_column="label")
    assert "data.label_column: 'label' is not a column" in str(err.value)
    assert "columns: body, kind" in str(err.value)


def test_empty_dataset_and_missing_file_are_refused(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(EdgeftError, match="has no rows"):
        prepare(tmp_path, source=str(empty))
    with pytest.raises(EdgeftError, match="data.source: file not found: nowhere.csv"):
        prepare(tmp_path, source="nowhere.csv")
    assert not (tmp_path / "data").exists()


def test_positive_label_must_exist(tmp_path):
    with pytest.raises(EdgeftError, match="data.positive_label: 'junk' is not a label"):
        prepare(tmp_path, positive_label="junk")


def test_broken_jsonl_line_is_named(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{oops\n')
    with pytest.raises(EdgeftError, match="chat.jsonl:2: not valid JSON"):
        read_rows(recipe_from_dict({"data": {"source": str(path)}}).data)
