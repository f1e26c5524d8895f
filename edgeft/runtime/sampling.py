"""Choosing the next token from a model's logits, per request: greedy at temperature 0 (the bench's
and the tests' setting: the same answers every time), else softmax sampling at the temperature over
the nucleus of top_p, from a generator seeded per request (the same seed, the same answer)."""
from __future__ import annotations

import numpy as np


class Sampler:
    def __init__(self, temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None):
        self.temperature, self.top_p = temperature, top_p
        self.rng = np.random.default_rng(seed)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def pick(self, logits: np.ndarray) -> int:
        if self.greedy:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / self.temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        if self.top_p < 1.0:
            order = np.argsort(-probs)
            kept = order[:int(np.searchsorted(np.cumsum(probs[order]), self.top_p)) + 1]  # the nucleus
            return int(kept[self.rng.choice(len(kept), p=probs[kept] / probs[kept].sum())])
        return int(self.rng.choice(len(probs), p=probs))
