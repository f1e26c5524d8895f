"""Device-side generation: a decoder ONNX model with its KV cache, run by onnxruntime and numpy.

Works for both export backends' graphs (optimum-onnx: position_ids input; onnxruntime-genai's
builder: GroupQueryAttention, no position_ids). Chats are formatted from `generation.json` (written
at export time from the model's chat template), so no template engine is needed on the device.
A quantized model may carry `model.prefill.onnx` (`quantize.variants[].prefill_accuracy_level`):
the same weights with another MatMulNBits accuracy level, used for the prompt only. Whether that
helps depends on the CPU's kernels: on the AVX2 machine of the README it did not (fp32 compute
prefilled at 274 tok/s against int8 compute's 348), so no default recipe uses it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import numpy as np

from edgeft.runtime.adapters import Adapters, is_lora_input
from edgeft.runtime.bundle import expect_task, read_manifest
from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.files import GENERATION_FILE, ONNX_FILE, PREFILL_FILE
from edgeft.runtime.onnx import load_tokenizer, read_json, session
from edgeft.runtime.selfcheck import verify_tokenizer


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


class Generator:
    def __init__(self, folder: Path, threads: int | None = None, verify: bool = True, use_prefill_graph: bool = True):
        folder = Path(folder)
        if verify:  # callers that already checked the folder (the bench) pass verify=False
            expect_task(read_manifest(folder, what="model"), "generation", "a text generator")
        self.settings = read_json(folder / GENERATION_FILE, "the chat format and stop tokens")
        self.tokenizer = load_tokenizer(folder)
        if verify:
            verify_tokenizer(folder, self.tokenizer)
        self.stop_ids = set(self.settings["eos_token_ids"])
        self.session = session(folder / ONNX_FILE, threads)
        prefill = folder / PREFILL_FILE
        self.prefill_session = session(prefill, threads) if use_prefill_graph and prefill.exists() else self.session
        names = {i.name: i for i in self.session.get_inputs()}
        self.has_position_ids = "position_ids" in names
        self.past_names = sorted((n for n in names if n.startswith("past_key_values")),
                                 key=lambda n: (int(n.split(".")[1]), n.split(".")[2]))
        self.output_names = [o.name for o in self.session.get_outputs()]
        first = names[self.past_names[0]].shape
        self.kv_heads = first[1]
        self.head_dim = first[3] if isinstance(first[3], int) else self.settings["head_dim"]
        self.dtype = np.float16 if "float16" in names[self.past_names[0]].type else np.float32
        # LoRA inputs have rank-0 defaults, so onnxruntime lists them as overridable initializers
        lora = [i.name for i in self.session.get_overridable_initializers() if is_lora_input(i.name)]
        self.adapters = Adapters(folder) if lora else None

    def add_adapter(self, bundle: Path) -> str:
        """Load an adapter-only bundle made for this base; returns its name (see runtime/adapters.py)."""
        if self.adapters is None:
            raise EdgeftError(f"{bundle}: this model was built merged; adapters need a base built with "
                              "quantize.variants[].lora: unmerged")
        return self.adapters.add(bundle)

    # --- the model, one call at a time -------------------------------------------------------
    def _run(self, sess, ids: list[int], past: dict, length: int, adapter: str | None):
        feed = {"input_ids": np.asarray([ids], dtype=np.int64),
                "attention_mask": np.ones((1, length + len(ids)), dtype=np.int64), **past}
        if self.has_position_ids:
            feed["position_ids"] = np.arange(length, length + len(ids), dtype=np.int64)[None]
        options = self.adapters.run_options(adapter) if self.adapters else None
        outputs = dict(zip(self.output_names, sess.run(self.output_names, feed, options)))
        present = {n.replace("present", "past_key_values"): v for n, v in outputs.items() if n.startswith("present")}
        return outputs["logits"][0, -1], (present, length + len(ids), adapter)

    def prefill(self, ids: list[int], adapter: str | None = None):
        """Logits for the token after `ids`, and the KV-cache state (which carries the adapter:
        None is the model's own, "none" the bare base of an unmerged model)."""
        empty = {n: np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=self.dtype) for n in self.past_names}
        adapter = self.adapters.resolve(adapter) if self.adapters else None
        return self._run(self.prefill_session, list(ids), empty, 0, adapter)

    def step(self, token: int, state):
        past, length, adapter = state
        return self._run(self.session, [token], past, length, adapter)

    # --- generation --------------------------------------------------------------------------
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

    def encode_chat(self, messages: list[dict], adapter: str | None = None) -> list[int]:
        own = self.adapters.settings(self.adapters.resolve(adapter)) if self.adapters else None
        system = (own or self.settings).get("system_prompt")  # an adapter bundle brings its skill's prompt
        if system and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": system}, *messages]
        text = format_chat(messages, self.settings["chat"])
        return self.tokenizer.encode(text, add_special_tokens=False).ids

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
