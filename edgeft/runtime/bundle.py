"""Reading and checking an artifact folder's manifest: the sha256 of every file it lists.

The device side needs this before it loads a bundle, so it lives here with nothing heavier than
hashlib; the host's artifact code (core/artifacts.py) builds on it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.files import MANIFEST


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_files(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file below `folder` (the manifest itself excluded)."""
    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST or "/__pycache__/" in f"/{rel}":
            continue
        files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return files


def verify_files(folder: Path, files: dict[str, dict]) -> None:
    for rel, meta in files.items():
        path = Path(folder) / rel
        if not path.is_file():
            raise EdgeftError(f"{path} is missing (listed in {Path(folder) / MANIFEST})")
        if path.stat().st_size != meta["bytes"] or sha256_file(path) != meta["sha256"]:
            raise EdgeftError(f"{path} is damaged: its sha256 does not match {Path(folder) / MANIFEST}")


def read_manifest(folder: Path | str, *, stage: str | tuple[str, ...] | None = None, what: str = "input",
                  verify: bool = True) -> dict:
    """Read and check an artifact folder; raise EdgeftError naming the folder or file at fault.

    The manifest comes back with `_folder` set to where it was read, so that the relative paths
    of its inputs can be resolved.
    """
    folder = Path(folder)
    if not folder.exists():
        raise EdgeftError(f"{what} folder not found: {folder}")
    if not folder.is_dir():
        raise EdgeftError(f"{what} is not a folder: {folder}")
    path = folder / MANIFEST
    if not path.exists():
        hint = " (an interrupted stage leaves no manifest: run it again)" if any(folder.iterdir()) else ""
        raise EdgeftError(f"{what} {folder} has no {MANIFEST}: it is not an edgeft artifact{hint}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgeftError(f"{path} is damaged: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or "stage" not in manifest or "files" not in manifest:
        raise EdgeftError(f"{path} is damaged: it lacks 'stage' or 'files'")
    stages = (stage,) if isinstance(stage, str) else stage
    if stages and manifest["stage"] not in stages:
        raise EdgeftError(f"{what} {folder} is a '{manifest['stage']}' artifact; expected "
                          + " or ".join(f"'{s}'" for s in stages))
    if verify:
        verify_files(folder, manifest["files"])
    manifest["_folder"] = str(folder)
    return manifest


def expect_task(manifest: dict, task: str, what: str) -> None:
    if manifest.get("task") != task:
        raise EdgeftError(f"{manifest.get('_folder')} holds a '{manifest.get('task')}' model, not {what}")
