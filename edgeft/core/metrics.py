"""Task metrics shared by tune, merge and bench: the runtime's (so that a device scores exactly as
the host does), and perplexity."""
from __future__ import annotations

import math

from edgeft.runtime.metrics import classification_metrics, exact_match, normalize_answer

__all__ = ["classification_metrics", "exact_match", "normalize_answer", "perplexity"]


def perplexity(total_nll: float, tokens: int) -> float:
    return math.exp(total_nll / tokens) if tokens else float("nan")
