"""Device-side runtime: load an edgeft ONNX folder (a bundle, or any export/quantize artifact) and
run it with onnxruntime, tokenizers and numpy only. No torch, no transformers, nothing from the
rest of edgeft: this folder is the edgeft-runtime distribution (pyproject.toml beside this file).

    from edgeft.runtime import load
    model = load("bundle/")                  # verifies every file's sha256 first
    model.predict(["WIN a FREE prize!!"])    # classification: [("spam", 0.99)]
    for piece in model.stream("Hi!"):        # generation: streamed text, KV cache in ONNX Runtime
        print(piece, end="")
"""
from __future__ import annotations

from pathlib import Path

from edgeft.runtime.errors import EdgeftError

__version__ = "0.1.0"  # the edgeft-runtime distribution (pyproject.toml beside this file)
# task -> runtime class; imported on first use, so that `import edgeft` (the CLI's --help) stays light
RUNTIMES = {"classification": "edgeft.runtime.classifier:Classifier", "generation": "edgeft.runtime.generator:Generator"}


def runtime_class(task: str):
    import importlib

    module, name = RUNTIMES[task].split(":")
    return getattr(importlib.import_module(module), name)


def load(folder: Path | str, threads: int | None = None, verify: bool = True, **kwargs):
    """A Classifier or Generator for the folder, by the task its manifest names."""
    from edgeft.runtime.manifest import read_manifest

    task = read_manifest(folder, verify=False, what="model").task
    if task not in RUNTIMES:
        raise EdgeftError(f"{folder}: unknown task '{task}'")
    return runtime_class(task)(Path(folder), threads, verify=verify, **kwargs)


def __getattr__(name: str):
    if name in ("Classifier", "Generator"):
        return runtime_class({"Classifier": "classification", "Generator": "generation"}[name])
    raise AttributeError(f"module 'edgeft.runtime' has no attribute '{name}'")


__all__ = ["Classifier", "EdgeftError", "Generator", "load"]
