"""Task metrics shared by tune, merge and bench."""
from __future__ import annotations

import math
from typing import Sequence


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str],
                           positive_label: str | None = None) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    metrics = {"accuracy": float(accuracy_score(y_true, y_pred)),
               "macro_f1": float(f1_score(y_true, y_pred, labels=list(labels), average="macro", zero_division=0))}
    if positive_label is not None:
        metrics[f"{positive_label}_f1"] = float(f1_score(y_true, y_pred, labels=[positive_label], average="macro",
                                                         zero_division=0))
    return metrics


def normalize_answer(text: str) -> str:
    """Exact match ignores case, surrounding white space and trailing punctuation."""
    return text.strip().strip(".!").strip().lower()


def exact_match(answers: Sequence[str], predictions: Sequence[str]) -> float:
    if not answers:
        return float("nan")
    return sum(normalize_answer(a) == normalize_answer(p) for a, p in zip(answers, predictions)) / len(answers)


def perplexity(total_nll: float, tokens: int) -> float:
    return math.exp(total_nll / tokens) if tokens else float("nan")
