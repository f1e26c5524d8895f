"""A bench report's rows: one per model, what it is, its quality, its speed at each thread count and
its memory. The host's bench (`edgeft bench`, classification/ and generation/bench_plan.py) and a
device's (`edgeft-runtime bench`, device_bench.py) build their rows here, so that a device row sits
beside the host's field for field. Every field's name says its unit (`_ms`, `_per_s`, `_bytes`,
`_gb_s`); a `Spread` is a quantity over interleaved rounds (median, min, max).

The bench's defaults live here too (`BenchSettings`): the recipe's `bench` section and the device
bench start from the same numbers.
"""
from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import Any

from edgeft.runtime.stats import percentiles_ms, spread


@dataclass(frozen=True)
class BenchSettings:
    """What a bench does when the recipe says nothing: the recipe's `bench` defaults and the device's."""
    threads: tuple[int, ...] = (1, 2)
    batch_size: int = 32  # classifiers: the batch of the throughput measurement
    warmup: int = 5
    iterations: int = 60  # classifiers: timed batch-1 calls per thread count and round
    rounds: int = 3  # models are interleaved this many times (the machines are noisy)
    prompt_tokens: int = 128  # generators: the speed prompt
    new_tokens: int = 64  # generators: greedy tokens timed after it
    max_new_tokens_eval: int = 8  # generators: greedy tokens per test question


BENCH_DEFAULTS = BenchSettings()


@dataclass
class Spread:
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(**spread(values))


@dataclass
class Latency:
    """A classifier at batch 1: percentiles over every call of every round, and the spread over
    rounds of each round's median and p90 (what a budget reads)."""
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    samples: int
    round_p50_ms: Spread
    round_p90_ms: Spread
    batch_size: int = 1

    @classmethod
    def of(cls, threads: int, rounds: list[list[float]]) -> Latency:
        """From each round's per-call seconds."""
        every = percentiles_ms([s for r in rounds for s in r])
        return cls(threads, **{f"{k}_ms": every[k] for k in ("p50", "p90", "p99", "min", "max")},
                   samples=every["samples"], round_p50_ms=Spread.of([statistics.median(r) * 1000 for r in rounds]),
                   round_p90_ms=Spread.of([percentiles_ms(r)["p90"] for r in rounds]))


@dataclass
class Throughput:
    threads: int
    batch_size: int
    examples_per_s: Spread


@dataclass
class Decode:
    """A generator's greedy decoding at batch 1: time to first token (the prompt's prefill and an
    argmax), then one model call and an argmax per token; tokenization excluded."""
    threads: int
    prompt_tokens: int
    new_tokens: int
    ttft_ms: Spread
    prefill_tokens_per_s: Spread
    decode_tokens_per_s: Spread  # 1 / each round's median step
    ms_per_token_p50: float  # over every step of every round
    ms_per_token_p90: float
    ms_per_token_p99: float
    ceiling_tokens_per_s: float | None = None  # memory bandwidth / bytes read per token (host bench)
    bandwidth_gb_s: float | None = None
    fraction_of_ceiling: float | None = None

    @classmethod
    def of(cls, runs: list[dict], threads: int, prompt_tokens: int, new_tokens: int,
           bandwidth: float | None = None, bytes_per_token: int | None = None) -> Decode:
        """From runs of {"ttft": seconds, "steps": [seconds per decode step]}; with the measured
        bandwidth (bytes/s) and the bytes a step reads, the ceiling they set."""
        steps = percentiles_ms([s for run in runs for s in run["steps"]])
        ttft = [run["ttft"] for run in runs]
        decode = Spread.of([1 / statistics.median(run["steps"]) for run in runs])
        ceiling = bandwidth / bytes_per_token if bandwidth and bytes_per_token else None
        return cls(threads, prompt_tokens, new_tokens, ttft_ms=Spread.of([x * 1000 for x in ttft]),
                   prefill_tokens_per_s=Spread.of([prompt_tokens / x for x in ttft]), decode_tokens_per_s=decode,
                   ms_per_token_p50=steps["p50"], ms_per_token_p90=steps["p90"], ms_per_token_p99=steps["p99"],
                   ceiling_tokens_per_s=ceiling, bandwidth_gb_s=bandwidth / 1e9 if bandwidth else None,
                   fraction_of_ceiling=decode.median / ceiling if ceiling else None)


@dataclass
class Row:
    """One model of a report. A model that failed has `error` and nothing measured."""
    name: str
    format: str  # onnx, pytorch, gguf (or baseline)
    stage: str  # what made it: base, tune, merge, export, quantize; device for a device's own row
    size_bytes: int
    metrics: dict[str, Any] = field(default_factory=dict)  # the task's quality metrics
    path: str | None = None
    error: str | None = None
    predictions: list | None = None  # per test example, in order: what the paired statistics compare
    correct: list[bool] | None = None
    latency: list[Latency] = field(default_factory=list)  # classifiers
    throughput: list[Throughput] = field(default_factory=list)  # classifiers
    decode: list[Decode] = field(default_factory=list)  # generators
    peak_rss_bytes: dict[str, int] = field(default_factory=dict)  # by thread count
    load_seconds: float | None = None
    prompt_graph_file: str | None = None  # generators: the graph this CPU's prompts ran
    examples: list[dict] | None = None  # generators: a few questions with the expected and the given answer
    predicts: str | None = None  # the majority-class baseline's one label
    # a device bench's row, and the rows `edgeft bench BUNDLE --on` puts side by side
    variant: str | None = None
    cold_start: dict | None = None  # {"first_result_s": Spread, "peak_rss_bytes", "rounds"}
    where: str | None = None  # host or device
    through: str | None = None  # the command prefix that reached the device
    machine: dict | None = None
    versions: dict | None = None
    threads: int | None = None

    def speed_at(self, threads: int) -> Latency | Decode | None:
        """The batch-1 speed entry at this thread count (latency or decode, by task)."""
        return next((e for e in [*self.latency, *self.decode] if e.threads == threads), None)

    def to_json(self) -> dict:
        """The row as report.json holds it: fields left None out; a failed row holds nothing measured."""
        failed = self.error is not None
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and not (failed and v in ({}, []))}

    @classmethod
    def from_json(cls, data: dict) -> Row:
        known = {f.name for f in dataclasses.fields(cls)}
        row = cls(**{k: v for k, v in data.items() if k in known})
        row.latency = [_entry(Latency, e) for e in row.latency]
        row.throughput = [_entry(Throughput, e) for e in row.throughput]
        row.decode = [_entry(Decode, e) for e in row.decode]
        return row


def _entry(kind, data: dict):
    spreads = {f.name for f in dataclasses.fields(kind) if f.type == "Spread"}
    return kind(**{k: Spread(**v) if k in spreads else v for k, v in data.items()})


def rows_of(report: dict) -> list[Row]:
    """A report's rows, typed."""
    return [Row.from_json(v) for v in report["variants"]]


def example_text(row: dict) -> str:
    """The input text of a data row: a labelled row's text, or a chat's last user turn."""
    return row.get("text") or row["messages"][-2]["content"]
