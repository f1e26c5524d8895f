"""Greedy decoding and answer scoring over any model with `prefill(ids, adapter)` and
`step(token, state)`: the ONNX generator here and, on the host, the llama.cpp one
(edgeft/generation/gguf.py), so both are timed and scored by the very same loop."""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from edgeft.runtime.errors import EdgeftError


def format_chat(messages: list[dict], chat: dict) -> str:
    """The prompt text for `messages` (system/user/assistant turns), ending with the assistant header."""
    text = ""
    if chat.get("default_system") and (not messages or messages[0]["role"] != "system"):
        text += chat["default_system"]
    for m in messages:
        if m["role"] not in chat["roles"]:
            raise EdgeftError(f"role '{m['role']}' is not in this model's chat format ({', '.join(chat['roles'])})")
        prefix, suffix = chat["roles"][m["role"]]
        text += prefix + m["content"] + suffix
    return text + chat["generation_prompt"]


class GreedyDecoding:
    """Needs `prefill`, `step`, `stop_ids`, `settings` (generation.json), `tokenizer` and `adapters`."""
    stop_ids: set[int]
    settings: dict
    adapters = None

    def prefill(self, ids: list[int], adapter: str | None = None):
        raise NotImplementedError

    def step(self, token: int, state):
        raise NotImplementedError

    def generate_ids(self, ids: list[int], max_new_tokens: int, stop: bool = True, timings: list | None = None,
                     prefilled=None, adapter: str | None = None) -> Iterator[int]:
        """Greedy tokens after `ids`; `timings` receives the seconds of each model call (prefill first).
        `prefilled` is the (logits, state) of an earlier prefill of `ids`, reused instead of a new one."""
        start = time.perf_counter()
        logits, state = prefilled or self.prefill(ids, adapter)
        for n in range(max_new_tokens):
            token = int(np.argmax(logits))
            if timings is not None:
                timings.append(time.perf_counter() - start)
            if stop and token in self.stop_ids:
                return
            yield token
            if n + 1 == max_new_tokens:
                return
            start = time.perf_counter()
            logits, state = self.step(token, state)

    def score_answer(self, prompt_ids: list[int], answer_ids: list[int], prefilled=None,
                     adapter: str | None = None) -> tuple[float, bool]:
        """Negative log-likelihood of `answer_ids` after the prompt (teacher forcing through the cache),
        and whether greedy decoding would produce exactly them."""
        logits, state = prefilled or self.prefill(prompt_ids, adapter)
        total, exact = 0.0, True
        for i, token in enumerate(answer_ids):
            shifted = logits.astype(np.float64) - logits.max()
            total += float(np.log(np.exp(shifted).sum()) - shifted[token])
            exact = exact and int(np.argmax(logits)) == token
            if i + 1 < len(answer_ids):
                logits, state = self.step(token, state)
        return total, exact

    # --- generation --------------------------------------------------------------------------
    def chat_text(self, messages: list[dict], adapter: str | None = None) -> str:
        """The prompt text: the chat format's turns with the system prompt (an adapter bundle's own,
        if it brings one), ending with the assistant header."""
        own = self.adapters.settings(self.adapters.resolve(adapter)) if self.adapters else None
        system = (own or self.settings).get("system_prompt")
        if system and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": system}, *messages]
        return format_chat(messages, self.settings["chat"])

    def encode_chat(self, messages: list[dict], adapter: str | None = None) -> list[int]:
        return self.tokenizer.encode(self.chat_text(messages, adapter), add_special_tokens=False).ids

    def stream(self, prompt: str | list[dict], max_new_tokens: int | None = None,
               adapter: str | None = None) -> Iterator[str]:
        """Text pieces of the greedy answer to a user prompt (or a list of chat messages), with
        `adapter` on an unmerged base (None: the model's own)."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        produced: list[int] = []
        shown = ""
        ids = self.encode_chat(messages, adapter)
        for token in self.generate_ids(ids, max_new_tokens or self.settings["max_new_tokens"], adapter=adapter):
            produced.append(token)
            text = self.tokenizer.decode(produced)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                yield text[len(shown):]
                shown = text

    def answer(self, prompt: str | list[dict], max_new_tokens: int | None = None, adapter: str | None = None) -> str:
        return "".join(self.stream(prompt, max_new_tokens, adapter)).strip()
