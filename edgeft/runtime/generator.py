"""Device-side generation: a decoder ONNX model with its KV cache, run by onnxruntime and numpy.

Works for both export backends' graphs (optimum-onnx: position_ids input; onnxruntime-genai's
builder: GroupQueryAttention, no position_ids; its KV cache stays in place, see kvcache.py). The
greedy loop, scoring and chat formatting are greedy.py's. Chats are formatted from `generation.json` (written
at export time from the model's chat template), so no template engine is needed on the device.
A quantized model may carry prompt graphs: the same weights in a graph used for the prompt only.
`model.prefill.onnx` sits beside an int8 KV cache (`kv_cache: int8`): fp32 attention that returns the
prompt's cache quantized. `model.prefill.avx512.onnx` has another MatMulNBits accuracy level
(`quantize.variants[].prefill_accuracy_level`); whether that helps depends on the CPU's kernels, so it
is taken on CPUs with AVX-512 only: fp32 compute prefilled 21% faster than int8 compute on the
AVX-512 Xeon of the README, and 21% slower on the AVX2 EPYC (274 tok/s against 348).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeft.runtime.adapters import Adapters, is_lora_input
from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.files import GENERATION_FILE, ONNX_FILE, PREFILL_AVX512_FILE, PREFILL_FILE
from edgeft.runtime.greedy import GreedyDecoding
from edgeft.runtime.kvcache import TENSOR_TYPES, SharedKV, declares_shared_buffer
from edgeft.runtime.machine import cpu_flags
from edgeft.runtime.manifest import expect_task, read_manifest
from edgeft.runtime.onnx import load_tokenizer, read_json, session
from edgeft.runtime.selfcheck import verify_tokenizer


def choose_prompt_graph(folder: Path, flags: set[str] | None = None) -> Path:
    """The graph prompts run in on a CPU with these flags (default: this machine's): a prompt graph
    the folder has for it, else the decode graph. Its file name is what the benches record."""
    folder = Path(folder)
    flags = cpu_flags() if flags is None else flags
    for name, needs in ((PREFILL_AVX512_FILE, "avx512f"), (PREFILL_FILE, None)):
        if (folder / name).exists() and (needs is None or needs in flags):
            return folder / name
    return folder / ONNX_FILE


class Generator(GreedyDecoding):
    def __init__(self, folder: Path, threads: int | None = None, verify: bool = True, use_prefill_graph: bool = True,
                 shared_kv: bool = True, cpu: set[str] | None = None):
        """`cpu`: the CPU flags that choose the prompt graph (default: this machine's)."""
        folder = Path(folder)
        if verify:  # callers that already checked the folder (the bench) pass verify=False
            expect_task(read_manifest(folder, what="model"), "generation", "a text generator")
        self.settings = read_json(folder / GENERATION_FILE, "the chat format and stop tokens")
        self.tokenizer = load_tokenizer(folder)
        if verify:
            verify_tokenizer(folder, self.tokenizer)
        self.stop_ids = set(self.settings["eos_token_ids"])
        self.session = session(folder / ONNX_FILE, threads, stop_spinning=True)
        prompt = choose_prompt_graph(folder, cpu) if use_prefill_graph else folder / ONNX_FILE
        self.prompt_graph_file = prompt.name  # what the prompt ran, for the bench's record
        self.prefill_session = self.session if prompt.name == ONNX_FILE else session(prompt, threads, stop_spinning=True)
        names = {i.name: i for i in self.session.get_inputs()}
        self.has_position_ids = "position_ids" in names
        self.past_names = sorted((n for n in names if n.startswith("past_key_values")),
                                 key=lambda n: (int(n.split(".")[1]), n.split(".")[2]))
        self.output_names = [o.name for o in self.session.get_outputs()]
        first = names[self.past_names[0]].shape
        self.kv_heads = first[1]
        self.head_dim = first[3] if isinstance(first[3], int) else self.settings["head_dim"]
        # the cache as the graph keeps it: fp32, fp16, or int8 (quantize.variants[].kv_cache)
        self.dtype = TENSOR_TYPES[names[self.past_names[0]].type]
        # LoRA inputs have rank-0 defaults, so onnxruntime lists them as overridable initializers
        lora = [i.name for i in self.session.get_overridable_initializers() if is_lora_input(i.name)]
        self.adapters = Adapters(folder, lora) if lora else None
        # in place where the builder says the attention can
        self.shares_cache = declares_shared_buffer(folder)
        self.kv = self.make_cache() if shared_kv and self.shares_cache else None
        # a prefill graph keeping another cache type (an int8 cache's fp32 prompt attention, kvquant.py)
        # returns the prompt's cache, which then goes into the shared one
        prefill_past = next(i for i in self.prefill_session.get_inputs() if i.name == self.past_names[0])
        self.prefill_dtype = TENSOR_TYPES[prefill_past.type]
        self.prefill_returns_cache = self.kv is not None and self.prefill_dtype != self.dtype

    def add_adapter(self, bundle: Path) -> str:
        """Load an adapter-only bundle made for this base; returns its name (see runtime/adapters.py)."""
        if self.adapters is None:
            raise EdgeftError(f"{bundle}: this model was built merged; adapters need a base built with "
                              "quantize.variants[].lora: unmerged")
        return self.adapters.add(bundle)

    def lora_inputs(self, adapter: str | None) -> dict:
        """The graph inputs of an adapter (resolved) on an unmerged base; none for a merged model."""
        return self.adapters.inputs(adapter) if self.adapters and adapter else {}

    def make_cache(self, slots: int = 1) -> SharedKV:
        """A KV cache in place for `slots` conversations (the server decodes them in one call)."""
        if not self.shares_cache:
            raise EdgeftError("this model's attention cannot share its past and present (only onnxruntime-genai's "
                              "builder writes such graphs): build it with source: genai")
        return SharedKV(self.past_names, self.kv_heads, self.head_dim, self.dtype, slots)

    # --- the model: a prompt into a cache row, decode steps over rows ---------------------------
    def prefill_row(self, kv: SharedKV, row: int, ids: list[int], adapter: str | None) -> np.ndarray:
        """A prompt into row `row` of a cache in place; the logits of the token after it."""
        if self.prefill_dtype != self.dtype:  # the prompt graph returns its cache, of another type
            empty = {n: np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=self.prefill_dtype) for n in self.past_names}
            logits, (present, _, _) = self._run_feed(self.prefill_session, list(ids), empty, 0, adapter)
            kv.fill(present, row)
            return logits
        return kv.run(self.prefill_session, [list(ids)], [0], row, self.lora_inputs(adapter), adapter)[0]

    def decode_rows(self, kv: SharedKV, tokens: list[int], lengths: list[int], adapter: str | None) -> np.ndarray:
        """One decode step of the conversations in rows 0..len(tokens): their next logits, one row each."""
        return kv.run(self.session, [[t] for t in tokens], lengths, 0, self.lora_inputs(adapter), adapter)

    def _run_feed(self, sess, ids: list[int], past: dict, length: int, adapter: str | None):
        """The past as inputs, the present as new outputs."""
        feed = {"input_ids": np.asarray([ids], dtype=np.int64),
                "attention_mask": np.ones((1, length + len(ids)), dtype=np.int64), **past}
        if self.has_position_ids:
            feed["position_ids"] = np.arange(length, length + len(ids), dtype=np.int64)[None]
        feed.update(self.lora_inputs(adapter))
        outputs = dict(zip(self.output_names, sess.run(self.output_names, feed)))
        present = {n.replace("present", "past_key_values"): v for n, v in outputs.items() if n.startswith("present")}
        return outputs["logits"][0, -1], (present, length + len(ids), adapter)

    def prefill(self, ids: list[int], adapter: str | None = None):
        """Logits for the token after `ids`, and the KV-cache state (which carries the adapter:
        None is the model's own, "none" the bare base of an unmerged model)."""
        adapter = self.adapters.resolve(adapter) if self.adapters else None
        if self.kv is not None:
            return self.prefill_row(self.kv, 0, ids, adapter), (None, len(ids), adapter)
        empty = {n: np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=self.prefill_dtype) for n in self.past_names}
        return self._run_feed(self.prefill_session, list(ids), empty, 0, adapter)

    def step(self, token: int, state):
        past, length, adapter = state
        if self.kv is not None:
            return self.decode_rows(self.kv, [token], [length], adapter)[0], (None, length + 1, adapter)
        return self._run_feed(self.session, [token], past, length, adapter)
