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
import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from edgeft import EdgeftError, __version__

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_VERSIONED = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "optimum", "optimum-onnx",
              "onnx", "onnxruntime", "onnxruntime-genai", "tokenizers", "numpy")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


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


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "edgeft": __version__}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def machine_info() -> dict[str, Any]:
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with contextlib.suppress(ImportError, Exception):
        import psutil
        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    return info


def fingerprint(manifest: dict) -> str:
    """What identifies an artifact's content: its stage and the hashes of its files."""
    return sha256_json({"stage": manifest.get("stage"), "files": manifest.get("files", {})})


def input_ref(role: str, folder: Path, manifest: dict) -> dict[str, str]:
    return {"role": role, "path": str(Path(folder).resolve()), "stage": manifest.get("stage", "external"),
            "fingerprint": fingerprint(manifest)}


def write_manifest(folder: Path, *, stage: str, task: str | None, inputs: list[dict], config: dict,
                   metrics: dict | None = None, **extra: Any) -> dict:
    manifest = {
        "edgeft_manifest": FORMAT_VERSION,
        "stage": stage,
        "task": task,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
        "config": config,
        "config_sha256": sha256_json(config),
        "versions": library_versions(),
        "metrics": metrics or {},
        **extra,
        "files": hash_files(folder),
    }
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest


def read_manifest(folder: Path | str, *, stage: str | tuple[str, ...] | None = None, what: str = "input",
                  verify: bool = True) -> dict:
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
    return manifest


def verify_files(folder: Path, files: dict[str, dict]) -> None:
    for rel, meta in files.items():
        path = Path(folder) / rel
        if not path.is_file():
            raise EdgeftError(f"{path} is missing (listed in {Path(folder) / MANIFEST})")
        size = path.stat().st_size
        if size != meta["bytes"] or sha256_file(path) != meta["sha256"]:
            raise EdgeftError(f"{path} is damaged: its sha256 does not match {Path(folder) / MANIFEST}")


def is_up_to_date(out: Path, inputs: list[dict], config: dict) -> bool:
    """True when `out` holds a valid artifact made from exactly these inputs and this config."""
    try:
        manifest = read_manifest(out, what="output")
    except EdgeftError:
        return False
    def key(refs):
        return sorted((r["role"], r["fingerprint"]) for r in refs)
    return key(manifest.get("inputs", [])) == key(inputs) and manifest.get("config_sha256") == sha256_json(config)


def up_to_date(out: Path) -> dict:
    """The manifest of an output that a stage skips because it is up to date (marked so for the caller)."""
    return {**read_manifest(out, what="output"), "_up_to_date": True}


def partial_path(out: Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


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
    return input_ref(role, folder, {"stage": "external", "files": hash_files(folder)})


def lineage_input(manifest: dict, role: str) -> Path:
    """The folder an artifact was made from, checked to still hold the same content."""
    ref = next((r for r in manifest.get("inputs", []) if r["role"] == role), None)
    if ref is None:
        raise EdgeftError(f"the {manifest.get('stage')} manifest names no '{role}' input")
    path = Path(ref["path"])
    if not path.exists():
        raise EdgeftError(f"{role.replace('_', ' ')} {path} (recorded in the {manifest.get('stage')} manifest) "
                          "no longer exists")
    if folder_ref(role, path)["fingerprint"] != ref["fingerprint"]:
        raise EdgeftError(f"{role.replace('_', ' ')} {path} changed since it was used: its files no longer "
                          "match the manifest")
    return path


def find_in_lineage(manifest: dict, role: str) -> Path:
    """Walk an artifact's inputs back until one has `role` (e.g. the data a quantized model came from)."""
    seen = set()
    todo = [manifest]
    while todo:
        current = todo.pop()
        for ref in current.get("inputs", []):
            if ref["role"] == role:
                return lineage_input(current, role)
            path = Path(ref["path"])
            if ref.get("stage") != "external" and (path / MANIFEST).exists() and str(path) not in seen:
                seen.add(str(path))
                todo.append(read_manifest(path, verify=False))
    raise EdgeftError(f"no '{role}' input found in the lineage of this {manifest.get('stage')} artifact")
