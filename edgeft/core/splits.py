"""Reading a data artifact's splits and label information (written by the data stage)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeft.runtime.files import LABELS_FILE, split_file


def load_split(data_dir: Path, split: str) -> list[dict]:
    with open(Path(data_dir) / split_file(split), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def open_split(data_dir: Path, split: str):
    """A split memory-mapped through `datasets` (Arrow, in edgeft's cache): rows are read as they
    are used, so a split of a million examples is not held in memory (tune reads its splits so)."""
    from edgeft.core.datafiles import open_table

    return open_table(Path(data_dir) / split_file(split))


def load_labels(data_dir: Path) -> dict[str, Any]:
    return json.loads((Path(data_dir) / LABELS_FILE).read_text())
