"""Export parity for decoders: prefill logits and greedy tokens, PyTorch against the exported model
(edgeft.runtime for ONNX, llama.cpp for GGUF)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgeft import EdgeftError
from edgeft.core.parity import compare_logits


def torch_greedy(model, ids: list[int], new_tokens: int, timings: list | None = None):
    """Last-position logits of the prompt and `new_tokens` greedy tokens (end tokens not honoured);
    `timings` receives the seconds of each model call with its argmax (prefill first)."""
    import torch

    with torch.inference_mode():
        start = time.perf_counter()
        out = model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1)
        tokens = [int(out.logits[0, -1].argmax())]
        if timings is not None:
            timings.append(time.perf_counter() - start)
        first, past = out.logits[0, -1].float().numpy(), out.past_key_values
        while len(tokens) < new_tokens:
            start = time.perf_counter()
            out = model(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            tokens.append(int(out.logits[0, -1].argmax()))
            if timings is not None:
                timings.append(time.perf_counter() - start)
    return first, tokens


def generation_parity(torch_dir: Path, export_dir: Path, backend: str, rows: list[dict], new_tokens: int) -> dict:
    from edgeft.generation.chat import encode_prompt
    from edgeft.generation.models import load_generator, load_model, load_tokenizer

    tokenizer = load_tokenizer(torch_dir)
    model = load_model(torch_dir).eval()
    generator = load_generator(export_dir, exact=True)
    references, prefills, mismatches, compared = [], [], 0, 0
    for row in rows[:4]:
        ids = encode_prompt(tokenizer, row["messages"])
        if ids != generator.encode_chat(row["messages"][:-1]):
            raise EdgeftError(f"export ({backend}): the runtime's chat formatting differs from the tokenizer's template")
        reference, tokens = torch_greedy(model, ids, new_tokens)
        references.append(reference)
        prefills.append(generator.prefill(ids)[0])
        exported_tokens = list(generator.generate_ids(ids, new_tokens, stop=False))
        mismatches += exported_tokens != tokens
        compared += 1
    return {**compare_logits(np.stack(references), np.stack(prefills)), "prompts": compared,
            "greedy_tokens": new_tokens, "greedy_mismatches": mismatches, "greedy_identical": mismatches == 0}


