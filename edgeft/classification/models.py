"""Loading classifiers and their tokenizers (transformers)."""
from __future__ import annotations

from pathlib import Path


def load_tokenizer(path: Path):
    from edgeft.core.models import load_tokenizer as load
    return load(path)


def load_model(path: Path, labels: list[str], **kwargs):
    from transformers import AutoModelForSequenceClassification

    from edgeft.core.models import load_pretrained
    return load_pretrained(AutoModelForSequenceClassification, path, num_labels=len(labels),
                           id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
                           **kwargs)
