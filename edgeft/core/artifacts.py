"""Artifact folders: every stage reads folders and writes one, described by manifest.json.

A manifest says what the folder is (stage, task), what it came from (the fingerprints of its
inputs and the config the stage ran with), the library versions used, the metrics measured and
the sha256 of every file in it. A stage refuses input whose manifest is missing or whose files
do not match it, and writes its own folder atomically: into `<out>.partial`, renamed at the end.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from edgeft import EdgeftError, __version__
from edgeft.runtime.files import ADAPTERS_DIR, MANIFEST, MODEL_FILE_SUFFIXES, PARTIAL_SUFFIX, RunLayout
from edgeft.runtime.machine import library_versions as runtime_versions
from edgeft.runtime.machine import machine_info
from edgeft.runtime.manifest import Manifest, hash_files, read_manifest, save_manifest, sha256_file

__all__ = ["Manifest", "machine_info", "read_manifest", "sha256_file"]  # the runtime's, re-exported for the host side
_VERSIONED = ("edgeft-runtime", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "optimum", "optimum-onnx",
              "onnx", "onnxruntime", "onnxruntime-genai", "tokenizers", "numpy", "llama-cpp-python")


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def source_commit() -> str | None:
    """The git commit of the edgeft source that runs, with "+dirty" when it has uncommitted changes;
    None for an installed copy that is no checkout. Every report and manifest records it."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if sha.returncode != 0:
        return None
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def library_versions() -> dict[str, str]:
    commit = source_commit()
    return {"edgeft": __version__, **({"edgeft-commit": commit} if commit else {}), **runtime_versions(_VERSIONED)}


def fingerprint(manifest: Manifest) -> str:
    """What identifies an artifact's content: its stage and the hashes of its files."""
    return sha256_json({"stage": manifest.stage, "files": manifest.files})


def input_ref(role: str, folder: Path, manifest: Manifest) -> dict[str, str]:
    return {"role": role, "path": str(Path(folder).resolve()), "stage": manifest.stage,
            "fingerprint": fingerprint(manifest)}


def final_folder(folder: Path) -> Path:
    """Where a stage's output ends up: `<out>.partial` is renamed to `<out>`."""
    folder = Path(folder).resolve()
    return folder.with_name(folder.name.removesuffix(PARTIAL_SUFFIX))


def portable_path(path: str, folder: Path) -> str:
    """An input's path as the manifest stores it: relative to the artifact when it lies in the same
    run folder (so that a run folder can move), absolute when it lies outside (a base model in
    site-packages, the user's data file)."""
    target, out = Path(path).resolve(), final_folder(folder)
    return os.path.relpath(target, out) if target.is_relative_to(RunLayout.of(out).root) else str(target)


def resolve_input(manifest: Manifest, ref: dict) -> Path:
    """The folder an input reference names, relative to the artifact that recorded it."""
    path = Path(ref["path"])
    if path.is_absolute():
        return path
    return Path(os.path.normpath(Path(manifest.folder or ".") / path))


def write_manifest(folder: Path, *, stage: str, task: str | None, inputs: list[dict], config: dict,
                   metrics: dict | None = None, **fields: Any) -> Manifest:
    """Record the artifact in `folder` (its `.partial` while a stage writes it): what it is, what
    it came from, the settings, versions and metrics, and every file's sha256."""
    manifest = Manifest(stage=stage, task=task, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                        inputs=[{**r, "path": portable_path(r["path"], folder)} for r in inputs], config=config,
                        config_sha256=sha256_json(config), versions=library_versions(), metrics=metrics or {},
                        files=hash_files(folder), **fields)
    save_manifest(manifest, folder)
    manifest.folder = final_folder(folder)
    return manifest


def rehash(folder: Path) -> Manifest:
    """Record the files of an artifact again after a later step added to it (the run's selection and
    report.html in its bench folder); what it came from and how stay as they were."""
    manifest = read_manifest(folder, verify=False)
    manifest.files = hash_files(folder)
    save_manifest(manifest, folder)
    return manifest


