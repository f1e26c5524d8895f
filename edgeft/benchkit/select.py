"""Picking the variant to ship from a bench report, for a budget: `select` in the recipe, or
`edgeft select RUN --max-quality-drop 1 ...`.

Every variant is judged against every limit and gets its reasons. Quality is judged against the
fine-tuned fp32 model on the same examples (paired.py): a variant fits only when the worse end of
the drop's interval is inside the budget; when the interval straddles the budget, it is
undecided at this sample size, and the verdict says how many examples would decide it.

A small test set cannot confirm a small budget at all: on 318 examples, one lost example alone
puts the interval's worse end at 0.9 points, so with a 0.5-point budget every variant that differs
from the reference at all would be undecided, and the choice useless. The budget a test set can
confirm is its resolution (`confirmable_drop`). Below it, quality is judged by the paired point
estimate (a variant fits when its drop is within the budget, is rejected when its whole interval is
beyond), the interval is still shown, and the selection's `quality_rule` says so in one line with
the test-set size that would confirm the budget. Speed
limits read the median over rounds, with the min-max beside it. Among the variants that fit, the
objective picks: fastest, smallest or most accurate, ties broken by quality, then size, then name.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

from edgeft.benchkit.paired import examples_to_decide, paired_drop
from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.report import Decode, Row, Spread, rows_of


def _one(value: float) -> Spread:
    return Spread(value, value, value)


def _at(kind: str, key: str) -> Callable[[Row, int], Spread | None]:
    """A Spread of a row's latency or decode entry at a thread count."""
    def read(row: Row, threads: int) -> Spread | None:
        entry = next((e for e in getattr(row, kind) if e.threads == threads), None)
        return None if entry is None else getattr(entry, key)
    return read


def _rss(row: Row, threads: int) -> Spread | None:
    peak = row.peak_rss_bytes.get(str(threads))
    return None if not peak else _one(peak / 2**20)


@dataclass(frozen=True)
class Limit:
    field: str  # in the recipe's select section, and --field on the command line
    label: str
    unit: str
    at_most: bool
    read: Callable[[Row, int], Spread | None]


LIMITS = (
    Limit("max_size_mib", "size", "MiB", True, lambda row, _: _one(row.size_bytes / 2**20)),
    Limit("max_peak_rss_mib", "peak RSS", "MiB", True, _rss),
    Limit("max_p90_ms", "p90", "ms", True, _at("latency", "round_p90_ms")),
    Limit("max_ttft_ms", "TTFT", "ms", True, _at("decode", "ttft_ms")),
    Limit("min_decode_tokens_per_s", "decode", "tok/s", False, _at("decode", "decode_tokens_per_s")),
)
OBJECTIVES = {  # smaller key is better
    "fastest": lambda v: (-v["speed"] if v["speed_higher_is_better"] else v["speed"]),
    "smallest": lambda v: v["size_mib"],
    "most_accurate": lambda v: -v["quality"],
}


def reference_row(rows: list[Row]) -> Row:
    """The fine-tuned fp32 model: the merged PyTorch model, or the first fp32 export."""
    scored = [r for r in rows if r.error is None and r.correct]
    ref = next((r for r in scored if r.stage == "merge"), None) or next((r for r in scored if r.stage == "export"), None)
    if ref is None:
        raise EdgeftError("select: the report has no fine-tuned fp32 model (merged or exported) to judge quality against")
    return ref


def candidates(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.error is None and r.stage in ("export", "quantize") and r.format == "onnx"]


def confirmable_drop(examples: int, confidence: float) -> float:
    """The smallest budget, in points, that `examples` paired examples can confirm: the worse end of the
    interval for a candidate that loses one example and gains none (a Poisson count of one: the
    bootstrap resamples it as such)."""
    from scipy.stats import poisson

    return 100 * float(poisson.ppf((1 + confidence) / 2, 1)) / examples


