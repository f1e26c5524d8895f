"""GGUF: the merged model for llama.cpp, converted and quantized by llama.cpp's own code, and run
through llama-cpp-python so the bench scores and times it with the same loop and token ids as the
ONNX variants.

Why: a user who ends in llama.cpp (or Ollama, which runs it) should see, on their own fine-tune,
what the conversion kept. A GGUF that answers worse than the notebook is a frequent complaint in
the trackers (unsloth 976, 1073); here it is a measured row in the bench.

Nothing here writes a GGUF type itself: `convert_hf_to_gguf.py` comes from the same llama.cpp
source as the installed library (`edgeft llamacpp-setup` builds both from the llama-cpp-python
sdist), and quantization is the library's `llama_model_quantize`.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from edgeft import EdgeftError, cache_dir
from edgeft.core.variants import BuildContext, Variant, VariantKind, register_variant
from edgeft.runtime.files import GENERATION_FILE, GGUF_FILE, TOKENIZER_FILE
from edgeft.runtime.greedy import GreedyDecoding
from edgeft.runtime.onnx import load_tokenizer, read_json

LLAMA_CPP_PYTHON = "0.3.36"  # the sdist whose vendored llama.cpp edgeft was measured with
LLAMA_CPP_ENV = "EDGEFT_LLAMA_CPP"  # a llama.cpp source tree holding convert_hf_to_gguf.py
CONVERTER = "convert_hf_to_gguf.py"
SETUP_HINT = ("the gguf backend needs the optional extra: `edgeft llamacpp-setup` builds llama-cpp-python "
              f"{LLAMA_CPP_PYTHON} from source (CMAKE_ARGS with -DGGML_NATIVE=OFF, the CPU's AVX-512/VNNI flags, "
              "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF: AMX tiles crash in many VMs) and unpacks llama.cpp's "
              f"{CONVERTER} beside it; or install edgeft[gguf] yourself and set {LLAMA_CPP_ENV} to a llama.cpp "
              "checkout")


CACHE = cache_dir()


def tree_dir() -> Path:
    """$EDGEFT_LLAMA_CPP, else where `edgeft llamacpp-setup` unpacks llama.cpp's converter."""
    env = os.environ.get(LLAMA_CPP_ENV)
    return Path(env) if env else CACHE / f"llama.cpp-{LLAMA_CPP_PYTHON}"


def llama_cpp_tree() -> Path:
    """The llama.cpp tree holding the converter, or an error naming the extra."""
    tree = tree_dir()
    if not (tree / CONVERTER).is_file():
        env = os.environ.get(LLAMA_CPP_ENV)
        where = f"{LLAMA_CPP_ENV}={env}" if env else str(tree)
        raise EdgeftError(f"llama.cpp's {CONVERTER} is not in {where}: {SETUP_HINT}")
    return tree


def llama_cpp():
    """The llama_cpp module, or an error naming the extra and how to build it."""
    try:
        import llama_cpp
        from llama_cpp._logger import set_verbose
    except ImportError:
        raise EdgeftError(f"llama-cpp-python is not installed: {SETUP_HINT}") from None
    set_verbose(False)  # llama.cpp's own log to stderr: errors only
    return llama_cpp


def ftype(name: str) -> int:
    """llama.cpp's number for a file type name (F32, F16, Q8_0, Q4_0, Q4_K_M, ...)."""
    lib = llama_cpp()
    value = getattr(lib, "LLAMA_FTYPE_ALL_F32" if name == "F32" else f"LLAMA_FTYPE_MOSTLY_{name}", None)
    if value is None:
        raise EdgeftError(f"llama.cpp {LLAMA_CPP_PYTHON} has no GGUF type '{name}'")
    return int(value)


