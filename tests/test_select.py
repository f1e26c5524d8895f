"""Picking the variant to ship for a budget, on crafted reports: every limit, ties, undecided
quality, the nothing-fits message, device measurements, and `edgeft run` shipping the choice."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeft import EdgeftError
from edgeft.benchkit.paired import examples_to_decide, paired_drop
from edgeft.benchkit.select import describe, select_variant
from edgeft.cli import cli
from edgeft.core.recipe import SelectSection
from edgeft.runtime.report import Decode, Latency, Row, Spread

N = 200


def correct(wrong: set[int]) -> list[bool]:
    return [i not in wrong for i in range(N)]


def row(name, stage="quantize", wrong=(), size_mib=20.0, p90=2.0, p50=1.0, rss_mib=200.0, fmt="onnx", threads=2,
        ttft_ms=None, decode_tokens_per_s=None):
    """A report row as the bench writes it: a classifier's latency, or a generator's decode entry."""
    ok = correct(set(wrong))
    r = Row(name, fmt, stage, int(size_mib * 2**20), metrics={"accuracy": sum(ok) / N}, correct=ok,
            peak_rss_bytes={str(threads): int(rss_mib * 2**20)})
    if decode_tokens_per_s:
        r.decode = [Decode(threads, 32, 8, Spread(**ttft_ms), Spread(100, 90, 110), Spread(**decode_tokens_per_s),
                           1000 / decode_tokens_per_s["median"], 1.1 * 1000 / decode_tokens_per_s["median"], 12.0)]
    else:
        r.latency = [Latency(threads, p50, p90, p90 * 1.1, p50 * 0.8, p90 * 1.3, 60, Spread(p50, p50 * 0.9, p50 * 1.2),
                             Spread(p90, p90 * 0.9, p90 * 1.3))]
    return r.to_json()


def report(*rows, metric="accuracy"):
    return {"threads": [1, 2], "quality_metric": metric, "variants": list(rows)}


REFERENCE = row("pytorch-fp32", stage="merge", fmt="pytorch", wrong=range(10), size_mib=87, p90=9, p50=6)


def test_the_paired_drop_counts_and_tests_the_disagreements():
    ref, cand = correct(set()), correct(set(range(10)))
    drop = paired_drop(ref, cand)
    assert drop.points == pytest.approx(5.0) and drop.reference_only == 10 and drop.candidate_only == 0
    assert drop.mcnemar_p == pytest.approx(2 * 0.5**10)  # exact: 10 discordant pairs, all one way
    assert 0 < drop.low < 5 < drop.high < 10
    same = paired_drop(ref, ref)
    assert (same.points, same.low, same.high, same.mcnemar_p) == (0, 0, 0, 1.0)
    assert examples_to_decide(drop, 5.0) is None and examples_to_decide(drop, 3.0) > N


def test_every_limit_rejects_with_its_reason_and_the_fastest_fitting_variant_is_chosen():
    rep = report(REFERENCE, row("int8", wrong=range(10), p50=1.0, p90=2.0, size_mib=22, rss_mib=210),
                 row("int4", wrong=range(10), p50=3.0, p90=5.0, size_mib=52, rss_mib=190),
                 row("onnx-fp32", stage="export", wrong=range(10), p50=2.0, p90=3.0, size_mib=87, rss_mib=290))
    cfg = SelectSection(max_quality_drop=1, max_size_mib=60, max_peak_rss_mib=250, max_p90_ms=4)
    sel = select_variant(rep, cfg)
    by = {v["name"]: v for v in sel["verdicts"]}
    assert sel["chosen"] == "int8" and sel["rule"] == "fastest that fits" and sel["reference"] == "pytorch-fp32"
    assert by["int4"]["status"] == "rejected" and any(r.startswith("p90 5 ms (4.5-6.5) > 4") for r in by["int4"]["reasons"])
    assert by["onnx-fp32"]["status"] == "rejected"
    assert "size 87 MiB > 60" in by["onnx-fp32"]["reasons"] and "peak RSS 290 MiB > 250" in by["onnx-fp32"]["reasons"]
    assert by["int8"]["reasons"][0].startswith("accuracy +0.0 pts (95% interval +0.0 to +0.0")
    assert describe(sel)[-1].startswith("chosen: int8 (fastest that fits; threads 2")
    assert select_variant(rep, SelectSection(max_size_mib=60, objective="smallest"))["chosen"] == "int8"
    assert select_variant(rep, SelectSection(max_size_mib=100, max_p90_ms=3.5, objective="smallest"))["chosen"] == "int8"


def test_generation_limits_read_ttft_and_decode_speed():
    spread = lambda m: {"median": m, "min": m * 0.95, "max": m * 1.05}  # noqa: E731
    ref = {**REFERENCE, "metrics": {"exact_match": 0.95}}
    fast = {**row("int4", wrong=range(10), ttft_ms=spread(190), decode_tokens_per_s=spread(120)),
            "metrics": {"exact_match": 0.95}}
    slow = {**row("int8-dynamic", wrong=range(10), ttft_ms=spread(80), decode_tokens_per_s=spread(60)),
            "metrics": {"exact_match": 0.95}}
    rep = report(ref, fast, slow, metric="exact_match")
    assert select_variant(rep, SelectSection(max_ttft_ms=100))["chosen"] == "int8-dynamic"
    sel = select_variant(rep, SelectSection(min_decode_tokens_per_s=100))
    assert sel["chosen"] == "int4" and "decode 60 tok/s (57-63) < 100" in sel["verdicts"][1]["reasons"]
    assert select_variant(rep, SelectSection(max_quality_drop=1))["chosen"] == "int4"  # fastest = most tokens/s
    with pytest.raises(EdgeftError, match=r"select.max_p90_ms: the report has no p90 at 1 threads"):
        select_variant(rep, SelectSection(max_p90_ms=5, threads=1))


def test_a_drop_whose_interval_straddles_the_budget_is_undecided_and_not_shipped():
    # 4 more wrong on 200: a 2-point drop whose 95% interval runs from about 0 to 4 points
    rep = report(REFERENCE, row("int4", wrong=range(14), p50=0.5), row("int8", wrong=range(10), p50=1.0))
    sel = select_variant(rep, SelectSection(max_quality_drop=2.5))
    int4 = sel["verdicts"][0]
    assert int4["status"] == "undecided" and sel["chosen"] == "int8"
    assert "straddles 2.5: undecided at 200 examples, about" in int4["reasons"][0]
    needed = int(int4["reasons"][0].split("about ")[1].split()[0])
    drop = paired_drop(REFERENCE["correct"], rep["variants"][1]["correct"])
    assert needed == examples_to_decide(drop, 2.5) > 200


def test_a_budget_below_the_test_sets_resolution_is_judged_by_the_point_estimate_and_says_so():
    # 200 examples: one lost example alone puts the interval's worse end at 1.5 points, so a 0.5-point
    # budget cannot be confirmed by any variant that differs from the reference at all
    gains = row("int8-static", wrong=[*range(9), 150], p50=1.5)           # lost 1, gained 2: +0.5 pts
    loses_one = row("int4", wrong=[*range(10), 150], p50=0.5)             # lost 1: -0.5 pts, within by its point
    loses_two = row("int8-dynamic", wrong=[*range(10), 150, 151], p50=0.2)  # lost 2: -1.0 pts
    sel = select_variant(report(REFERENCE, gains, loses_one, loses_two), SelectSection(max_quality_drop=0.5))
    status = {v["name"]: v["status"] for v in sel["verdicts"]}
    assert status == {"int8-static": "fits", "int4": "fits", "int8-dynamic": "undecided"}
    assert sel["chosen"] == "int4"  # the fastest of those that fit
    reasons = {v["name"]: v["reasons"][0] for v in sel["verdicts"]}
    assert "within 0.5 by the point estimate (not confirmed at 200 examples)" in reasons["int4"]
    assert "interval -1.5 to +0.0" in reasons["int4"] and "undecided at 200 examples, about" in reasons["int8-dynamic"]
    first = describe(sel)[0]
    assert first.startswith("quality rule: 200 test examples cannot confirm 0.5 pts (one lost example alone reads up "
                            "to 1.50 pts at 95%; about 600 would)")
    # 600 examples confirm it: the interval rule again, and the one-example loss is confirmed within
    ref = {**REFERENCE, "correct": REFERENCE["correct"] * 3}
    one_of_600 = {**loses_one, "correct": REFERENCE["correct"] * 2 + loses_one["correct"]}
    big = select_variant(report(ref, one_of_600), SelectSection(max_quality_drop=0.5))
    assert big["quality_rule"].startswith("a variant fits when the worse end of its paired 95% interval is within 0.5")
    assert big["chosen"] == "int4" and "interval -0.5 to +0.0, 1 lost / 0 gained of 600, McNemar p 1) within 0.5" in \
        big["verdicts"][0]["reasons"][0]


def test_ties_are_broken_by_quality_then_size_then_name():
    rep = report(REFERENCE, row("b-int8", wrong=range(10), p50=1.0, size_mib=30),
                 row("a-int8", wrong=range(10), p50=1.0, size_mib=30),
                 row("c-int8", wrong=range(10), p50=1.0, size_mib=20))
    sel = select_variant(rep, SelectSection(max_size_mib=100))
    assert sel["chosen"] == "c-int8" and sel["rule"] == "fastest that fits, tied with a-int8"
    better = row("d-int8", wrong=range(5), p50=1.0, size_mib=90)  # gains 5 examples over the reference
    assert select_variant(report(*rep["variants"], better), SelectSection(max_size_mib=100))["chosen"] == "d-int8"


def test_when_nothing_fits_the_error_names_the_nearest_variant_and_what_it_misses():
    rep = report(REFERENCE, row("int4", wrong=range(40), p90=5.0), row("int8", wrong=range(10), p90=6.0))
    with pytest.raises(EdgeftError) as e:
        select_variant(rep, SelectSection(max_quality_drop=1, max_p90_ms=4))
    message = str(e.value)
    assert "no variant fits the budget at 2 threads; the nearest is int8, which misses: p90 6 ms (5.4-7.8) > 4" in message
    assert "accuracy" not in message.split("misses:")[1]  # int8 keeps the reference's quality


def test_device_measurements_replace_the_hosts_for_the_variant_they_measured():
    rep = report(REFERENCE, row("int8", wrong=range(10), p90=2.0), row("int4", wrong=range(10), p90=3.0))
    device_row = {**row("int8", p90=8.0, threads=4), "where": "device", "variant": "int8", "threads": 4,
                  "machine": {"cpu": "Cortex-A76"}}
    sel = select_variant(rep, SelectSection(max_p90_ms=4), [{"variants": [device_row]}])
    by = {v["name"]: v for v in sel["verdicts"]}
    assert by["int8"]["status"] == "rejected" and sel["chosen"] == "int4"
    assert "speed and memory measured on the device (Cortex-A76, 4 threads)" in by["int8"]["reasons"]


def test_select_command_reads_a_run_and_its_flags(tmp_path):
    (tmp_path / "bench").mkdir()
    rep = report(REFERENCE, row("int8", wrong=range(10), p90=2.0), row("int4", wrong=range(30), p90=1.0))
    (tmp_path / "bench/report.json").write_text(json.dumps(rep))
    ok = CliRunner().invoke(cli, ["select", str(tmp_path), "--max-quality-drop", "1"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines()[0].startswith("quality rule: 200 test examples cannot confirm 1 pts")
    assert ok.output.splitlines()[1].startswith("int8: fits (p50 1.00 ms, 20.0 MiB), accuracy +0.0 pts")
    assert ok.output.splitlines()[2].startswith("int4: rejected (p50 1.00 ms, 20.0 MiB), accuracy -10.0 pts")
    assert ok.output.splitlines()[-1].startswith("chosen: int8 (fastest that fits")
    none = CliRunner().invoke(cli, ["select", str(tmp_path / "bench/report.json"), "--max-size-mib", "1"])
    assert none.exit_code == 2 and "the nearest is" in none.output and "size 20 MiB > 1" in none.output
