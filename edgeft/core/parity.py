"""One comparison of two models that should agree: merge, export and quantize all use it.

Given the logits two models produce on the same inputs (rows: examples, or answer tokens), it
reports the largest and mean absolute difference and how often their argmax agrees.
"""
from __future__ import annotations

import numpy as np


def compare_logits(reference, candidate) -> dict:
    """Max and mean |logit difference| and argmax agreement of two arrays (or tensors) of one shape."""
    a, b = _numpy(reference), _numpy(candidate)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare logits of shapes {a.shape} and {b.shape}")
    diff = np.abs(a - b)
    return {"max_abs_logit_diff": float(diff.max()), "mean_abs_logit_diff": float(diff.mean()),
            "agreement": float((a.argmax(-1) == b.argmax(-1)).mean()), "compared": int(a.shape[0])}


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)
