"""A user's data file as a `datasets.Dataset` (Arrow on disk, memory-mapped), whatever wrote it.

Users arrive with what Excel, pandas or `datasets` wrote: a CSV with a byte-order mark or `;`
between fields, a TSV, JSON or JSON Lines, Parquet, or a `save_to_disk` folder. Hugging Face
`datasets` reads each into Arrow files in edgeft's cache, so a million rows cost little memory and a
second run reuses them. This module only picks the reader and its options (a CSV's delimiter and
byte-order mark are sniffed; every CSV cell is read as text, so a label "01" stays "01"), and turns
a reader's error into one line that names the file and the line or row.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from edgeft import EdgeftError, cache_dir

# file suffix -> the `datasets` packaged builder that reads it
READERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
DELIMITERS = ",;\t|"
SNIFF_BYTES = 64 * 1024


def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(logging.CRITICAL)  # its own "Failed to read" lines: ours say more
    return datasets


def open_table(path: Path, encoding: str = "utf-8"):
    """The file or `save_to_disk` folder at `path` as one `datasets.Dataset`."""
    path = Path(path)
    if path.is_dir():
        return _from_disk(path)
    builder = READERS.get(path.suffix.lower())
    if builder is None:
        raise EdgeftError(f"data.source: {path} is not a file edgeft reads: give a "
                          f"{', '.join(READERS)} file or a folder written by datasets' save_to_disk")
    if path.stat().st_size == 0:
        raise EdgeftError(f"data.source: {path} is empty: a CSV needs a header row and at least one row"
                          if builder == "csv" else f"data.source: {path} is empty")
    options = csv_options(path, encoding) if builder == "csv" else {}
    datasets = _quiet_datasets()
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=str(cache_dir("datasets")),
                                     **options)
    except Exception as e:  # the reader's error, explained with the file's line where it can be found
        raise EdgeftError(explain(path, builder, e.__cause__ or e, encoding)) from None


def _from_disk(path: Path):
    datasets = _quiet_datasets()
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise EdgeftError(f"data.source: {path} is a folder but not one written by datasets' save_to_disk "
                          "(no dataset_info.json / state.json)") from None
    if isinstance(loaded, datasets.DatasetDict):  # edgeft splits the rows itself: every split is read
        return datasets.concatenate_datasets([loaded[name] for name in sorted(loaded)])
    return loaded


def csv_options(path: Path, encoding: str) -> dict:
    """The CSV reader's options: the encoding (a byte-order mark stripped), the delimiter (tab for
    .tsv, else sniffed among , ; tab |), and every column read as text."""
    import datasets

    head = path.open("rb").read(SNIFF_BYTES)
    if encoding.replace("-", "").replace("_", "").lower() == "utf8" and head.startswith(b"\xef\xbb\xbf"):
        encoding = "utf-8-sig"
    try:
        sample = head.decode(encoding, errors="ignore")
    except LookupError:
        raise EdgeftError(f"data.encoding: unknown encoding '{encoding}'") from None
    if path.suffix.lower() == ".tsv":
        sep = "\t"
    else:
        try:
            sep = csv.Sniffer().sniff("\n".join(sample.split("\n")[:20]), delimiters=DELIMITERS).delimiter
        except csv.Error:
            sep = ","
    header = next(csv.reader([sample.lstrip("\ufeff").split("\n", 1)[0]], delimiter=sep), [])
    features = datasets.Features({name: datasets.Value("string") for name in header})
    return {"sep": sep, "encoding": encoding, "features": features, "keep_default_na": False}


def explain(path: Path, builder: str, error: BaseException, encoding: str) -> str:
    """One line for a reader's error: the bad byte of a wrongly encoded file, the first line that is
    not JSON, or the reader's own words with the file's name."""
    if isinstance(error, UnicodeDecodeError):
        return bad_encoding(path, encoding)
    if builder == "json":
        found = first_bad_json_line(path, encoding)
        if found:
            return found
    if "corresponds to no data" in str(error):  # a header and no rows
        return f"data.source: {path} has no rows"
    if isinstance(error, LookupError):
        return f"data.encoding: unknown encoding '{encoding}'"
    return f"data.source: {path} cannot be read as {builder}: {str(error).strip()}"


def bad_encoding(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    try:
        raw.decode(encoding.replace("utf-8-sig", "utf-8"))
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        return (f"{path}: not valid {encoding} at byte {e.start} (line {line}): set data.encoding to the "
                "file's encoding, e.g. --set data.encoding=latin-1")
    return f"{path}: not valid {encoding}"


def first_bad_json_line(path: Path, encoding: str) -> str | None:
    """Where a JSON Lines file first breaks (a .json file holding one array is not read by lines)."""
    with open(path, encoding=encoding, errors="replace") as f:
        if f.read(1) == "[":
            return None
        f.seek(0)
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                return f"{path}:{number}: not valid JSON ({e.msg})"
            if not isinstance(row, dict):
                return f"{path}:{number}: each line must be a JSON object, this one is a {type(row).__name__}"
    return None


def column(table, name: str) -> list:
    """One column's values as Python objects (read from the memory-mapped Arrow table)."""
    return table.data.column(name).to_pylist()