def is_up_to_date(out: Path, inputs: list[dict], config: dict) -> bool:
    """True when `out` holds a valid artifact made from exactly these inputs and this config."""
    try:
        manifest = read_manifest(out, what="output")
    except EdgeftError:
        return False

    def key(refs):
        return sorted((r["role"], r["fingerprint"]) for r in refs)
    return key(manifest.inputs) == key(inputs) and manifest.config_sha256 == sha256_json(config)


def up_to_date(out: Path) -> Manifest:
    """The manifest of an output that a stage skips because it is up to date (`reused`)."""
    manifest = read_manifest(out, what="output")
    manifest.reused = True
    return manifest


def partial_path(out: Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + PARTIAL_SUFFIX)


@contextlib.contextmanager
def stage_output(out: Path | str, *, keep_partial: bool = False) -> Iterator[Path]:
    """Write a stage's output into `<out>.partial`, then swap it in for `<out>` when the block succeeds.

    On failure the previous `<out>` is untouched; the partial folder is removed unless `keep_partial`
    (tune keeps it so that --resume can continue from its checkpoints).
    """
    out = Path(out)
    partial = partial_path(out)
    partial.mkdir(parents=True, exist_ok=True)
    try:
        yield partial
    except BaseException:
        if not keep_partial:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    if not (partial / MANIFEST).exists():
        raise RuntimeError(f"stage wrote no {MANIFEST} into {partial}")
    old = out.with_name(out.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    partial.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def folder_ref(role: str, folder: Path) -> dict:
    """Input reference of any folder: an edgeft artifact by its manifest, any other by its files."""
    folder = Path(folder)
    if (folder / MANIFEST).exists():
        return input_ref(role, folder, read_manifest(folder, what=role.replace("_", " ")))
    return input_ref(role, folder, Manifest(stage="external", files=hash_files(folder)))


def _input(manifest: Manifest, role: str) -> dict:
    ref = manifest.input(role)
    if ref is None:
        raise EdgeftError(f"the {manifest.stage} manifest names no '{role}' input")
    return ref


def carried_ref(manifest: Manifest, role: str) -> dict:
    """An input of an artifact, to record as an input of the next one: its path resolved from the
    artifact that recorded it (a relative path means nothing anywhere else)."""
    ref = _input(manifest, role)
    return {**ref, "path": str(resolve_input(manifest, ref))}


def lineage_input(manifest: Manifest, role: str) -> Path:
    """The folder an artifact was made from, checked to still hold the same content."""
    ref = _input(manifest, role)
    path = resolve_input(manifest, ref)
    if not path.exists():
        raise EdgeftError(f"{role.replace('_', ' ')} {path} (recorded in the {manifest.stage} manifest) "
                          "no longer exists")
    if folder_ref(role, path)["fingerprint"] != ref["fingerprint"]:
        raise EdgeftError(f"{role.replace('_', ' ')} {path} changed since it was used: its files no longer "
                          "match the manifest")
    return path


def find_in_lineage(manifest: Manifest, role: str) -> Path:
    """Walk an artifact's inputs back until one has `role` (e.g. the data a quantized model came from)."""
    seen = set()
    todo = [manifest]
    while todo:
        current = todo.pop()
        for ref in current.inputs:
            if ref["role"] == role:
                return lineage_input(current, role)
            path = resolve_input(current, ref)
            if ref.get("stage") != "external" and (path / MANIFEST).exists() and str(path) not in seen:
                seen.add(str(path))
                todo.append(read_manifest(path, verify=False))
    raise EdgeftError(f"no '{role}' input found in the lineage of this {manifest.stage} artifact")


def model_bytes(folder: Path) -> int:
    """Bytes of the model files in a folder (weights and graphs; not tokenizer or settings)."""
    files = [*Path(folder).iterdir(), *(Path(folder) / ADAPTERS_DIR).glob("*")]  # an unmerged base's own adapters
    return sum(p.stat().st_size for p in files if p.is_file() and p.name.endswith(MODEL_FILE_SUFFIXES))


def variant_name(manifest: Manifest) -> str:
    """The name a model artifact goes by in reports and bundles."""
    if manifest.stage == "merge":
        return "pytorch-fp32"
    if manifest.stage == "export":
        return "onnx-fp32" if (manifest.backend or "optimum") == "optimum" else f"{manifest.backend}-fp32"
    return manifest.variant or Path(manifest.folder or "variant").name
