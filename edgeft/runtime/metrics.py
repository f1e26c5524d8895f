"""Task metrics, computed the same way on the host and on a device (which has no scikit-learn):
accuracy, macro-F1 and one label's F1 (scikit-learn's definitions, zero_division=0; a test checks
them against scikit-learn), and exact match of generated answers."""
from __future__ import annotations

from typing import Sequence


def _f1(y_true: Sequence[str], y_pred: Sequence[str], label: str) -> float:
    tp = sum(t == label and p == label for t, p in zip(y_true, y_pred))
    predicted, actual = sum(p == label for p in y_pred), sum(t == label for t in y_true)
    return 2 * tp / (predicted + actual) if predicted + actual else 0.0


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str],
                           positive_label: str | None = None) -> dict[str, float]:
    metrics = {"accuracy": sum(t == p for t, p in zip(y_true, y_pred)) / len(y_true) if y_true else float("nan"),
               "macro_f1": sum(_f1(y_true, y_pred, label) for label in labels) / len(labels)}
    if positive_label is not None:
        metrics[f"{positive_label}_f1"] = _f1(y_true, y_pred, positive_label)
    return metrics


def normalize_answer(text: str) -> str:
    """Exact match ignores case, surrounding white space and trailing punctuation."""
    return text.strip().strip(".!").strip().lower()


def exact_match(answers: Sequence[str], predictions: Sequence[str]) -> float:
    if not answers:
        return float("nan")
    return sum(normalize_answer(a) == normalize_answer(p) for a, p in zip(answers, predictions)) / len(answers)
