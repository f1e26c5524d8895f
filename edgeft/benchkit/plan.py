"""The one bench skeleton both tasks run through: start a worker per (model, thread count), ask
each model for its quality once, then time every worker round after round, interleaved.

A task fills a BenchPlan (which workers, which requests, how to score a quality reply); `run_plan`
does the rest and hands back what happened, failures included: a worker that dies fails its own
model, and every other model's results are kept.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgeft.benchkit.workers import WorkerFailed, WorkerPool

Request = tuple[str, dict]  # (runner method, keyword arguments)


@dataclass
class BenchPlan:
    models: list[tuple[str, Path, dict]]  # (name, folder, manifest) in report order
    specs: dict[str, dict]  # worker key "name@threads" -> worker spec
    quality: dict[str, tuple[str, Request]]  # model name -> (worker key, request)
    score: Callable[[str, dict], dict]  # (model name, quality reply) -> metrics
    build: Callable[["BenchResults"], dict]  # results -> the report's task-specific part (variants, table, plot)
    speed: dict[str, list[Request]] = field(default_factory=dict)  # worker key -> timed requests per round
    warmup: dict[str, Request] = field(default_factory=dict)  # worker key -> one untimed request first
    summary: str = ""


@dataclass
class BenchResults:
    quality: dict[str, dict]  # model name -> metrics
    timings: dict[str, list[list[dict]]]  # worker key -> rounds -> replies (one per speed request)
    failed: dict[str, str]  # model name -> why its worker failed
    peaks: dict[str, int]  # worker key -> peak RSS bytes
    loaded: dict[str, dict]  # worker key -> load reply (load_seconds, RSS)


def model_of(key: str) -> str:
    return key.rsplit("@", 1)[0]


def run_plan(plan: BenchPlan, rounds: int, bar=None, pause: float = 0.05) -> BenchResults:
    pool = WorkerPool(plan.specs)
    failed = {model_of(k): reason for k, reason in pool.failed.items()}
    quality: dict[str, dict] = {}
    timings: dict[str, list[list[dict]]] = {key: [] for key in plan.speed}
    try:
        for name, (key, (op, kwargs)) in plan.quality.items():
            if name not in failed:
                _guarded(pool, failed, key, lambda: quality.__setitem__(name, plan.score(name, pool.call(key, op, **kwargs))))
            _tick(bar)
        for key, (op, kwargs) in plan.warmup.items():
            if model_of(key) not in failed:
                _guarded(pool, failed, key, lambda: pool.call(key, op, **kwargs))
        for _ in range(rounds):
            for key, requests in plan.speed.items():
                if model_of(key) not in failed:
                    _guarded(pool, failed, key, lambda: timings[key].append([pool.call(key, op, **kw)
                                                                             for op, kw in requests]))
                    time.sleep(pause)  # let the last worker's threads stop spinning
                _tick(bar)
    finally:
        peaks = pool.close()
    return BenchResults(quality, timings, failed, peaks, pool.loaded)


def _guarded(pool: WorkerPool, failed: dict, key: str, call: Callable) -> None:
    try:
        call()
    except WorkerFailed as e:
        failed[model_of(key)] = e.reason


def _tick(bar) -> None:
    if bar is not None:
        bar.update(1)


def steps(plan: BenchPlan, rounds: int) -> int:
    """How many ticks run_plan makes: for a progress bar."""
    return len(plan.quality) + rounds * len(plan.speed)
