"""The classifier bench: accuracy and F1 on the test split, batch-1 latency percentiles and
batch throughput per thread count, peak RSS; a majority-class baseline row."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from edgeft.benchkit.ledger import build_ledger, trained_model
from edgeft.benchkit.plan import BenchPlan, BenchResults
from edgeft.benchkit.report import mib
from edgeft.classification.runners import RUNNER_ORT, RUNNER_TORCH, RUNNER_TRAINED
from edgeft.core.artifacts import model_bytes
from edgeft.core.metrics import classification_metrics
from edgeft.core.splits import load_labels, load_split
from edgeft.runtime.report import Latency, Row, Spread, Throughput, rows_of


def bench_plan(recipe, models: list, data_dir: Path) -> BenchPlan:
    cfg = recipe.bench
    info = load_labels(data_dir)
    labels, positive = info["labels"], info.get("positive_label")
    test = load_split(data_dir, "test")[:cfg.max_test_samples]
    texts, truth = [r["text"] for r in test], [r["label"] for r in test]
    top = max(cfg.threads)
    specs = {f"{name}@{t}": {"runner": RUNNER_TORCH if m.format == "pytorch" else RUNNER_ORT,
                             "folder": str(path), "threads": t}
             for name, path, m in models for t in cfg.threads}
    timed = list(specs)
    trained = trained_model(models)  # the ledger's first step: scored, not timed
    scored = ([trained] if trained else []) + list(models)
    if trained:
        specs[f"trained@{top}"] = {"runner": RUNNER_TRAINED, "folder": str(trained[1]), "threads": top}
    sample = [texts[i % len(texts)] for i in range(cfg.iterations)]  # the same batch-1 inputs for every model
    speed = [("latency", {"texts": sample, "warmup": cfg.warmup}),
             ("throughput", {"texts": texts[:cfg.batch_size * 4], "batch_size": cfg.batch_size, "warmup": 1})]

    def score(name: str, reply: dict) -> dict:
        said = [labels[p] for p in reply["predictions"]]
        return {**classification_metrics(truth, said, labels, positive), "predictions": said,
                "correct": [t == p for t, p in zip(truth, said)], "first": reply["first"]}

    def build(results: BenchResults) -> dict:
        rows = [model_row(name, path, manifest, cfg, results) for name, path, manifest in scored]
        majority = Counter(r["label"] for r in load_split(data_dir, "train")).most_common(1)[0][0]
        rows.append(Row("majority-class", "baseline", "baseline", 0, predicts=majority,
                        metrics=classification_metrics(truth, [majority] * len(truth), labels, positive)))
        return {"test_examples": len(texts), "labels": labels, "positive_label": positive, "quality_metric": "accuracy",
                "timed": "model call only, at batch 1 on real test texts (tokenization done beforehand); "
                         f"throughput at batch {cfg.batch_size}; each (variant, threads) in its own process, "
                         f"variants interleaved over {cfg.rounds} rounds", "variants": [r.to_json() for r in rows],
                "ledger": build_ledger(scored, results.quality, "accuracy")}

    return BenchPlan(models=models, specs=specs, score=score, build=build,
                     # batch 1, as a device serves requests: dynamically quantized int8 scales activations per
                     # batch, so padding next to other texts can change a prediction
                     quality={name: (f"{name}@{top}", ("classify", {"texts": texts, "batch_size": 1}))
                              for name, _, _ in scored},
                     speed={key: speed for key in timed},
                     summary=f"{len(models)} variants x threads {cfg.threads}, {len(texts)} test examples")


def model_row(name: str, path: Path, manifest, cfg, results: BenchResults) -> Row:
    row = Row(name, manifest.format or "onnx", manifest.stage, model_bytes(path), path=str(path))
    if name in results.failed:
        row.error = results.failed[name]
        return row
    quality = dict(results.quality[name])
    quality.pop("first")
    row.predictions, row.correct, row.metrics = quality.pop("predictions"), quality.pop("correct"), quality
    for t in cfg.threads:
        key = f"{name}@{t}"
        if key not in results.timings:  # scored only (the trained model)
            continue
        rounds = results.timings[key]
        row.latency.append(Latency.of(t, [latency["seconds"] for latency, _ in rounds]))
        row.throughput.append(Throughput(t, cfg.batch_size, Spread.of([tp["examples_per_s"] for _, tp in rounds])))
        row.peak_rss_bytes[str(t)] = results.peaks.get(key, 0)
        row.load_seconds = results.loaded[key]["load_seconds"]
    return row


def view(report: dict) -> tuple[dict, dict]:
    """The report's table (for the screen, Markdown and HTML) and its plot: accuracy against batch-1 p50."""
    rows, threads = rows_of(report), report["threads"]
    top = max(threads)
    points = [{"name": r.name, "x": r.speed_at(top).p50_ms, "y": r.metrics["accuracy"]} for r in rows if r.speed_at(top)]
    return table(report, rows, threads), {"xlabel": f"batch-1 p50 latency (ms), {top} threads", "ylabel": "accuracy",
                                          "points": points}


def table(report: dict, rows: list[Row], threads: list[int]) -> dict:
    positive = report.get("positive_label")
    top = max(threads)
    batch = next((t.batch_size for r in rows for t in r.throughput), "")
    headers = ["variant", "format", "size MiB", "accuracy", "macro-F1"] + ([f"{positive} F1"] if positive else [])
    headers += [f"p50 ms @{t}t" for t in threads] + [f"p90/p99 ms @{top}t", f"ex/s b{batch} @{top}t", "peak RSS MiB"]
    lines = []
    for r in rows:
        if r.error is not None:
            lines.append([r.name, r.format, mib(r.size_bytes), f"failed: {r.error}"])
            continue
        m = r.metrics
        line = [r.name, r.format, mib(r.size_bytes), f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}"]
        line += [f"{m[f'{positive}_f1']:.4f}"] if positive else []
        line += [f"{r.speed_at(t).p50_ms:.2f}" if r.speed_at(t) else "-" for t in threads]
        lat = r.speed_at(top)
        line.append(f"{lat.p90_ms:.2f}/{lat.p99_ms:.2f}" if lat else "-")
        tp = next((x for x in r.throughput if x.threads == top), None)
        line.append(f"{tp.examples_per_s.median:.0f}" if tp else "-")
        line.append(mib(max(r.peak_rss_bytes.values())) if r.peak_rss_bytes else "-")
        lines.append(line)
    return {"headers": headers, "rows": lines}
