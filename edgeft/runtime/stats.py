"""The statistics every bench reports, on the host (`edgeft bench`) and on a device
(`edgeft-runtime bench`) alike: medians with min-max over rounds, latency percentiles, and the
memory bandwidth that bounds decode speed. The report rows built from them are report.py's."""
from __future__ import annotations

import statistics
import time

import numpy as np


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def percentiles_ms(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "min": float(ms.min()), "max": float(ms.max()),
            "samples": int(ms.size)}


def memory_bandwidth(threads: int, megabytes: int = 512, repeats: int = 9) -> float:
    """Read bandwidth (bytes/s): `threads` threads each stream a share of a large array through a
    BLAS dot product (no GIL held, one pass over memory); the best of several repeats, as STREAM
    reports, since the ceiling is what the memory can do when nothing else gets in the way."""
    import threading

    data = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    chunks = np.array_split(data, threads)
    rates = []
    for _ in range(repeats):
        workers = [threading.Thread(target=np.dot, args=(c, c)) for c in chunks]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        rates.append(data.nbytes / (time.perf_counter() - start))
    return max(rates)