def quality_rule(examples: int, budget: float, confidence: float) -> tuple[bool, str]:
    """(judge by the point estimate?, the rule in one line)."""
    floor, level = confirmable_drop(examples, confidence), int(confidence * 100)
    if budget >= floor:
        return False, (f"a variant fits when the worse end of its paired {level}% interval is within {budget:g} pts "
                       f"({examples} test examples confirm down to {floor:.2f} pts)")
    needed = math.ceil(floor * examples / budget) if budget > 0 else None
    return True, (f"{examples} test examples cannot confirm {budget:g} pts (one lost example alone reads up to "
                  f"{floor:.2f} pts at {level}%" + (f"; about {needed} would" if needed else "") + "), so a variant fits "
                  f"when its paired drop is within {budget:g} pts by the point estimate and is rejected when its whole "
                  "interval is beyond; each interval is shown")


def judge_quality(row: Row, ref: Row, budget: float, metric: str, confidence: float,
                  by_point: bool = False) -> tuple[str, str]:
    drop = paired_drop(ref.correct, row.correct, confidence)
    change, worst, best = (0.0 - x for x in (drop.points, drop.high, drop.low))  # 0.0 - 0.0 is +0.0, not -0.0
    said = (f"{metric} {change:+.1f} pts ({int(confidence * 100)}% interval {worst:+.1f} to {best:+.1f}, "
            f"{drop.reference_only} lost / {drop.candidate_only} gained of {drop.examples}, McNemar p {drop.mcnemar_p:.2g})")
    if drop.high <= budget:
        return "fits", f"{said} within {budget:g}"
    if drop.low > budget:
        return "rejected", f"{said} > {budget:g}"
    if by_point and drop.points <= budget:
        return "fits", f"{said}: within {budget:g} by the point estimate (not confirmed at {drop.examples} examples)"
    needed = examples_to_decide(drop, budget)
    return "undecided", (f"{said} straddles {budget:g}: undecided at {drop.examples} examples"
                         + (f", about {needed} would decide it" if needed else ""))


def judge_limit(row: Row, limit: Limit, value: float, threads: int) -> tuple[str, str, float]:
    """(status, reason, relative excess) of one speed/size limit."""
    got = limit.read(row, threads)
    if got is None:
        raise EdgeftError(f"select.{limit.field}: the report has no {limit.label} at {threads} threads "
                          f"(for {row.name})")
    median, low, high = got.median, got.min, got.max
    ok = median <= value if limit.at_most else median >= value
    shown = f"{limit.label} {median:.3g} {limit.unit}" + (f" ({low:.3g}-{high:.3g})" if high > low else "")
    excess = (median - value) / value if limit.at_most else (value - median) / value
    return ("fits" if ok else "rejected", f"{shown} {'<=' if limit.at_most else '>='} {value:g}" if ok
            else f"{shown} {'>' if limit.at_most else '<'} {value:g}", max(excess, 0.0))


def verdict(row: Row, ref: Row, cfg, threads: int, metric: str, by_point: bool = False) -> dict:
    reasons, statuses, excess = [], [], 0.0
    if cfg.max_quality_drop is not None:
        status, reason = judge_quality(row, ref, cfg.max_quality_drop, metric.replace("_", " "), cfg.confidence,
                                       by_point)
        statuses.append(status)
        reasons.append(reason)
    for limit in LIMITS:
        if (value := getattr(cfg, limit.field)) is not None:
            status, reason, over = judge_limit(row, limit, value, threads)
            statuses.append(status)
            reasons.append(reason)
            excess += over
    worst = "rejected" if "rejected" in statuses else "undecided" if "undecided" in statuses else "fits"
    missed = [reason for reason, status in zip(reasons, statuses) if status != "fits"]
    entry = row.speed_at(threads)
    decode = isinstance(entry, Decode)
    speed = entry.decode_tokens_per_s.median if decode else entry.round_p50_ms.median if entry else None
    if row.where == "device":
        reasons.append(f"speed and memory measured on the device ({row.machine.get('cpu')}, {threads} threads)")
    shown = (f"decode {speed:.1f} tok/s" if decode else f"p50 {speed:.2f} ms") if speed else "not timed"
    return {"name": row.name, "status": worst, "reasons": reasons,
            "shown": f"{shown}, {row.size_bytes / 2**20:.1f} MiB", "misses": statuses.count("rejected"), "missed": missed,
            "excess": excess, "quality": row.metrics[metric], "size_mib": row.size_bytes / 2**20,
            "speed": speed or float("inf"), "speed_higher_is_better": decode}


