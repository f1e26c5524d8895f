"""Bench runners for classifiers, one per worker process (see benchkit/workers.py).

ONNX variants run through edgeft.runtime, as a device would; the merged PyTorch model through
transformers with the same preprocessing (preprocess.json). Tokenization is done before timing.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

RUNNER_ORT = "edgeft.classification.runners:OrtClassifier"
RUNNER_TORCH = "edgeft.classification.runners:TorchClassifier"
RUNNER_TRAINED = "edgeft.classification.runners:TrainedClassifier"


class _Runner:
    def encode(self, texts: list[str]):
        raise NotImplementedError

    def logits(self, encoded) -> np.ndarray:
        raise NotImplementedError

    def classify(self, texts: list[str], batch_size: int) -> dict:
        """Predicted label indices, and each text's class probabilities (for the accuracy ledger)."""
        preds, probs = [], []
        for start in range(0, len(texts), batch_size):
            logits = self.logits(self.encode(texts[start:start + batch_size])).astype(np.float64)
            p = np.exp(logits - logits.max(-1, keepdims=True))
            probs += (p / p.sum(-1, keepdims=True)).tolist()
            preds += logits.argmax(-1).tolist()
        return {"predictions": preds, "first": probs}

    def latency(self, texts: list[str], warmup: int) -> dict:
        return {"seconds": self._time([self.encode([t]) for t in texts], warmup)}

    def throughput(self, texts: list[str], batch_size: int, warmup: int) -> dict:
        inputs = [self.encode(texts[i:i + batch_size]) for i in range(0, len(texts) - batch_size + 1, batch_size)]
        seconds = self._time(inputs, min(warmup, 1))
        return {"examples_per_s": batch_size * len(seconds) / sum(seconds) if seconds else float("nan")}

    def _time(self, inputs: list, warmup: int) -> list[float]:
        """Seconds per call of logits() on pre-tokenized inputs (tokenization is not timed)."""
        for encoded in inputs[:warmup]:
            self.logits(encoded)
        times = []
        for encoded in inputs:
            start = time.perf_counter()
            self.logits(encoded)
            times.append(time.perf_counter() - start)
        return times


class OrtClassifier(_Runner):
    """ONNX variants through edgeft.runtime: what a device runs (no torch, no transformers)."""

    def __init__(self, folder: Path, threads: int):
        from edgeft.runtime import Classifier

        self.model = Classifier(folder, threads, verify=False)
        self.encode, self.logits = self.model.encode, self.model.logits


class TorchClassifier(_Runner):
    def __init__(self, folder: Path, threads: int):
        import json

        import torch

        from edgeft.classification.models import load_tokenizer
        from edgeft.runtime.files import LABELS_FILE, PREPROCESS_FILE

        torch.set_num_threads(threads)
        self.torch = torch
        labels = json.loads((Path(folder) / LABELS_FILE).read_text())["labels"]
        self.preprocess = json.loads((Path(folder) / PREPROCESS_FILE).read_text())
        self.tokenizer = load_tokenizer(folder)
        self.tokenizer.truncation_side = self.preprocess["truncation_side"]
        self.model = self.load(Path(folder), labels)

    def load(self, folder: Path, labels: list[str]):
        from edgeft.classification.models import load_model

        return load_model(folder, labels).eval()

    def encode(self, texts: list[str]) -> dict:
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.preprocess["max_length"],
                                   return_tensors="pt"))

    def logits(self, encoded: dict) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(**encoded).logits.numpy()


class TrainedClassifier(TorchClassifier):
    """What was trained (a tune folder): the adapter on the base it was trained against (NF4 after
    QLoRA); the first step of the accuracy ledger."""

    def load(self, folder: Path, labels: list[str]):
        from edgeft.core.tasks import get_task
        from edgeft.training.qlora import load_trained

        return load_trained(get_task("classification"), folder, labels)
