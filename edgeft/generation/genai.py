"""onnxruntime-genai's model builder as an export backend (decoders only).

The builder writes a decoder graph with fused kernels (GroupQueryAttention, SkipSimplifiedLayerNorm),
the KV cache, and, for int4, MatMulNBits weights; plain onnxruntime runs it, so edgeft's runtime
does not need onnxruntime-genai on the device. It runs offline on the merged model's folder.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from edgeft import EdgeftError
from edgeft.runtime.files import ONNX_FILE


def builder_options(precision: str, variant=None) -> list[str]:
    # last-token logits in prefill: the head over every prompt position is a fifth of the work
    options = ["hf_token=false", "prune_lm_head=true"]
    if precision == "int4" and variant is not None:
        options += [f"block_size={variant.block_size}", f"is_symmetric={str(variant.symmetric).lower()}"]
        if variant.accuracy_level is not None:
            options.append(f"accuracy_level={variant.accuracy_level}")
        if variant.head_bits == 8:
            # an int8 head shared with the embedding; the builder names those tensors consistently
            # only under the rtn algorithm (the default one leaves the embedding's inputs dangling)
            options += ["matmul_mixed_precision=last_matmul:int8", "algo_config=rtn"]
    return options


def build_genai(merge_dir: Path, out: Path, precision: str = "fp32", variant=None) -> None:
    """Run the builder into `out` (an existing, empty stage folder)."""
    if precision not in ("fp32", "int4"):
        raise EdgeftError(f"genai builder precision '{precision}' is not supported here (fp32, int4)")
    with tempfile.TemporaryDirectory() as cache:
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(merge_dir), "-o", str(out),
               "-p", precision, "-e", "cpu", "-c", cache, "--extra_options", *builder_options(precision, variant)]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not (Path(out) / ONNX_FILE).exists():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        raise EdgeftError(f"onnxruntime-genai's builder failed on {merge_dir}:\n{tail}")
