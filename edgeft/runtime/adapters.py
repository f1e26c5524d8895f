"""Per-request LoRA adapters on one shared base graph, through onnxruntime's `LoraAdapter`.

A base built unmerged (`quantize.variants[].lora: unmerged`) takes every LoRA A/B matrix as a graph
input with a free rank. Its own adapters sit in `adapters/*.onnx_adapter`; adapter-only bundles
(`edgeft package --adapter-only`) add more, each bound by hash to the base it was trained and
quantized for. A model call takes an adapter's matrices as its LoRA inputs (read once from the file
as OrtValues, bound or fed per call: switching costs no copy); the bare base runs with the graph's
rank-0 defaults. (onnxruntime's own `RunOptions.add_active_adapter` would do the same for `run`, but
`run_with_iobinding` ignores it, and the KV cache in place needs IO binding: adapter_test in
tests/test_adapters.py checks both paths give the same logits.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.files import ADAPTER_SUFFIX, ADAPTERS_DIR, GENERATION_FILE
from edgeft.runtime.manifest import read_manifest
from edgeft.runtime.onnx import read_json

NO_ADAPTER = "none"  # the bare base


def is_lora_input(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


class Adapters:
    """The adapters one base graph can run with, by name."""

    def __init__(self, folder: Path, graph_inputs: list[str] | None = None):
        """`graph_inputs`: the graph's LoRA input names; a fused one (`...q_proj+k_proj+v_proj.lora_A...`)
        takes its members' matrices side by side (A) or block-diagonal (B)."""
        self.folder = Path(folder)
        self.graph_inputs = graph_inputs
        self.loaded: dict[str, tuple] = {}  # name -> (its LoRA inputs as OrtValues, chat settings or None)
        self._base_sha = None
        for path in sorted((self.folder / ADAPTERS_DIR).glob(f"*{ADAPTER_SUFFIX}")):
            self.load(path.name[:-len(ADAPTER_SUFFIX)], path, None)
        self.default = next(iter(self.loaded), NO_ADAPTER)

    @property
    def base_sha(self) -> str:
        """The base's hash as the build recorded it (the manifest's own sha256 vouches for the files)."""
        if self._base_sha is None:
            manifest = read_manifest(self.folder, what="model", verify=False)
            self._base_sha = manifest.base_sha256 or manifest.details.get("base_sha256")
            if not self._base_sha:
                raise EdgeftError(f"{self.folder}/manifest.json records no base_sha256: rebuild it with "
                                  "lora: unmerged to take adapter bundles")
        return self._base_sha

    def load(self, name: str, path: Path, settings: dict | None = None) -> None:
        """An adapter file's matrices under `name`, as the graph takes them: fp32 (an fp16 file is
        widened here). Unchecked: `add` checks a bundle's files and base first."""
        import onnxruntime as ort

        values = ort.AdapterFormat.read_adapter(str(path)).get_parameters()
        arrays = {n: v.numpy().astype(np.float32) for n, v in values.items()}
        graph = {n: fused(n, arrays) for n in self.graph_inputs} if self.graph_inputs else arrays
        self.loaded[name] = ({n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in graph.items() if a is not None}, settings)

    def add(self, bundle: Path) -> str:
        """Load an adapter-only bundle after checking its files and that it was made for this base."""
        manifest = read_manifest(bundle, stage="adapter", what="adapter bundle")
        if manifest.base_sha256 != self.base_sha:
            raise EdgeftError(f"adapter bundle {bundle} was made for the base with sha256 {manifest.base_sha256}, "
                              f"but {self.folder} holds the base with sha256 {self.base_sha}")
        name = manifest.adapter_name
        settings = read_json(Path(bundle) / GENERATION_FILE, "the adapter's chat settings") \
            if (Path(bundle) / GENERATION_FILE).exists() else None
        self.load(name, Path(bundle) / manifest.adapter_file, settings)
        return name

    def resolve(self, name: str | None) -> str:
        name = self.default if name is None else name
        if name != NO_ADAPTER and name not in self.loaded:
            raise EdgeftError(f"no adapter named '{name}' is loaded (loaded: {', '.join(self.loaded) or 'none'}; "
                              f"'{NO_ADAPTER}' runs the bare base)")
        return name

    def settings(self, name: str) -> dict | None:
        return self.loaded[name][1] if name in self.loaded else None

    def inputs(self, name: str) -> dict:
        """The LoRA inputs of one model call with adapter `name` (resolved); none for the bare base,
        whose rank-0 defaults make the LoRA path add zeros."""
        return {} if name == NO_ADAPTER else self.loaded[name][0]


FUSED = "+"  # a fused LoRA input names its members: model.layers.0.attn.q_proj+k_proj+v_proj.lora_A.MatMul.weight


def members(name: str) -> list[str]:
    """The per-projection inputs a LoRA graph input stands for: itself, or a fused input's members."""
    if FUSED not in name:
        return [name]
    prefix, projections, *rest = name.rsplit(".", 4)
    return [".".join([prefix, p, *rest]) for p in projections.split(FUSED)]


def fused(name: str, arrays: dict) -> np.ndarray | None:
    """A graph input's value from an adapter file's per-projection matrices: its own, or, for a fused
    input, its members' A side by side and B block-diagonal (a member the adapter lacks adds nothing)."""
    if name in arrays or FUSED not in name:
        return arrays.get(name)
    parts = [arrays.get(m) for m in members(name)]
    if all(p is None for p in parts):
        return None
    if ".lora_A." in name:
        rows = next(p.shape[0] for p in parts if p is not None)
        return np.concatenate([p if p is not None else np.zeros((rows, 0), np.float32) for p in parts], axis=1)
    blocks = [p if p is not None else np.zeros((0, 0), np.float32) for p in parts]
    out = np.zeros((sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)), dtype=np.float32)
    r = c = 0
    for b in blocks:
        out[r:r + b.shape[0], c:c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out
