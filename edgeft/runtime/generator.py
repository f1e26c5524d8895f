"""Device-side generation: a decoder ONNX model with its KV cache, run by onnxruntime and numpy.

Works for both export backends' graphs (optimum-onnx: position_ids input; onnxruntime-genai's
builder: GroupQueryAttention, no position_ids; its KV cache stays in place, see kvcache.py). The
greedy loop, scoring and chat formatting are greedy.py's. Chats are formatted from `generation.json` (written
at export time from the model's chat template), so no template engine is needed on the device.
A quantized model may carry `model.prefill.onnx` (`quantize.variants[].prefill_accuracy_level`):
the same weights with another MatMulNBits accuracy level, used for the prompt only. Whether that
helps depends on the CPU's kernels: on the AVX2 machine of the README it did not (fp32 compute
prefilled at 274 tok/s against int8 compute's 348), so no default recipe uses it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeft.runtime.adapters import Adapters, is_lora_input
from edgeft.runtime.bundle import expect_task, read_manifest
from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.files import GENERATION_FILE, ONNX_FILE, PREFILL_FILE
from edgeft.runtime.greedy import GreedyDecoding
from edgeft.runtime.kvcache import SharedKV, declares_shared_buffer
from edgeft.runtime.onnx import load_tokenizer, read_json, session
from edgeft.runtime.selfcheck import verify_tokenizer


class Generator(GreedyDecoding):
    def __init__(self, folder: Path, threads: int | None = None, verify: bool = True, use_prefill_graph: bool = True,
                 shared_kv: bool = True):
        folder = Path(folder)
        if verify:  # callers that already checked the folder (the bench) pass verify=False
            expect_task(read_manifest(folder, what="model"), "generation", "a text generator")
        self.settings = read_json(folder / GENERATION_FILE, "the chat format and stop tokens")
        self.tokenizer = load_tokenizer(folder)
        if verify:
            verify_tokenizer(folder, self.tokenizer)
        self.stop_ids = set(self.settings["eos_token_ids"])
        self.session = session(folder / ONNX_FILE, threads, stop_spinning=True)
        prefill = folder / PREFILL_FILE
        self.prefill_session = session(prefill, threads, stop_spinning=True) \
            if use_prefill_graph and prefill.exists() else self.session
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
        # in place where the builder says the attention can (RunOptions' adapters do not reach
        # run_with_iobinding, so an unmerged base keeps the copying path)
        self.kv = SharedKV(self.past_names, self.kv_heads, self.head_dim, self.dtype) \
            if shared_kv and not lora and declares_shared_buffer(folder) else None

    def add_adapter(self, bundle: Path) -> str:
        """Load an adapter-only bundle made for this base; returns its name (see runtime/adapters.py)."""
        if self.adapters is None:
            raise EdgeftError(f"{bundle}: this model was built merged; adapters need a base built with "
                              "quantize.variants[].lora: unmerged")
        return self.adapters.add(bundle)

    # --- the model, one call at a time -------------------------------------------------------
    def _run(self, sess, ids: list[int], past: dict | None, length: int, adapter: str | None):
        if self.kv is not None:
            return self.kv.run(sess, ids, length), (None, length + len(ids), adapter)
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
        empty = None if self.kv else {n: np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=self.dtype)
                                      for n in self.past_names}
        adapter = self.adapters.resolve(adapter) if self.adapters else None
        return self._run(self.prefill_session, list(ids), empty, 0, adapter)

    def step(self, token: int, state):
        past, length, adapter = state
        return self._run(self.session, [token], past, length, adapter)
