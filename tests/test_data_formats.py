"""Data as users have it: each file written by the tool that makes it (Excel-style csv with a
byte-order mark, pandas, datasets' save_to_disk), each chat shape, and the errors of each, read back
from the splits the data stage writes."""
import csv
import json

import pytest
from click.testing import CliRunner

from edgeft import EdgeftError
from edgeft.cli import cli
from edgeft.core.recipe import recipe_from_dict
from edgeft.stages.data import load_split, prepare_data

LABELS = ("billing", "delivery", "refund")
ROWS = [{"body": f"ticket {i}: où est ma commande n°{i}; merci", "kind": LABELS[i % 3]} for i in range(45)]


def prepare(tmp_path, source, task="classification", **data):
    recipe = recipe_from_dict({"task": task, "data": {"source": str(source), **data}})
    return prepare_data(recipe, tmp_path / "data"), tmp_path / "data"


def all_rows(out):
    return [r for split in ("train", "validation", "test") for r in load_split(out, split)]


def assert_labelled(tmp_path, source, **data):
    manifest, out = prepare(tmp_path, source, text_column="body", label_column="kind", **data)
    rows = all_rows(out)
    assert sorted(r["text"] for r in rows) == sorted(r["body"] for r in ROWS)
    assert {r["text"]: r["label"] for r in rows} == {r["body"]: r["kind"] for r in ROWS}
    assert manifest.metrics["rows_read"] == len(ROWS) and manifest.inputs[0]["fingerprint"] != "unknown"


def test_excel_csv_with_byte_order_mark_and_semicolons(tmp_path):
    path = tmp_path / "excel.csv"
    with open(path, "w", encoding="utf-8-sig", newline="") as f:  # what Excel's "CSV UTF-8" writes in Europe
        writer = csv.writer(f, delimiter=";")
        writer.writerow(["body", "kind"])
        writer.writerows([r["body"], r["kind"]] for r in ROWS)
    assert path.read_bytes().startswith(b"\xef\xbb\xbfbody;kind")
    assert_labelled(tmp_path, path)


def test_tsv_parquet_and_jsonl_written_by_pandas(tmp_path):
    import pandas as pd

    frame = pd.DataFrame(ROWS)
    writers = {"tickets.tsv": lambda p: frame.to_csv(p, sep="\t", index=False),
               "tickets.parquet": lambda p: frame.to_parquet(p),
               "tickets.jsonl": lambda p: frame.to_json(p, orient="records", lines=True, force_ascii=False),
               "tickets.json": lambda p: frame.to_json(p, orient="records", force_ascii=False)}
    for name, write in writers.items():
        write(tmp_path / name)
        assert_labelled(tmp_path / name.replace(".", "_"), tmp_path / name)


def test_save_to_disk_folders_dataset_and_dataset_dict(tmp_path):
    import datasets

    whole = datasets.Dataset.from_list(ROWS)
    whole.save_to_disk(str(tmp_path / "one"))
    assert_labelled(tmp_path / "a", tmp_path / "one")
    parts = whole.train_test_split(test_size=0.2, seed=0)  # a DatasetDict: every split is read
    parts.save_to_disk(str(tmp_path / "two"))
    assert_labelled(tmp_path / "b", tmp_path / "two")


def test_labels_stay_text(tmp_path):
    path = tmp_path / "codes.csv"
    path.write_text("text,label\n" + "".join(f"row {i},{'01' if i % 2 else '10'}\n" for i in range(20)))
    _, out = prepare(tmp_path, path)
    assert json.loads((out / "labels.json").read_text())["labels"] == ["01", "10"]


CHATS = [(f"What is {i} plus {i}?", str(2 * i)) for i in range(30)]


def shaped(shape, question, answer):
    return {"messages": {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]},
            "sharegpt": {"conversations": [{"from": "system", "value": "Add."}, {"from": "human", "value": question},
                                           {"from": "gpt", "value": answer}]},
            "alpaca": {"instruction": "Add the numbers.", "input": question, "output": answer}}[shape]