def byte_level_view(merged_dir: Path, staging: Path) -> Path:
    """The merged folder as the converter should read it: links to every file, and a tokenizer.json
    that says plainly what it is when it is byte-level BPE.

    transformers writes a GGUF-imported GPT-2-style tokenizer (SmolLM2's) with `byte_fallback` and
    a SentencePiece-like decoder around its ByteLevel one. Neither changes an encoding (the ByteLevel
    pre-tokenizer maps every byte to a token first), but the converter reads them as a Llama
    SentencePiece vocabulary and writes a GGUF that llama.cpp aborts loading (`unordered_map::at`,
    no newline token). Plain byte-level BPE makes it write the GPT-2 vocabulary (pre-tokenizer
    `smollm`), which tokenizes exactly as tokenizer.json does.
    """
    import json

    staging.mkdir(parents=True, exist_ok=True)
    for f in Path(merged_dir).iterdir():
        (staging / f.name).symlink_to(f.resolve())
    tokenizer = json.loads((Path(merged_dir) / TOKENIZER_FILE).read_text())
    if (tokenizer.get("pre_tokenizer") or {}).get("type") == "ByteLevel" and tokenizer["model"].get("byte_fallback"):
        tokenizer["model"]["byte_fallback"] = False
        tokenizer["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
        (staging / TOKENIZER_FILE).unlink()
        (staging / TOKENIZER_FILE).write_text(json.dumps(tokenizer, ensure_ascii=False))
    return staging


def convert(merged_dir: Path, out_file: Path, outtype: str = "f32") -> None:
    """llama.cpp's converter on a Hugging Face folder (in a subprocess: it is a script, and it
    brings its own gguf-py)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run_converter(byte_level_view(merged_dir, Path(tmp) / "model"), out_file, outtype)


def run_converter(merged_dir: Path, out_file: Path, outtype: str) -> None:
    tree = llama_cpp_tree()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / "gguf-py"), str(tree),
                                                        os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(tree / CONVERTER), str(merged_dir), "--outfile", str(out_file), "--outtype", outtype]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not out_file.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeftError(f"llama.cpp's {CONVERTER} failed on {merged_dir}: {last}")


def quantize_file(src: Path, dst: Path, type_name: str, threads: int | None = None) -> None:
    lib = llama_cpp()
    params = lib.llama_model_quantize_default_params()
    params.ftype = ftype(type_name)
    params.nthread = threads or os.cpu_count() or 1
    if lib.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0 or not dst.is_file():
        raise EdgeftError(f"llama.cpp could not quantize {src} to {type_name}")


class LlamaCppGenerator(GreedyDecoding):
    """A GGUF folder (model.gguf, tokenizer.json, generation.json) behind the runtime Generator's
    interface. Prompts are tokenizer.json's ids, the ones every other model gets (chat prompts are
    checked against the GGUF's own tokenizer). One conversation at a time: the state is the number
    of positions kept."""

    def __init__(self, folder: Path, threads: int | None = None, context: int = 2048, exact: bool = False):
        self.lib = lib = llama_cpp()
        folder = Path(folder)
        self.settings = read_json(folder / GENERATION_FILE, "the chat format and stop tokens")
        self.tokenizer = load_tokenizer(folder)
        self.stop_ids = set(self.settings["eos_token_ids"])
        threads = threads or os.cpu_count() or 1
        # llama.cpp as its own tools run it: flash attention on (their default "auto" on a CPU;
        # llama-cpp-python's is off), KV cache F16. `exact`: F32 cache and no flash attention (its F16
        # internals move logits by ~0.02), so that export parity sees the conversion alone.
        cache = {"type_k": lib.GGML_TYPE_F32, "type_v": lib.GGML_TYPE_F32} if exact else {}
        self.llm = lib.Llama(str(folder / GGUF_FILE), n_ctx=context, n_batch=512, n_threads=threads,
                             n_threads_batch=threads, logits_all=False, flash_attn=not exact, verbose=False, **cache)
        self.vocab = self.llm.n_vocab()

    def encode_chat(self, messages: list[dict], adapter: str | None = None) -> list[int]:
        """tokenizer.json's ids, checked against the GGUF's own tokenizer (what llama-cli would use)."""
        text = self.chat_text(messages, adapter)
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        own = self.llm.tokenize(text.encode(), add_bos=False, special=True)
        if own != ids:
            first = next(i for i, (a, b) in enumerate(zip([*own, None], [*ids, None])) if a != b)
            raise EdgeftError(f"the GGUF's tokenizer splits a prompt differently from tokenizer.json (token {first}: "
                              f"{own[first:first + 3]} against {ids[first:first + 3]}): llama.cpp would not see "
                              "what the model was trained on")
        return ids

    def _eval(self, ids: list[int], length: int):
        self.llm.n_tokens = length  # eval() drops the cache from here on
        self.llm.eval(ids)
        last = self.lib.llama_get_logits_ith(self.llm.ctx, -1)  # logits_all=False keeps only these
        logits = np.ctypeslib.as_array(last, shape=(self.vocab,)).copy()
        return logits, length + len(ids)

    def prefill(self, ids: list[int], adapter: str | None = None):
        if adapter is not None:
            raise EdgeftError("a GGUF model runs merged: it takes no adapter")
        return self._eval(list(ids), 0)

    def step(self, token: int, state):
        return self._eval([token], state)


class GgufVariant(Variant):
    """A llama.cpp type of the GGUF export (source gguf), made by llama.cpp's own quantizer."""
    source: Literal["gguf"]
    method: Literal["gguf"]
    type: Literal["F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_0", "Q4_1", "Q3_K_M",
                  "Q2_K"] = Field("Q4_K_M", description="llama.cpp's file type (llama-quantize's names)")


def build_gguf_variant(ctx: BuildContext) -> dict:
    from edgeft.quantizers.common import copy_sidecar_files

    copy_sidecar_files(ctx.export_dir, ctx.out)
    quantize_file(Path(ctx.export_dir) / GGUF_FILE, ctx.out / GGUF_FILE, ctx.variant.type)
    return {"gguf_type": ctx.variant.type}


GGUF = register_variant(VariantKind("gguf", ("gguf",), GgufVariant, build_gguf_variant, ("generation",),
                                    "llama.cpp's types of the GGUF export, by its quantizer"))
