"""Export parity for decoders: prefill logits and greedy tokens, PyTorch against the exported model
(edgeft.runtime for ONNX, llama.cpp for GGUF).

Greedy tokens must match, with one exception: where PyTorch's two best logits lie within the logit
tolerance of each other (a tie, common in small and random models), either token is a faithful
export, so a sequence that first differs at such a tie counts as agreeing and is reported as a tie,
with its step and the gap. A difference anywhere else is a mismatch."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgeft import EdgeftError
from edgeft.core.parity import compare_logits


def torch_greedy(model, ids: list[int], new_tokens: int, timings: list | None = None, steps: list | None = None):
    """Last-position logits of the prompt and `new_tokens` greedy tokens (end tokens not honoured);
    `timings` receives the seconds of each model call with its argmax (prefill first), `steps` the
    logits each token was chosen from."""
    import torch

    with torch.inference_mode():
        start = time.perf_counter()
        out = model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1)
        tokens = [int(out.logits[0, -1].argmax())]
        if timings is not None:
            timings.append(time.perf_counter() - start)
        first, past = out.logits[0, -1].float().numpy(), out.past_key_values
        if steps is not None:
            steps.append(first)
        while len(tokens) < new_tokens:
            start = time.perf_counter()
            out = model(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            tokens.append(int(out.logits[0, -1].argmax()))
            if steps is not None:
                steps.append(out.logits[0, -1].float().numpy())
            if timings is not None:
                timings.append(time.perf_counter() - start)
    return first, tokens


def first_difference(reference: list[int], exported: list[int], steps: list, tolerance: float) -> dict | None:
    """None when the tokens match; else where they first differ, and whether PyTorch's logits of the two
    tokens there lie within `tolerance` of each other (a tie)."""
    step = next((i for i, (a, b) in enumerate(zip(reference, exported)) if a != b), None)
    if step is None:
        return None
    gap = float(steps[step][reference[step]] - steps[step][exported[step]])
    return {"step": step, "logit_gap": gap, "tie": gap <= tolerance}


def generation_parity(torch_dir: Path, export_dir: Path, backend: str, rows: list[dict], new_tokens: int,
                      tolerance: float = 1e-3) -> dict:
    from edgeft.generation.chat import encode_prompt
    from edgeft.generation.models import load_generator, load_model, load_tokenizer

    tokenizer = load_tokenizer(torch_dir)
    model = load_model(torch_dir).eval()
    generator = load_generator(export_dir, exact=True)
    references, prefills, mismatches, ties, compared = [], [], 0, [], 0
    for prompt, row in enumerate(rows[:4]):
        ids = encode_prompt(tokenizer, row["messages"])
        if ids != generator.encode_chat(row["messages"][:-1]):
            raise EdgeftError(f"export ({backend}): the runtime's chat formatting differs from the tokenizer's template")
        steps: list = []
        reference, tokens = torch_greedy(model, ids, new_tokens, steps=steps)
        references.append(reference)
        prefills.append(generator.prefill(ids)[0])
        differs = first_difference(tokens, list(generator.generate_ids(ids, new_tokens, stop=False)), steps, tolerance)
        if differs and differs["tie"]:
            ties.append({"prompt": prompt, **differs})
        mismatches += bool(differs and not differs["tie"])
        compared += 1
    return {**compare_logits(np.stack(references), np.stack(prefills)), "prompts": compared,
            "greedy_tokens": new_tokens, "greedy_mismatches": mismatches, "greedy_ties": ties,
            "greedy_identical": mismatches == 0}