@pytest.mark.parametrize("shape", ["messages", "sharegpt", "alpaca"])
def test_each_chat_shape_is_detected_and_becomes_messages(tmp_path, shape):
    path = tmp_path / f"{shape}.json"
    path.write_text(json.dumps([shaped(shape, q, a) for q, a in CHATS]))  # ShareGPT and Alpaca ship JSON arrays
    _, out = prepare(tmp_path, path, task="generation")
    rows = all_rows(out)
    assert len(rows) == len(CHATS)
    by_answer = {r["answer"]: r["messages"] for r in rows}
    messages = by_answer["14"]
    assert messages[-1] == {"role": "assistant", "content": "14"}
    assert "What is 7 plus 7?" in messages[-2]["content"] and messages[-2]["role"] == "user"
    if shape == "sharegpt":
        assert messages[0] == {"role": "system", "content": "Add."}
    if shape == "alpaca":
        assert messages[0]["content"] == "Add the numbers.\n\nWhat is 7 plus 7?"


def test_chat_columns_and_format_map_a_renamed_file(tmp_path):
    path = tmp_path / "renamed.jsonl"
    path.write_text("".join(json.dumps({"dialog": shaped("sharegpt", q, a)["conversations"]}) + "\n" for q, a in CHATS))
    with pytest.raises(EdgeftError, match=r"data.text_column: 'text' is not a column .* \(columns: dialog\)"):
        prepare(tmp_path, path, task="generation")  # nothing to detect: read as labelled rows
    with pytest.raises(EdgeftError, match=r"data.format: sharegpt reads the column\(s\) conversations, which the "
                                          r"file lacks \(columns: dialog\)"):
        prepare(tmp_path, path, task="generation", format="sharegpt")
    _, out = prepare(tmp_path, path, task="generation", format="sharegpt", chat_columns={"conversations": "dialog"})
    assert len(all_rows(out)) == len(CHATS)


def test_bad_chat_rows_name_their_row_and_field_and_write_nothing(tmp_path):
    cases = {
        "who.jsonl": ([shaped("sharegpt", "hi", "yo"), {"conversations": [{"from": "robot", "value": "x"}]}],
                      r"who.jsonl:2 'conversations'\[0\]: 'from' must be one of .* \(got from='robot'\)"),
        "empty.jsonl": ([shaped("alpaca", "hi", "yo"), shaped("alpaca", "a", "b"), shaped("alpaca", "q", "")],
                        r"empty.jsonl:3 'output': must be a non-empty string"),
        "last.jsonl": ([{"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}],
                       r"last.jsonl:1: the last turn must be the assistant's answer \(it is user's\)"),
    }
    for name, (rows, message) in cases.items():
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(EdgeftError, match=message):
            prepare(tmp_path, path, task="generation")
    result = CliRunner().invoke(cli, ["data", "-o", str(tmp_path / "d"), "-r", "assistant-trec-smollm2",
                                      "--set", f"data.source={tmp_path / 'who.jsonl'}"])
    assert result.exit_code == 2 and "'from' must be one of" in result.output
    assert not (tmp_path / "d").exists() and not (tmp_path / "data").exists()


def test_a_csv_row_with_too_many_fields_names_its_line(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("text,label\n" + "".join(f"row {i},a\n" for i in range(5)) + "one,two,three\n")
    with pytest.raises(EdgeftError, match=r"ragged.csv cannot be read as csv: .*line 7, saw 3"):
        prepare(tmp_path, path)


@pytest.mark.parametrize("task", ["classification", "generation"])
def test_tune_reads_a_memory_mapped_split_batch_for_batch_as_the_list(tmp_path, tiny_bert, tiny_llama, task):
    from transformers import AutoTokenizer

    from edgeft.core.splits import open_split
    from edgeft.core.tasks import get_task

    recipe = {"classification": {"data": {"source": "sms-spam-sample"}},
              "generation": {"task": "generation", "data": {"source": "trec-sample"}}}[task]
    prepare_data(recipe_from_dict(recipe), tmp_path / "data")
    mapped, listed = open_split(tmp_path / "data", "train"), load_split(tmp_path / "data", "train")
    assert type(mapped).__name__ == "Dataset" and mapped.num_rows == len(listed)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert if task == "classification" else tiny_llama)
    labels = sorted({r["label"] for r in listed})
    a, b = (get_task(task).examples(rows, tokenizer, 64, labels) for rows in (mapped, listed))
    assert a.lengths == b.lengths and min(a.lengths) > 3
    assert not [k for k, v in vars(a).items() if isinstance(v, list) and k != "lengths" and len(v) == len(listed)]
    indices = a.batches(8, seed=0)[2]
    plain = b.batch(indices)
    for key, value in a.batch(indices).items():
        assert getattr(value, "tolist", lambda: value)() == getattr(plain[key], "tolist", lambda: plain[key])(), key
