"""Parity checks: does the ONNX model compute what the PyTorch model computes, on real inputs?"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def ort_session(model_path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def session_feed(session, encoded: dict) -> dict:
    """Only the inputs the graph declares (BERT exports take token_type_ids, others do not)."""
    names = {i.name for i in session.get_inputs()}
    feed = {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items() if k in names}
    if "token_type_ids" in names and "token_type_ids" not in feed:
        feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
    return feed


def classification_parity(torch_dir: Path, onnx_dir: Path, rows: list[dict], labels: list[str]) -> dict:
    import torch
    from transformers import AutoTokenizer
    from edgeft.models import load_model

    tokenizer = AutoTokenizer.from_pretrained(onnx_dir)
    model = load_model(torch_dir, "classification", labels).eval()
    session = ort_session(onnx_dir / "model.onnx")
    texts = [r["text"] for r in rows]
    enc = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
    with torch.no_grad():
        reference = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
    logits = session.run(None, session_feed(session, enc))[0]
    diff = np.abs(reference - logits)
    return {"max_abs_logit_diff": float(diff.max()), "compared": len(texts),
            "agreement": float((reference.argmax(-1) == logits.argmax(-1)).mean())}
