"""Bench runners for text generators, one per worker process (see benchkit/workers.py), and a
PyTorch chat for `edgeft generate` on a merged or imported folder.

Timed: what a user waits for, model calls only. Time to first token is the prefill call plus the
argmax; tokenization and detokenization are excluded, sampling is greedy (an argmax, included).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeft.generation.parity import torch_greedy

RUNNER_ORT = "edgeft.generation.runners:OrtGenerator"
RUNNER_TORCH = "edgeft.generation.runners:TorchGenerator"
RUNNER_TRAINED = "edgeft.generation.runners:TrainedGenerator"


class TorchGenerator:
    """PyTorch fp32 eager: a greedy loop over the model with its KV cache (what generate() runs)."""

    def __init__(self, folder: Path, threads: int):
        import torch

        from edgeft.generation.models import load_tokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = load_tokenizer(folder)
        self.model = self.load(Path(folder))
        self.stop_ids = {self.tokenizer.eos_token_id, *np.atleast_1d(self.model.generation_config.eos_token_id or [])}

    def load(self, folder: Path):
        from edgeft.generation.models import load_model

        return load_model(folder).eval()

    def speed(self, prompt: list[int], new_tokens: int) -> dict:
        times: list[float] = []
        torch_greedy(self.model, prompt, new_tokens, timings=times)
        return {"ttft": times[0], "steps": times[1:]}

    def evaluate(self, prompts: list[list[int]], answers: list[list[int]], max_new_tokens: int,
                 batch_size: int = 16) -> dict:
        """Answer NLL (teacher forced) for every chat; greedy generation only where the teacher-forced
        argmaxes show that greedy decoding would not reproduce the reference answer exactly."""
        torch = self.torch
        from edgeft.generation.examples import answer_scores, chat_batch
        from edgeft.training.batches import left_padded

        pad = self.tokenizer.pad_token_id
        nll, exact, first = [], [], []
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                pairs = zip(prompts[start:start + batch_size], answers[start:start + batch_size])
                row_nll, row_exact, row_first = answer_scores(self.model, chat_batch([(p + a, len(p)) for p, a in pairs],
                                                                                    pad))
                nll += row_nll
                exact += row_exact
                first += row_first
            predictions = [strip_stop(a, self.stop_ids) if ok else None for a, ok in zip(answers, exact)]
            misses = [i for i, ok in enumerate(exact) if not ok]
            for start in range(0, len(misses), batch_size):
                chunk = misses[start:start + batch_size]
                ids, mask = left_padded([prompts[i] for i in chunk], pad)
                out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                          do_sample=False, pad_token_id=pad, eos_token_id=list(self.stop_ids))
                for i, row in zip(chunk, out[:, ids.shape[1]:].tolist()):
                    predictions[i] = strip_stop(row, self.stop_ids)
        return {"predictions": predictions, "nll": sum(nll), "tokens": sum(len(a) for a in answers), "first": first}


def strip_stop(tokens: list[int], stop_ids) -> list[int]:
    """Tokens up to (without) the first end-of-turn token."""
    cut = next((i for i, t in enumerate(tokens) if t in stop_ids), len(tokens))
    return list(tokens[:cut])


class TrainedGenerator(TorchGenerator):
    """What was trained (a tune folder): the adapter on the base it was trained against (NF4 after
    QLoRA); the first step of the accuracy ledger."""

    def load(self, folder: Path):
        from edgeft.core.tasks import get_task
        from edgeft.training.qlora import load_trained

        return load_trained(get_task("generation"), folder, [])


class OrtGenerator:
    """ONNX variants through edgeft.runtime (what the device runs); GGUF ones through llama.cpp."""

    def __init__(self, folder: Path, threads: int):
        from edgeft.generation.models import load_generator

        self.generator = load_generator(folder, threads)

    def speed(self, prompt: list[int], new_tokens: int) -> dict:
        times: list[float] = []
        for _ in self.generator.generate_ids(prompt, new_tokens, stop=False, timings=times):
            pass
        return {"ttft": times[0], "steps": times[1:]}

    def evaluate(self, prompts: list[list[int]], answers: list[list[int]], max_new_tokens: int, **_) -> dict:
        """As TorchGenerator.evaluate, one chat at a time; one prompt pass serves scoring and generation."""
        from edgeft.generation.examples import top_logprobs

        predictions, nll, first = [], 0.0, []
        stop = self.generator.stop_ids
        for prompt, answer in zip(prompts, answers):
            prefilled = self.generator.prefill(prompt)
            first.append(top_logprobs(prefilled[0]))
            loss, exact = self.generator.score_answer(prompt, answer, prefilled=prefilled)
            nll += loss
            predictions.append(strip_stop(answer, stop) if exact else
                               list(self.generator.generate_ids(prompt, max_new_tokens, prefilled=prefilled)))
        return {"predictions": predictions, "nll": nll, "tokens": sum(len(a) for a in answers), "first": first}


class TorchChat:
    """The same interface as runtime.Generator.stream, for a PyTorch folder (merged or imported)."""

    def __init__(self, folder: Path, threads: int | None = None):
        import torch

        from edgeft.generation.models import load_model, load_tokenizer

        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = load_tokenizer(folder)
        self.model = load_model(folder).eval()

    def stream(self, messages: list[dict], max_new_tokens: int | None = None):
        import threading

        from transformers import TextIteratorStreamer

        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(input_ids=ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=max_new_tokens or 128,
                      do_sample=False, streamer=streamer, pad_token_id=self.tokenizer.pad_token_id)
        thread = threading.Thread(target=self.model.generate, kwargs=kwargs)
        thread.start()
        yield from streamer
        thread.join()
