"""Loading decoders: PyTorch models and their tokenizers (transformers), and the greedy generator
of an exported or quantized folder (ONNX through edgeft.runtime, GGUF through llama.cpp)."""
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


def load_generator(folder: Path, threads: int | None = None, exact: bool = False):
    """The greedy generator for a model folder: llama.cpp for a GGUF, else edgeft.runtime's ONNX one.
    `exact` (export parity): llama.cpp with an F32 KV cache and no flash attention, so that what is
    compared is the conversion, not llama.cpp's default numerics (the bench measures those, on the task)."""
    from edgeft.runtime import Generator
    from edgeft.runtime.files import GGUF_FILE

    if (Path(folder) / GGUF_FILE).is_file():
        from edgeft.generation.gguf import LlamaCppGenerator
        return LlamaCppGenerator(folder, threads, exact=exact)
    return Generator(folder, threads, verify=False)
