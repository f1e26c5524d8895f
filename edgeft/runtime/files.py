"""Every file name edgeft writes or reads, in one place (as gguf-py's constants name every key).

Artifact folders, bundles and run folders are made of these names; nothing else in edgeft spells
them out. A run folder's layout is `RunLayout`, which every caller asks. This module imports nothing
but the standard library, so a device-side tool can use it on its own.
"""
from __future__ import annotations

from pathlib import Path

# every artifact folder
MANIFEST = "manifest.json"

# models and what travels with them
ONNX_FILE = "model.onnx"
ONNX_DATA_FILES = ("model.onnx.data", "model.onnx_data")  # genai builder / optimum external weights
PREFILL_FILE = "model.prefill.onnx"  # generation: the prompt graph over the same weights
# generation: the prompt graph at quantize.variants[].prefill_accuracy_level, for CPUs with AVX-512
PREFILL_AVX512_FILE = "model.prefill.avx512.onnx"
GGUF_FILE = "model.gguf"  # generation: the model for llama.cpp (export backend gguf)
TOKENIZER_FILE = "tokenizer.json"
LABELS_FILE = "labels.json"  # label map (classification), label words (generation)
PREPROCESS_FILE = "preprocess.json"  # classification: max_length, truncation side, padding
GENERATION_FILE = "generation.json"  # generation: chat format, stop tokens, system prompt
GENAI_CONFIG_FILE = "genai_config.json"
HF_CONFIG_FILE = "config.json"
SAFETENSORS_SUFFIX = ".safetensors"
MODEL_FILES = (ONNX_FILE, *ONNX_DATA_FILES, PREFILL_FILE, PREFILL_AVX512_FILE, GGUF_FILE)
MODEL_FILE_SUFFIXES = (".onnx", ".onnx_data", ".data", ".onnx_adapter", SAFETENSORS_SUFFIX, ".bin", ".gguf")
# what a bundle carries for the runtime
RUNTIME_FILES = (*MODEL_FILES, TOKENIZER_FILE, LABELS_FILE, PREPROCESS_FILE, GENERATION_FILE, GENAI_CONFIG_FILE)

# unmerged LoRA (generation): the base graph's adapters, and an adapter-only bundle's file
ADAPTERS_DIR = "adapters"
ADAPTER_SUFFIX = ".onnx_adapter"


# data artifact
SPLITS = ("train", "validation", "test")


def split_file(split: str) -> str:
    return f"{split}.jsonl"


# tune artifact
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE = "state.pt"
CHECKPOINT_PROGRESS = "progress.json"
ADAPTER_DIR = "adapter"

# bench artifact
REPORT_JSON = "report.json"
REPORT_CSV = "report.csv"
REPORT_MD = "report.md"
REPORT_PLOT = "accuracy_latency.png"
REPORT_HTML = "report.html"  # one self-contained page: table, plot, selection, ledger

# package artifact
BUNDLE_README = "README.md"
RECIPE_FILE = "recipe.yaml"
TOKENIZER_CHECK_FILE = "tokenizer_check.json"  # ids of sample texts at package time: the device checks them
EVAL_FILE = "eval.jsonl"  # a slice of the held-out test split, so the device can measure accuracy

# run folder
RUN_LOCK = ".edgeft.lock"
RUN_SUMMARY = "run.json"
RUN_LOG = "edgeft.log"  # third-party logging and warnings of every stage
ERROR_LOG = "edgeft-error.log"  # the traceback of an internal error
PARTIAL_SUFFIX = ".partial"


QUANTIZE_DIR = "quantize"


class RunLayout:
    """Where each stage's artifact lies in a run folder (`edgeft run` writes them all):

        data/  base/  tune/  merge/  export-<backend>/  quantize/<variant>/  bench/  package/
        recipe.yaml  run.json  edgeft.log  .edgeft.lock  [mlruns/]
    (`edgeft adapt` writes data/, tune/ and adapter/ the same way.)
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)

    data = property(lambda self: self.root / "data")
    base = property(lambda self: self.root / "base")  # an imported GGUF base, as a Hugging Face folder
    tune = property(lambda self: self.root / "tune")
    merge = property(lambda self: self.root / "merge")
    quantized = property(lambda self: self.root / QUANTIZE_DIR)  # one folder per variant below it
    bench = property(lambda self: self.root / "bench")
    package = property(lambda self: self.root / "package")
    adapter = property(lambda self: self.root / "adapter")  # `edgeft adapt`'s adapter bundle
    recipe = property(lambda self: self.root / RECIPE_FILE)
    summary = property(lambda self: self.root / RUN_SUMMARY)
    log = property(lambda self: self.root / RUN_LOG)
    lock = property(lambda self: self.root / RUN_LOCK)
    report = property(lambda self: self.bench / REPORT_JSON)
    mlflow = property(lambda self: self.root / "mlruns")  # `edgeft run --track mlflow`'s store

    def export(self, backend: str) -> Path:
        return self.root / f"export-{backend}"

    def variant(self, name: str) -> Path:
        return self.quantized / name

    @classmethod
    def of(cls, artifact: Path | str) -> RunLayout:
        """The run folder an artifact lies in: its parent, or its grandparent for a quantized variant
        (a `.partial` folder being written counts as the folder it becomes)."""
        folder = Path(artifact).resolve()
        return cls(folder.parent.parent if folder.parent.name == QUANTIZE_DIR else folder.parent)
