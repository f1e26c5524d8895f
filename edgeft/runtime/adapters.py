"""Per-request LoRA adapters on one shared base graph, through onnxruntime's `LoraAdapter`.

A base built unmerged (`quantize.variants[].lora: unmerged`) takes every LoRA A/B matrix as a graph
input with a free rank. Its own adapters sit in `adapters/*.onnx_adapter`; adapter-only bundles
(`edgeft package --adapter-only`) add more, each bound by hash to the base it was trained and
quantized for. A run activates one adapter with `RunOptions.add_active_adapter` (the file is
memory-mapped once; switching costs no copy); the bare base runs with rank-0 matrices.
"""
from __future__ import annotations

from pathlib import Path

from edgeft.runtime.bundle import read_manifest
from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.files import ADAPTER_SUFFIX, ADAPTERS_DIR, GENERATION_FILE
from edgeft.runtime.onnx import read_json

NO_ADAPTER = "none"  # the bare base


def is_lora_input(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


class Adapters:
    """The adapters one base graph can run with, by name."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.loaded: dict[str, tuple] = {}  # name -> (LoraAdapter, chat settings or None)
        self._base_sha = None
        for path in sorted((self.folder / ADAPTERS_DIR).glob(f"*{ADAPTER_SUFFIX}")):
            self._load(path.name[:-len(ADAPTER_SUFFIX)], path, None)
        self.default = next(iter(self.loaded), NO_ADAPTER)

    @property
    def base_sha(self) -> str:
        """The base's hash as the build recorded it (the manifest's own sha256 vouches for the files)."""
        if self._base_sha is None:
            manifest = read_manifest(self.folder, what="model", verify=False)
            self._base_sha = manifest.get("base_sha256") or manifest.get("details", {}).get("base_sha256")
            if not self._base_sha:
                raise EdgeftError(f"{self.folder}/manifest.json records no base_sha256: rebuild it with "
                                  "lora: unmerged to take adapter bundles")
        return self._base_sha

    def _load(self, name: str, path: Path, settings: dict | None) -> None:
        import onnxruntime as ort

        adapter = ort.LoraAdapter()
        adapter.Load(str(path))
        self.loaded[name] = (adapter, settings)

    def add(self, bundle: Path) -> str:
        """Load an adapter-only bundle after checking its files and that it was made for this base."""
        manifest = read_manifest(bundle, stage="adapter", what="adapter bundle")
        if manifest["base_sha256"] != self.base_sha:
            raise EdgeftError(f"adapter bundle {bundle} was made for the base with sha256 {manifest['base_sha256']}, "
                              f"but {self.folder} holds the base with sha256 {self.base_sha}")
        name = manifest["adapter_name"]
        settings = read_json(Path(bundle) / GENERATION_FILE, "the adapter's chat settings") \
            if (Path(bundle) / GENERATION_FILE).exists() else None
        self._load(name, Path(bundle) / manifest["adapter_file"], settings)
        return name

    def resolve(self, name: str | None) -> str:
        name = self.default if name is None else name
        if name != NO_ADAPTER and name not in self.loaded:
            raise EdgeftError(f"no adapter named '{name}' is loaded (loaded: {', '.join(self.loaded) or 'none'}; "
                              f"'{NO_ADAPTER}' runs the bare base)")
        return name

    def settings(self, name: str) -> dict | None:
        return self.loaded[name][1] if name in self.loaded else None

    def run_options(self, name: str):
        """The RunOptions for one model call with adapter `name` (resolved); None for the bare base,
        whose rank-0 defaults make the LoRA path add zeros."""
        import onnxruntime as ort

        if name == NO_ADAPTER:
            return None
        options = ort.RunOptions()
        options.add_active_adapter(self.loaded[name][0])
        return options
