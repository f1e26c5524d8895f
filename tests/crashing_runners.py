"""Bench runners that die the ways a real worker dies (for tests/test_faults.py)."""
from __future__ import annotations

import ctypes
import os
import resource
import signal


class Steady:
    def __init__(self, folder, threads):
        self.calls = 0

    def quality(self):
        return {"value": 1.0}

    def speed(self):
        self.calls += 1
        return {"call": self.calls}


class Segfault(Steady):
    def quality(self):
        ctypes.string_at(0)  # a read of address 0: SIGSEGV in native code


class Killed(Steady):
    """Killed by the first request it gets after the quality one, whatever it is."""

    def speed(self):
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does

    def __getattr__(self, name):  # any other request (a real bench's ops)
        return lambda **_: os.kill(os.getpid(), signal.SIGKILL)


class OutOfMemory(Steady):
    def quality(self):
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
        return {"value": len(bytearray(4 * 2**30))}  # MemoryError under the limit


class FailsToLoad(Steady):
    def __init__(self, folder, threads):
        raise FileNotFoundError(f"{folder}/model.onnx")
