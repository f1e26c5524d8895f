"""Benchmark workers: one process per (variant, thread count), driven over a pipe.

A process of its own per variant makes its peak RSS its own, and lets ONNX Runtime variants be
measured without torch in memory. The parent interleaves the workers (one runs at a time), so a
noisy neighbour slows every variant alike instead of one. A worker names its runner by import
path ("edgeft.classification.runners:OrtClassifier"); each request calls a method of the runner.
A worker that dies (killed, crashed, out of memory) fails only its own variant.
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path

from edgeft.runtime.machine import current_rss_bytes, peak_rss_bytes  # noqa: F401  (bench/ imports them here)


def load_runner(spec: dict):
    """The runner class a spec names ("package.module:Class"), built on the spec's folder."""
    import importlib

    module, _, name = spec["runner"].partition(":")
    runner = getattr(importlib.import_module(module), name)
    return runner(Path(spec["folder"]), spec["threads"], **spec.get("options", {}))


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
            conn.send({"ok": True, **getattr(runner, op)(**request)})
    except Exception as e:  # report to the parent instead of dying silently
        conn.send({"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})


class WorkerFailed(Exception):
    def __init__(self, key: str, reason: str):
        super().__init__(f"bench worker for {key} {reason}")
        self.key, self.reason = key, reason


def death_reason(exitcode: int | None) -> str:
    import signal

    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = {"SIGKILL": " (out of memory, or killed)", "SIGSEGV": " (a crash in native code)",
                "SIGABRT": " (aborted by native code)", "SIGILL": " (an instruction this CPU lacks)"}.get(name, "")
        return f"died: killed by signal {-exitcode} ({name}){hint}"
    return f"died: exit code {exitcode}"


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
            child.close()  # the parent's copy: recv() then sees EOF when the worker dies
            self.workers[key] = (process, parent)
        self.loaded: dict[str, dict] = {}
        self.failed: dict[str, str] = {}
        for key in list(self.workers):
            try:
                self.loaded[key] = self._receive(key)
            except WorkerFailed as e:
                self.failed[key] = e.reason

    def _receive(self, key: str) -> dict:
        process, conn = self.workers[key]
        try:
            reply = conn.recv()
        except (EOFError, OSError):
            process.join(timeout=10)
            self._drop(key)
            raise WorkerFailed(key, death_reason(process.exitcode)) from None
        if not reply.get("ok"):
            self._drop(key)
            last = reply.get("traceback", "").strip().splitlines()[-1:] or [reply["error"]]
            raise WorkerFailed(key, f"failed: {reply['error']} ({last[0]})")
        return reply

    def _drop(self, key: str) -> None:
        process, conn = self.workers.pop(key)
        conn.close()
        if process.is_alive():
            process.kill()
        process.join(timeout=10)

    def call(self, key: str, op: str, **kwargs) -> dict:
        if key not in self.workers:
            raise WorkerFailed(key, self.failed.get(key, "is not running"))
        try:
            self.workers[key][1].send({"op": op, **kwargs})
        except (BrokenPipeError, OSError):
            pass  # the worker is gone: _receive says how
        try:
            return self._receive(key)
        except WorkerFailed as e:
            self.failed[key] = e.reason
            raise

    def close(self) -> dict[str, int]:
        peaks = {}
        for key, (process, conn) in list(self.workers.items()):
            try:
                if process.is_alive():
                    conn.send({"op": "stop"})
                    peaks[key] = conn.recv().get("peak_rss", 0)
            except (OSError, EOFError):
                pass
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        self.workers.clear()
        return peaks
