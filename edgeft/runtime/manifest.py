"""manifest.json: what an artifact folder (or a bundle) is, what it came from, and the sha256 of
every file in it, read and checked before anything in the folder is used.

The device side needs this before it loads a bundle, so it lives here with nothing heavier than
hashlib and dataclasses; the host's artifact code (core/artifacts.py) builds on it. A manifest
records the format it was written in (`edgeft_manifest`); a newer format than this runtime reads
is refused by name, not misread.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.files import MANIFEST

FORMAT_VERSION = 1  # of manifest.json: raised when a reader of the last format would misread a new one
FORMAT_KEY = "edgeft_manifest"


@dataclass
class Manifest:
    """One artifact folder's manifest.json. `folder` (where it was read) and `reused` (a stage found
    it up to date and skipped its work) describe this reading of it and are never written."""
    stage: str
    files: dict[str, dict] = field(default_factory=dict)  # relative path -> {"sha256", "bytes"}
    task: str | None = None
    created: str | None = None
    inputs: list[dict] = field(default_factory=list)  # {"role", "path", "stage", "fingerprint"}
    config: dict = field(default_factory=dict)  # the settings the stage ran with
    config_sha256: str | None = None
    versions: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # a model (merge, export, quantize, package)
    variant: str | None = None
    backend: str | None = None  # the exporter: optimum, genai, gguf
    format: str | None = None  # onnx, pytorch, gguf
    precision: str | None = None
    labels: list[str] = field(default_factory=list)
    lm_head: str | None = None  # which positions an exported decoder computes logits for
    details: dict = field(default_factory=dict)  # what the quantizer and the graph edits did
    base_sha256: str | None = None  # an unmerged LoRA base: the identity of its weights
    gguf_type: str | None = None
    # a bundle (package) and an adapter bundle (adapter)
    self_checks: dict = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)
    adapter_name: str | None = None
    adapter_file: str | None = None
    base_variant: str | None = None
    # an imported GGUF base (import)
    architecture: str | None = None
    source_file: str | None = None
    chat_template: bool | None = None
    # this reading of it
    folder: Path | None = field(default=None, compare=False, repr=False)
    reused: bool = field(default=False, compare=False, repr=False)

    LOCAL = ("folder", "reused")

    def to_json(self) -> dict[str, Any]:
        """The file's content: the format first, the files last, empty optional fields left out."""
        data = {FORMAT_KEY: self.format_version}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in (*self.LOCAL, "format_version", "files") or value in (None, {}, []) and f.name in OPTIONAL:
                continue
            data[f.name] = value
        return {**data, "files": self.files}

    @classmethod
    def from_json(cls, data: Any, path: Path) -> Manifest:
        if not isinstance(data, dict) or "stage" not in data or "files" not in data:
            raise EdgeftError(f"{path} is damaged: it lacks 'stage' or 'files'")
        version = data.get(FORMAT_KEY, 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            from edgeft.runtime import __version__
            raise EdgeftError(f"{path} was written in manifest format {version}, newer than the format "
                              f"{FORMAT_VERSION} this edgeft-runtime {__version__} reads: upgrade edgeft-runtime "
                              "(pip install -U edgeft-runtime, or the wheel in a newer bundle)")
        known = {f.name for f in dataclasses.fields(cls)} - set(cls.LOCAL) - {"format_version"}
        unknown = sorted(set(data) - known - {FORMAT_KEY})
        if unknown:
            raise EdgeftError(f"{path} is damaged: unknown field(s) {', '.join(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in known}, format_version=version)

    def input(self, role: str) -> dict | None:
        """The input reference with this role, if the artifact has one."""
        return next((r for r in self.inputs if r["role"] == role), None)


OPTIONAL = {f.name for f in dataclasses.fields(Manifest)} - {"stage", "task", "created", "inputs", "config",
                                                             "config_sha256", "versions", "metrics"}


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


def save_manifest(manifest: Manifest, folder: Path) -> None:
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2, default=str) + "\n")


def read_manifest(folder: Path | str, *, stage: str | tuple[str, ...] | None = None, what: str = "input",
                  verify: bool = True) -> Manifest:
    """Read and check an artifact folder; raise EdgeftError naming the folder or file at fault."""
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
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgeftError(f"{path} is damaged: not valid JSON ({e})") from None
    manifest = Manifest.from_json(data, path)
    stages = (stage,) if isinstance(stage, str) else stage
    if stages and manifest.stage not in stages:
        raise EdgeftError(f"{what} {folder} is a '{manifest.stage}' artifact; expected "
                          + " or ".join(f"'{s}'" for s in stages))
    if verify:
        verify_files(folder, manifest.files)
    manifest.folder = folder
    return manifest


def expect_task(manifest: Manifest, task: str, what: str) -> None:
    if manifest.task != task:
        raise EdgeftError(f"{manifest.folder} holds a '{manifest.task}' model, not {what}")
