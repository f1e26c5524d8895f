"""The KV cache in place: one buffer per layer, bound as both the past input and the present output.

onnxruntime's GroupQueryAttention (the genai builder's graphs; they say so in genai_config.json,
`search.past_present_share_buffer`) writes a step's keys and values straight into the past buffer
when present is bound to the same memory, and reads only the first `total_sequence_length`
positions. Without it every decode step copies the whole cache into new present tensors: for
SmolLM2-135M about 9 MB a token at 190 tokens of context, 27% of a step on a 2-core Xeon.

One conversation at a time per cache: a prefill overwrites the last one's positions. An earlier
state of the same conversation can be continued (scoring an answer, then generating from the same
prompt), because a step writes only at its own position and reads only what came before it.
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
    """Past/present buffers of shape (1, kv_heads, capacity, head_dim) and the IO bindings that use them."""

    def __init__(self, past_names: list[str], kv_heads: int, head_dim: int, dtype):
        self.past_names, self.shape, self.dtype = past_names, (1, kv_heads, 0, head_dim), dtype
        self.arrays: dict[str, np.ndarray] = {}
        self.values: dict = {}  # the arrays as OrtValues (sharing their memory)
        self.bindings: dict[int, object] = {}  # id(session) -> its IO binding; outputs: presents, then logits
        self.logits: dict[int, np.ndarray] = {}  # id(session) -> the array its logits are written into
        self._keep: tuple = ()

    @property
    def capacity(self) -> int:
        return self.shape[2]

    def _grow(self, needed: int) -> None:
        """Larger buffers holding what the old ones held; every binding rebound."""
        import onnxruntime as ort

        capacity = max(MIN_CAPACITY, 1 << (needed - 1).bit_length())
        old, used = self.arrays, self.capacity
        self.shape = (self.shape[0], self.shape[1], capacity, self.shape[3])
        self.arrays = {n: np.zeros(self.shape, dtype=self.dtype) for n in self.past_names}
        for n, a in old.items():
            self.arrays[n][:, :, :used] = a
        self.values = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in self.arrays.items()}
        for binding in self.bindings.values():
            self._bind(binding)

    def _bind(self, binding) -> None:
        for name, value in self.values.items():
            binding.bind_ortvalue_input(name, value)
            binding.bind_ortvalue_output(name.replace("past_key_values", "present"), value)

    def _binding(self, session):
        if id(session) not in self.bindings:
            binding = session.io_binding()
            self._bind(binding)
            self._bind_logits(session, binding)
            self.bindings[id(session)] = binding
        return self.bindings[id(session)]

    def _bind_logits(self, session, binding) -> None:
        """Last-position logits (1, 1, vocab) go into an array of ours: fetching the binding's outputs
        instead wraps every present tensor too, 60 µs a step for 30 layers."""
        import onnxruntime as ort

        out = next(o for o in session.get_outputs() if o.name == "logits")
        if len(out.shape) != 3 or out.shape[1] != 1 or not isinstance(out.shape[2], int):
            binding.bind_output("logits")  # logits over every position: onnxruntime allocates them
            return
        array = np.zeros((1, 1, out.shape[2]), dtype=TENSOR_TYPES[out.type])
        binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(array))
        self.logits[id(session)] = array

    def fill(self, presents: dict[str, np.ndarray]) -> None:
        """A prompt's cache computed elsewhere (a prefill graph that returns it): positions 0..n."""
        length = next(iter(presents.values())).shape[2]
        if length > self.capacity:
            self._grow(length)
        for name, array in presents.items():
            self.arrays[name][:, :, :length] = array

    def run(self, session, ids: list[int], length: int) -> np.ndarray:
        """The last position's logits after `ids`, with `length` positions already in the cache."""
        if length + len(ids) > self.capacity:
            self._grow(length + len(ids))
        binding = self._binding(session)
        # the bound arrays must live until the run ends
        self._keep = (np.asarray([ids], dtype=np.int64), np.ones((1, length + len(ids)), dtype=np.int64))
        binding.bind_cpu_input("input_ids", self._keep[0])
        binding.bind_cpu_input("attention_mask", self._keep[1])
        session.run_with_iobinding(binding)
        if id(session) in self.logits:
            return self.logits[id(session)][0, -1].copy()  # the next run writes into the same array
        logits = binding.get_outputs()[len(self.past_names)]
        return logits.numpy()[0, -1].copy()  # the binding reuses its output buffer
