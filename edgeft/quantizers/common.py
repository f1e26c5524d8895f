"""What quantizers of the optimum export do around their own work: carry the files that are not
the model, and pre-process a graph (shape inference, fusions) before int8."""
from __future__ import annotations

import shutil
from pathlib import Path

from edgeft.runtime.files import MANIFEST, MODEL_FILES


def copy_sidecar_files(src: Path, dst: Path) -> None:
    """Tokenizer, configs, label map and preprocessing travel with every variant; the model does not."""
    for f in Path(src).iterdir():
        if f.is_file() and f.name not in MODEL_FILES and f.name != MANIFEST:
            shutil.copy(f, dst / f.name)


def preprocess(src: Path, workdir: Path) -> Path:
    """Shape inference and graph fusions before quantization (symbolic shapes fail on some graphs)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = workdir / "preprocessed.onnx"
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    return prepared
