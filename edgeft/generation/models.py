"""Loading decoders and their tokenizers (transformers)."""
from __future__ import annotations

from pathlib import Path


def load_tokenizer(path: Path):
    from edgeft.core.models import load_tokenizer as load

    tokenizer = load(path)
    # causal-LM tokenizers: generate() rejects token_type_ids, and batches need a pad token
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: Path, **kwargs):
    from transformers import AutoModelForCausalLM

    from edgeft.core.models import load_pretrained
    return load_pretrained(AutoModelForCausalLM, path, **kwargs)