def with_device_rows(rows: list[Row], device_reports: list[dict]) -> list[Row]:
    """Speed, memory and thread count measured on a device (`edgeft bench BUNDLE --on ...`) replace the
    host's for the variant it measured; quality stays the host's (the whole test split)."""
    measured = {r.variant: r for rep in device_reports for r in rows_of(rep) if r.where == "device"}
    out = []
    for row in rows:
        device = measured.get(row.name)
        out.append(row if device is None else dataclasses.replace(
            row, latency=device.latency, decode=device.decode, peak_rss_bytes=device.peak_rss_bytes,
            where="device", machine=device.machine, threads=device.threads))
    return out


def select_variant(report: dict, cfg, device_reports: list[dict] = ()) -> dict:
    """{"verdicts": [...], "chosen": name, "rule": why}; raises EdgeftError when nothing fits."""
    if "quality_metric" not in report:
        raise EdgeftError("select: this report has no per-example scores (made by an older edgeft): run the bench "
                          "again (`edgeft run` reruns it)")
    threads = cfg.threads or max(report["threads"])
    metric = report["quality_metric"]
    rows = rows_of(report)
    ref = reference_row(rows)
    rows = with_device_rows(candidates(rows), list(device_reports))
    by_point, rule = (quality_rule(len(ref.correct), cfg.max_quality_drop, cfg.confidence)
                      if cfg.max_quality_drop is not None else (False, None))
    verdicts = [verdict(row, ref, cfg, _threads(row, threads), metric, by_point) for row in rows]
    if not verdicts:
        raise EdgeftError("select: the report holds no ONNX variant to ship")
    fitting = sorted((v for v in verdicts if v["status"] == "fits"),
                     key=lambda v: (OBJECTIVES[cfg.objective](v), -v["quality"], v["size_mib"], v["name"]))
    if not fitting:
        nearest = min(verdicts, key=lambda v: (v["misses"], v["excess"], v["name"]))
        raise EdgeftError(f"select: no variant fits the budget at {threads} threads; the nearest is {nearest['name']}, "
                          f"which misses: {'; '.join(nearest['missed'])}" + (f" (quality rule: {rule})" if rule else ""))
    choice = f"{cfg.objective.replace('_', ' ')} that fits" + (f", tied with {fitting[1]['name']}" if len(fitting) > 1
                                                             and _tied(fitting[0], fitting[1], cfg.objective) else "")
    return {"threads": threads, "reference": ref.name, "objective": cfg.objective, "verdicts": verdicts,
            "chosen": fitting[0]["name"], "rule": choice, "quality_rule": rule}


def _threads(row: Row, threads: int) -> int:
    """A device row's own thread count (it is measured at the device's), else the budget's."""
    return row.threads if row.where == "device" else threads


def _tied(a: dict, b: dict, objective: str) -> bool:
    return OBJECTIVES[objective](a) == OBJECTIVES[objective](b)


def describe(selection: dict) -> list[str]:
    """One line per variant and the choice, as `edgeft select` prints them."""
    lines = [f"quality rule: {selection['quality_rule']}"] if selection.get("quality_rule") else []
    lines += [f"{v['name']}: {v['status']} ({v['shown']}), " + "; ".join(v["reasons"] or ["no limits set"])
              for v in selection["verdicts"]]
    return lines + [f"chosen: {selection['chosen']} ({selection['rule']}; threads {selection['threads']}, quality "
                    f"against {selection['reference']})"]
