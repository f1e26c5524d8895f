"""The KV cache in place: one buffer per layer, bound as both the past input and the present output.

onnxruntime's GroupQueryAttention (the genai builder's graphs; they say so in genai_config.json,
`search.past_present_share_buffer`) writes a step's keys and values straight into the past buffer
when present is bound to the same memory, and reads only the first `total_sequence_length`
positions. Without it every decode step copies the whole cache into new present tensors: for
SmolLM2-135M about 9 MB a token at 190 tokens of context, 27% of a step on a 2-core Xeon.

The buffers hold `slots` rows, one conversation each: a batch of conversations of different lengths
decodes in one model call (the server's continuous batching), each row's attention reading its own
first `attention_mask` positions, and gives the very logits each would alone. A prefill overwrites
its row's positions. An earlier state of the same conversation can be continued (scoring an answer,
then generating from the same prompt), because a step writes only at its own position and reads
only what came before it.
"""
from __future__ import annotations

import numpy as np

from edgeft.runtime.files import GENAI_CONFIG_FILE
from edgeft.runtime.onnx import read_json

MIN_CAPACITY = 256  # positions; the buffers double when a conversation outgrows them
# numpy's type for an onnxruntime tensor type: a cache's (fp32, fp16, int8 with kv_cache: int8) or the logits'
TENSOR_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int8)": np.int8}


def declares_shared_buffer(folder) -> bool:
    """Whether the model's builder declared its attention able to share past and present."""
    path = folder / GENAI_CONFIG_FILE
    return path.is_file() and bool(read_json(path, "the builder's settings").get("search", {})
                                   .get("past_present_share_buffer"))


class SharedKV:
    """Past/present buffers of shape (slots, kv_heads, capacity, head_dim) and the IO bindings that run
    a range of their rows (rows `a:b` are a batch of b - a conversations)."""

    def __init__(self, past_names: list[str], kv_heads: int, head_dim: int, dtype, slots: int = 1):
        self.past_names, self.shape, self.dtype = past_names, (slots, kv_heads, 0, head_dim), dtype
        self.arrays: dict[str, np.ndarray] = {}
        self.bindings: dict[tuple, object] = {}  # (id(session), first row, last row, inputs' key) -> its IO binding
        self.logits: dict[tuple, np.ndarray] = {}  # the same key -> the array its logits are written into
        self._keep: tuple = ()

    @property
    def capacity(self) -> int:
        return self.shape[2]

    @property
    def slots(self) -> int:
        return self.shape[0]

    def _grow(self, needed: int) -> None:
        """Larger buffers holding what the old ones held; the bindings are made anew."""
        capacity = max(MIN_CAPACITY, 1 << (needed - 1).bit_length())
        old, used = self.arrays, self.capacity
        self.shape = (self.shape[0], self.shape[1], capacity, self.shape[3])
        self.arrays = {n: np.zeros(self.shape, dtype=self.dtype) for n in self.past_names}
        for n, a in old.items():
            self.arrays[n][:, :, :used] = a
        self.bindings.clear()
        self.logits.clear()

    def _binding(self, session, rows: slice, inputs: dict, inputs_key):
        key = (id(session), rows.start, rows.stop, inputs_key)
        if key not in self.bindings:
            import onnxruntime as ort

            binding = session.io_binding()
            values = {n: ort.OrtValue.ortvalue_from_numpy(a[rows]) for n, a in self.arrays.items()}
            for name, value in values.items():
                binding.bind_ortvalue_input(name, value)
                binding.bind_ortvalue_output(name.replace("past_key_values", "present"), value)
            for name, value in inputs.items():  # an adapter's LoRA matrices, bound once
                binding.bind_ortvalue_input(name, value)
            self._bind_logits(session, binding, key, rows.stop - rows.start)
            self.bindings[key] = (binding, values)  # the OrtValues share the arrays' memory: keep them
        return self.bindings[key][0]

    def _bind_logits(self, session, binding, key: tuple, batch: int) -> None:
        """Last-position logits (batch, 1, vocab) go into an array of ours: fetching the binding's outputs
        instead wraps every present tensor too, 60 µs a step for 30 layers."""
        import onnxruntime as ort

        out = next(o for o in session.get_outputs() if o.name == "logits")
        if len(out.shape) != 3 or out.shape[1] != 1 or not isinstance(out.shape[2], int):
            binding.bind_output("logits")  # logits over every position: onnxruntime allocates them
            return
        array = np.zeros((batch, 1, out.shape[2]), dtype=TENSOR_TYPES[out.type])
        binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(array))
        self.logits[key] = array

    def fill(self, presents: dict[str, np.ndarray], row: int = 0) -> None:
        """A prompt's cache computed elsewhere (a prefill graph that returns it): positions 0..n of `row`."""
        length = next(iter(presents.values())).shape[2]
        if length > self.capacity:
            self._grow(length)
        for name, array in presents.items():
            self.arrays[name][row, :, :length] = array[0]

    def move(self, src: int, dst: int, length: int) -> None:
        """A conversation's first `length` positions from row `src` to row `dst` (closing a gap in a batch)."""
        for array in self.arrays.values():
            array[dst, :, :length] = array[src, :, :length]

    def run(self, session, ids: list[list[int]], lengths: list[int], first_row: int = 0, inputs: dict | None = None,
            inputs_key=None) -> np.ndarray:
        """The last position's logits (one row per conversation) after each row's `ids`, rows
        first_row.. first_row + len(ids) holding `lengths` positions already. Every row feeds as
        many tokens (a prompt: one row; decoding: one token each). `inputs` are more graph inputs
        (an adapter's, named by `inputs_key`), bound once per binding."""
        new = len(ids[0])
        if max(lengths) + new > self.capacity:
            self._grow(max(lengths) + new)
        rows = slice(first_row, first_row + len(ids))
        binding = self._binding(session, rows, inputs or {}, inputs_key)
        mask = np.zeros((len(ids), max(lengths) + new), dtype=np.int64)
        for r, length in enumerate(lengths):  # each row attends to its own positions only
            mask[r, :length + new] = 1
        self._keep = (np.asarray(ids, dtype=np.int64), mask)  # the bound arrays must live until the run ends
        binding.bind_cpu_input("input_ids", self._keep[0])
        binding.bind_cpu_input("attention_mask", self._keep[1])
        session.run_with_iobinding(binding)
        key = (id(session), rows.start, rows.stop, inputs_key)
        if key in self.logits:
            return self.logits[key][:, -1].copy()  # the next run writes into the same array
        logits = binding.get_outputs()[len(self.past_names)]
        return logits.numpy()[:, -1].copy()  # the binding reuses its output buffer
