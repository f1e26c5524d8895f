"""Quality differences between two models scored on the same examples: paired, with an interval.

A drop of 1 point on 300 examples is within what chance gives; a budget checked against the point
estimate alone would reject good variants and ship bad ones at random. Both models' per-example
correctness is paired: the interval is a bootstrap over examples (the same resampled examples for
both models), and the exact McNemar test counts the examples on which they disagree.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

RESAMPLES = 4000


@dataclass
class PairedDrop:
    """How many points worse `candidate` is than `reference` (positive = worse), with its interval."""
    points: float
    low: float
    high: float
    examples: int
    reference_only: int  # examples the reference gets right and the candidate wrong
    candidate_only: int
    mcnemar_p: float
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


def paired_drop(reference: list[bool], candidate: list[bool], confidence: float = 0.95, seed: int = 0) -> PairedDrop:
    from scipy.stats import binomtest

    ref, cand = np.asarray(reference, dtype=float), np.asarray(candidate, dtype=float)
    if ref.shape != cand.shape or ref.size == 0:
        raise ValueError(f"paired scores need the same examples: {ref.size} against {cand.size}")
    diff = (ref - cand) * 100
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(RESAMPLES, diff.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    b, c = int(((ref == 1) & (cand == 0)).sum()), int(((ref == 0) & (cand == 1)).sum())
    p = binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
    return PairedDrop(points=float(diff.mean()), low=float(np.percentile(means, tail)),
                      high=float(np.percentile(means, 100 - tail)), examples=int(diff.size), reference_only=b,
                      candidate_only=c, mcnemar_p=float(p), confidence=confidence)


def examples_to_decide(drop: PairedDrop, budget: float) -> int | None:
    """Roughly how many examples would put the interval on one side of `budget` (the interval's
    half-width shrinks as 1/sqrt(n)); None when the point estimate sits on the budget itself."""
    distance = abs(budget - drop.points)
    if distance < 1e-9:
        return None
    half = (drop.high - drop.low) / 2
    return max(drop.examples + 1, math.ceil(drop.examples * (half / distance) ** 2))
