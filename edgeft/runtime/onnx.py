"""onnxruntime sessions and fast tokenizers, with the errors a damaged file gives turned into a
message that names the file."""
from __future__ import annotations

import json
from pathlib import Path

from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.files import TOKENIZER_FILE


def ort_errors() -> tuple[type[BaseException], ...]:
    """The exception types onnxruntime raises for a graph it cannot load or run."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
             "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
    return tuple(getattr(state, n) for n in names if hasattr(state, n))


def session(path: Path, threads: int | None = None, stop_spinning: bool = False):
    """`stop_spinning`: the worker threads stop spinning when a run returns, so that two sessions (a
    generator's prompt and decode graphs; the bench's models one after another) do not take each
    other's cores: without it the second of two generators prefilled 15% slower on 2 cores, and with
    it decoding was as fast. A classifier called back to back is 6% slower with it, so not there."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: warnings go nowhere near the console
    if stop_spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except ort_errors() as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EdgeftError(f"{path} cannot be loaded by onnxruntime (damaged or not an ONNX model): {first}") from None


def read_json(path: Path, what: str) -> dict:
    if not Path(path).is_file():
        raise EdgeftError(f"{path} is missing: it holds {what}")
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgeftError(f"{path} is damaged: not valid JSON ({e})") from None


def load_tokenizer(folder: Path, max_length: int | None = None, truncation_side: str = "right"):
    from tokenizers import Tokenizer

    path = Path(folder) / TOKENIZER_FILE
    if not path.exists():
        raise EdgeftError(f"{path} is missing: the runtime needs the fast tokenizer file")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    if max_length:
        tokenizer.enable_truncation(max_length, direction=truncation_side)
    return tokenizer
