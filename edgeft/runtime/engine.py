"""Many conversations on one generator: continuous batching, for the server (server.py).

Why: a device serving an app (a phone's backend, a home gateway) gets requests at once. Run one at
a time, a conversation waits for every token of the ones before it. Decoding is bound by reading
the weights, so a model call that advances several conversations by a token each reads them once
for all: the batch's tokens come nearly for the price of one.

How: requests wait in a bounded queue (a full queue is refused, and the server answers 503). One
engine thread admits them one per step: a prompt's prefill writes its own row of a KV cache in
place (kvcache.SharedKV, one row per conversation); then every running conversation decodes in one
model call per token, each row attending to its own positions only, which gives the very logits
each would get alone. A conversation leaves as soon as it is done (a stop token, max_tokens, the
context's end, or cancelled by its client: within one token), and the last row moves into its
place so that the batch stays rows 0..n. Conversations on different adapters of an unmerged base
decode in separate calls, one per adapter: onnxruntime binds one set of LoRA inputs per call, and
the choice was grouping by adapter over a batched-LoRA graph that gathers each row's matrices.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.sampling import Sampler


class QueueFull(Exception):
    """More requests wait than the engine accepts: the caller should try again later."""


@dataclass
class Request:
    ids: list[int]
    max_tokens: int
    sampler: Sampler
    emit: Callable[[str, object], None]  # ("token", id), then ("done", reason) or ("error", message)
    adapter: str | None = None  # resolved: None on a merged model, "none" for the bare base
    ignore_stop: bool = False  # generate max_tokens whatever the model says (load tests)
    cancelled: threading.Event = field(default_factory=threading.Event)
    arrived: float = field(default_factory=time.perf_counter)
    length: int = 0  # positions in its cache row
    produced: int = 0
    last: int = 0  # the token to feed next

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class Group:
    """The conversations of one adapter, rows 0..n of their cache."""
    kv: object
    rows: list[Request] = field(default_factory=list)


class Engine:
    def __init__(self, generator, slots: int = 8, max_queue: int = 64, context: int | None = None,
                 observer: Callable[[str, object], None] | None = None):
        self.g, self.slots, self.max_queue = generator, slots, max_queue
        self.context = context  # the model's context length, when its config says one
        self.observe = observer or (lambda event, value: None)  # ("ttft", s) ("token", s) ("done", n) ...
        self.groups: dict[str | None, Group] = {}
        self.waiting: deque[Request] = deque()
        self.cond = threading.Condition()
        self.running = False
        self.thread = threading.Thread(target=self._loop, name="edgeft-engine", daemon=True)

    # --- the caller's side ----------------------------------------------------------------------
    def start(self) -> "Engine":
        self.g.make_cache(1)  # refuses a model whose attention cannot keep its cache in place
        self.running = True
        self.thread.start()
        return self

    def submit(self, request: Request) -> None:
        with self.cond:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are waiting already (--max-queue {self.max_queue})")
            self.waiting.append(request)
            self.cond.notify()

    def stop(self) -> None:
        """Stop after the conversations in hand are done."""
        with self.cond:
            self.running = False
            self.cond.notify()
        self.thread.join()

    @property
    def queued(self) -> int:
        return len(self.waiting)

    @property
    def active(self) -> int:
        return sum(len(g.rows) for g in self.groups.values())

    # --- the engine thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self.cond:
                while self.running and not self.waiting and not self.active:
                    self.cond.wait()
                if not self.running and not self.waiting and not self.active:
                    return
                request = self.waiting.popleft() if self.waiting and self.active < self.slots else None
            if request is not None:
                self._guarded([request], lambda: self._admit(request))
            for adapter, group in list(self.groups.items()):
                if group.rows:
                    self._guarded(group.rows, lambda: self._step(group))

    def _guarded(self, requests: list[Request], work: Callable[[], None]) -> None:
        """A failure of the model fails the requests it was serving, not the engine."""
        try:
            work()
        except Exception as e:  # noqa: BLE001 - reported to each client, the engine carries on
            for request in list(requests):
                self._finish(request, "error", f"{type(e).__name__}: {e}")

    def _group(self, adapter: str | None) -> Group:
        if adapter not in self.groups:
            self.groups[adapter] = Group(self.g.make_cache(self.slots))
        return self.groups[adapter]

    def _admit(self, request: Request) -> None:
        if request.cancelled.is_set():
            request.emit("done", "cancelled")
            return
        group = self._group(request.adapter)
        row = len(group.rows)
        group.rows.append(request)
        logits = self.g.prefill_row(group.kv, row, request.ids, request.adapter)
        request.length = len(request.ids)
        self.observe("ttft", time.perf_counter() - request.arrived)
        self._emit(group, request, request.sampler.pick(logits))

    def _step(self, group: Group) -> None:
        for request in [r for r in group.rows if r.cancelled.is_set()]:  # a client gone: stop within one token
            self._finish(request, "done", "cancelled")
        rows = list(group.rows)
        if not rows:
            return
        start = time.perf_counter()
        logits = self.g.decode_rows(group.kv, [r.last for r in rows], [r.length for r in rows], rows[0].adapter)
        self.observe("step", (time.perf_counter() - start, len(rows)))
        for request in rows:  # every row's cache holds one more position before any row moves
            request.length += 1
        for request, row_logits in zip(rows, logits):
            self._emit(group, request, request.sampler.pick(row_logits))

    def _emit(self, group: Group, request: Request, token: int) -> None:
        if token in self.g.stop_ids and not request.ignore_stop:
            return self._finish(request, "done", "stop")
        request.produced += 1
        request.last = token
        request.emit("token", token)
        if request.produced >= request.max_tokens or (self.context and request.length + 1 >= self.context):
            self._finish(request, "done", "length")

    def _finish(self, request: Request, kind: str, value: str) -> None:
        """The request leaves its group: the last row moves into its place."""
        for group in self.groups.values():
            if request in group.rows:
                row, last = group.rows.index(request), len(group.rows) - 1
                if row != last:
                    group.kv.move(last, row, group.rows[last].length)
                    group.rows[row] = group.rows[last]
                group.rows.pop()
        self.observe("finished", value if kind == "done" else "error")
        request.emit(kind, value)


def check_prompt(ids: list[int], max_tokens: int, context: int | None) -> None:
    """A prompt the model can answer at all: refused naming both numbers otherwise."""
    if context and len(ids) >= context:
        raise EdgeftError(f"the prompt has {len(ids)} tokens; the model's context is {context} tokens")
