"""Every file name edgeft writes or reads, in one place (as gguf-py's constants name every key).

Artifact folders, bundles and run folders are made of these names; nothing else in edgeft spells
them out. This module imports nothing, so a device-side tool can use it on its own.
"""

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
