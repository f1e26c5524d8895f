"""Benchmark workers: one process per (variant, thread count), driven over a pipe.

A process of its own per variant makes its peak RSS its own, and lets ONNX Runtime variants be
measured without torch in memory. The parent interleaves the workers (one runs at a time), so a
noisy neighbour slows every variant alike instead of one.
"""
from __future__ import annotations

import resource
import time
import traceback
from pathlib import Path

import numpy as np


def _status_kib(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_bytes() -> int:
    # VmHWM, not getrusage: ru_maxrss survives exec, so a spawned child would report its parent's peak
    return _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    return _status_kib("VmRSS")


class OrtClassifier:
    """ONNX variants run through edgeft.runtime: what a device would run (no torch, no transformers)."""

    def __init__(self, folder: Path, threads: int, max_length: int):
        from edgeft.runtime import Classifier

        self.model = Classifier(folder, threads, max_length, verify=False)
        self.encode, self.logits = self.model.encode, self.model.logits


class TorchClassifier:
    def __init__(self, folder: Path, threads: int, max_length: int):
        import json

        import torch
        from transformers import AutoTokenizer

        from edgeft.models import load_model

        torch.set_num_threads(threads)
        self.torch = torch
        labels = json.loads((Path(folder) / "labels.json").read_text())["labels"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = load_model(folder, "classification", labels).eval()
        self.max_length = max_length

    def encode(self, texts: list[str]) -> dict:
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def logits(self, encoded: dict) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(**encoded).logits.numpy()


RUNNERS = {("classification", "pytorch"): TorchClassifier, ("classification", "onnx"): OrtClassifier}


def load_runner(spec: dict):
    if spec["task"] == "generation":
        from edgeft.decoder import OrtGenerator, TorchGenerator
        runner = TorchGenerator if spec["format"] == "pytorch" else OrtGenerator
    else:
        runner = RUNNERS[(spec["task"], spec["format"])]
    return runner(Path(spec["folder"]), spec["threads"], **spec.get("options", {}))


def classify(runner, texts: list[str], batch_size: int) -> list[int]:
    preds = []
    for start in range(0, len(texts), batch_size):
        preds += runner.logits(runner.encode(texts[start:start + batch_size])).argmax(-1).tolist()
    return preds


def time_calls(runner, inputs: list, warmup: int) -> list[float]:
    """Seconds per call of runner.logits on pre-tokenized inputs (tokenization is not timed)."""
    for encoded in inputs[:warmup]:
        runner.logits(encoded)
    times = []
    for encoded in inputs:
        start = time.perf_counter()
        runner.logits(encoded)
        times.append(time.perf_counter() - start)
    return times


def worker(conn, spec: dict) -> None:
    """Load one variant, then answer the parent's requests until told to stop."""
    try:
        rss_before = current_rss_bytes()
        start = time.perf_counter()
        runner = load_runner(spec)
        conn.send({"ok": True, "load_seconds": time.perf_counter() - start, "rss_after_load": current_rss_bytes(),
                   "rss_before_load": rss_before})
        while True:
            request = conn.recv()
            op = request.pop("op")
            if op == "stop":
                conn.send({"ok": True, "peak_rss": peak_rss_bytes()})
                return
            conn.send({"ok": True, **OPS[op](runner, **request)})
    except Exception as e:  # report to the parent instead of dying silently
        conn.send({"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})


def op_classify(runner, texts: list[str], batch_size: int) -> dict:
    return {"predictions": classify(runner, texts, batch_size)}


def op_latency(runner, texts: list[str], warmup: int) -> dict:
    inputs = [runner.encode([t]) for t in texts]
    return {"seconds": time_calls(runner, inputs, warmup)}


def op_throughput(runner, texts: list[str], batch_size: int, warmup: int) -> dict:
    inputs = [runner.encode(texts[i:i + batch_size]) for i in range(0, len(texts) - batch_size + 1, batch_size)]
    seconds = time_calls(runner, inputs, min(warmup, 1))
    return {"examples_per_s": batch_size * len(seconds) / sum(seconds) if seconds else float("nan")}


def op_speed(runner, prompt: list[int], new_tokens: int) -> dict:
    return runner.speed(prompt, new_tokens)


def op_evaluate(runner, prompts: list, answers: list, max_new_tokens: int) -> dict:
    return runner.evaluate(prompts, answers, max_new_tokens)


OPS = {"classify": op_classify, "latency": op_latency, "throughput": op_throughput, "speed": op_speed,
       "evaluate": op_evaluate}


class WorkerPool:
    """One spawned process per spec; `call` runs one request on one worker and waits for it."""

    def __init__(self, specs: dict[str, dict]):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # no torch state inherited: a fresh, honest process
        self.workers = {}
        for key, spec in specs.items():
            parent, child = ctx.Pipe()
            process = ctx.Process(target=worker, args=(child, spec), daemon=True)
            process.start()
            self.workers[key] = (process, parent)
        self.loaded = {key: self._receive(key) for key in self.workers}

    def _receive(self, key: str) -> dict:
        process, conn = self.workers[key]
        reply = conn.recv()
        if not reply.get("ok"):
            self.close()
            from edgeft import EdgeftError
            raise EdgeftError(f"bench worker for {key} failed: {reply['error']}\n{reply.get('traceback', '')}")
        return reply

    def call(self, key: str, op: str, **kwargs) -> dict:
        self.workers[key][1].send({"op": op, **kwargs})
        return self._receive(key)

    def close(self) -> dict[str, int]:
        peaks = {}
        for key, (process, conn) in self.workers.items():
            try:
                if process.is_alive():
                    conn.send({"op": "stop"})
                    peaks[key] = conn.recv().get("peak_rss", 0)
            except (OSError, EOFError):
                pass
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        return peaks
