"""Device-side runtime: load an edgeft ONNX folder (a bundle, or any export/quantize artifact) and
run it with onnxruntime, tokenizers and numpy only. No torch, no transformers, and nothing else
from edgeft but its error class.

    from edgeft.runtime import load
    model = load("bundle/")                  # verifies every file's sha256 first
    model.predict(["WIN a FREE prize!!"])    # classification: [("spam", 0.99)]
    for piece in model.stream("Hi!"):        # generation: streamed text, KV cache in ONNX Runtime
        print(piece, end="")
"""
from __future__ import annotations

from pathlib import Path

from edgeft import EdgeftError
from edgeft.runtime.bundle import read_manifest
from edgeft.runtime.classifier import Classifier
from edgeft.runtime.generator import Generator

RUNTIMES = {"classification": Classifier, "generation": Generator}


def load(folder: Path | str, threads: int | None = None, verify: bool = True, **kwargs):
    """A Classifier or Generator for the folder, by the task its manifest names."""
    task = read_manifest(folder, verify=False, what="model").get("task")
    if task not in RUNTIMES:
        raise EdgeftError(f"{folder}: unknown task '{task}'")
    return RUNTIMES[task](Path(folder), threads, verify=verify, **kwargs)


__all__ = ["Classifier", "Generator", "load"]
