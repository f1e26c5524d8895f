"""Text classification with an ONNX model: onnxruntime, tokenizers and numpy only.

Preprocessing comes from the folder itself (preprocess.json, written when the model was tuned):
the same max_length, truncation side and padding the model was trained and benchmarked with, so
the device cannot drift from the numbers the host reported.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeft.runtime.files import LABELS_FILE, ONNX_FILE, PREPROCESS_FILE
from edgeft.runtime.manifest import expect_task, read_manifest
from edgeft.runtime.onnx import load_tokenizer, read_json, session
from edgeft.runtime.selfcheck import verify_tokenizer


class Classifier:
    """Text classification with an ONNX model; labels from labels.json."""

    def __init__(self, folder: Path, threads: int | None = None, verify: bool = True):
        folder = Path(folder)
        if verify:  # callers that already checked the folder (the bench) pass verify=False
            expect_task(read_manifest(folder, what="model"), "classification", "a classifier")
        self.labels = read_json(folder / LABELS_FILE, "the label map")["labels"]
        self.preprocess = read_json(folder / PREPROCESS_FILE, "the preprocessing settings (max_length, truncation)")
        self.tokenizer = load_tokenizer(folder)
        if verify:  # the self-test ids were recorded without truncation: check before enabling it
            verify_tokenizer(folder, self.tokenizer)
        self.tokenizer.enable_truncation(self.preprocess["max_length"], direction=self.preprocess["truncation_side"])
        self.pad_id = self.preprocess["pad_id"]
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

    def predict(self, texts: list[str], batch_size: int = 1) -> list[tuple[str, float]]:
        """(label, probability) for each text. One text at a time by default, as the bench scores:
        a dynamically quantized int8 model scales its activations per batch, so a text padded next to
        longer ones can come out differently; batch_size > 1 trades that for throughput."""
        out = []
        for start in range(0, len(texts), batch_size):
            logits = self.logits(self.encode(texts[start:start + batch_size]))
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            out += [(self.labels[i], float(p[i])) for p, i in zip(probs, probs.argmax(-1))]
        return out
