"""The statistics every bench reports, on the host (`edgeft bench`) and on a device
(`edgeft-runtime bench`) alike, so that their rows compare field for field: medians with min-max
over rounds, latency percentiles, the speed entries of a report row, and the memory bandwidth that
bounds decode speed."""
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


def latency_entry(threads: int, rounds: list[list[float]]) -> dict:
    """Batch-1 latency: percentiles over every call of every round, and the spread over rounds of each
    round's median and p90 (what a budget reads)."""
    return {"threads": threads, "batch_size": 1, **percentiles_ms([s for r in rounds for s in r]),
            "round_p50": spread([statistics.median(r) * 1000 for r in rounds]),
            "round_p90": spread([float(np.percentile(r, 90)) * 1000 for r in rounds])}


def throughput_entry(threads: int, batch_size: int, rates: list[float]) -> dict:
    return {"threads": threads, "batch_size": batch_size, "examples_per_s": spread(rates)}


def decode_entry(runs: list[dict], threads: int, prompt_tokens: int, new_tokens: int) -> dict:
    """Greedy decoding at batch 1 from runs of {"ttft": seconds, "steps": [seconds per decode step]}."""
    per_token = percentiles_ms([s for run in runs for s in run["steps"]])
    ttft = [run["ttft"] for run in runs]
    return {"threads": threads, "batch_size": 1, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
            "ttft_ms": spread([x * 1000 for x in ttft]), "prefill_tokens_per_s": spread([prompt_tokens / x for x in ttft]),
            "decode_tokens_per_s": spread([1 / statistics.median(run["steps"]) for run in runs]),
            "ms_per_token_p50": per_token["p50"], "ms_per_token_p90": per_token["p90"],
            "p50": per_token["p50"], "p90": per_token["p90"], "p99": per_token["p99"]}
