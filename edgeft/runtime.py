"""Device-side runtime: load an edgeft ONNX folder (a bundle, or any export/quantize artifact) and
run it with onnxruntime, tokenizers and numpy only. No torch, no transformers.

    from edgeft.runtime import load
    model = load("bundle/")                  # verifies every file's sha256 first
    model.predict(["WIN a FREE prize!!"])    # classification: [("spam", 0.99)]
    for piece in model.stream("Hi!"):        # generation: streamed text, KV cache in ONNX Runtime
        print(piece, end="")
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeft import EdgeftError
from edgeft.artifacts import read_manifest

ONNX_FILE = "model.onnx"


def session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_tokenizer(folder: Path, max_length: int | None = None):
    from tokenizers import Tokenizer

    path = Path(folder) / "tokenizer.json"
    if not path.exists():
        raise EdgeftError(f"{path} is missing: the runtime needs the fast tokenizer file")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    if max_length:
        tokenizer.enable_truncation(max_length)
    return tokenizer


class Classifier:
    """Text classification with an ONNX model; labels from labels.json."""

    def __init__(self, folder: Path, threads: int | None = None, max_length: int = 128, verify: bool = True):
        folder = Path(folder)
        if verify:  # callers that already checked the folder (the bench) pass verify=False
            manifest = read_manifest(folder, what="model")
            if manifest.get("task") != "classification":
                raise EdgeftError(f"{folder} holds a '{manifest.get('task')}' model, not a classifier")
        self.labels = json.loads((folder / "labels.json").read_text())["labels"]
        self.tokenizer = load_tokenizer(folder, max_length)
        pad = self.tokenizer.token_to_id("[PAD]")
        self.pad_id = pad if pad is not None else 0
        self.session = session(folder / ONNX_FILE, threads)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        encodings = self.tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
            types[row, :len(e.ids)] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: v for k, v in feed.items() if k in self.inputs}

    def logits(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, encoded)[0]

    def predict(self, texts: list[str], batch_size: int = 32) -> list[tuple[str, float]]:
        """(label, probability) for each text."""
        out = []
        for start in range(0, len(texts), batch_size):
            logits = self.logits(self.encode(texts[start:start + batch_size]))
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            out += [(self.labels[i], float(p[i])) for p, i in zip(probs, probs.argmax(-1))]
        return out


def load(folder: Path | str, threads: int | None = None, verify: bool = True, **kwargs):
    """A Classifier or Generator for the folder, by the task its manifest names."""
    task = read_manifest(folder, verify=False, what="model").get("task")
    if task == "classification":
        return Classifier(Path(folder), threads, verify=verify, **kwargs)
    if task == "generation":
        from edgeft.runtime_gen import Generator
        return Generator(Path(folder), threads, verify=verify, **kwargs)
    raise EdgeftError(f"{folder}: unknown task '{task}'")
