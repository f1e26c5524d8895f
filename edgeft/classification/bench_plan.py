"""The classifier bench: accuracy and F1 on the test split, batch-1 latency percentiles and
batch throughput per thread count, peak RSS; a majority-class baseline row."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from edgeft.benchkit.ledger import build_ledger, trained_model
from edgeft.benchkit.plan import BenchPlan, BenchResults
from edgeft.benchkit.report import mib, plot_points
from edgeft.classification.runners import RUNNER_ORT, RUNNER_TORCH, RUNNER_TRAINED
from edgeft.core.artifacts import model_bytes
from edgeft.core.metrics import classification_metrics
from edgeft.core.splits import load_labels, load_split
from edgeft.runtime.stats import latency_entry, throughput_entry


def bench_plan(recipe, models: list, data_dir: Path) -> BenchPlan:
    cfg = recipe.bench
    info = load_labels(data_dir)
    labels, positive = info["labels"], info.get("positive_label")
    test = load_split(data_dir, "test")[:cfg.max_test_samples]
    texts, truth = [r["text"] for r in test], [r["label"] for r in test]
    top = max(cfg.threads)
    specs = {f"{name}@{t}": {"runner": RUNNER_TORCH if m.get("format") == "pytorch" else RUNNER_ORT,
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
        rows.append({"name": "majority-class", "format": "baseline", "stage": "baseline", "size_bytes": 0,
                     "metrics": classification_metrics(truth, [majority] * len(truth), labels, positive),
                     "latency_ms": [], "throughput": [], "peak_rss_bytes": {}, "predicts": majority})
        report = {"test_examples": len(texts), "labels": labels, "positive_label": positive, "quality_metric": "accuracy",
                  "timed": "model call only, at batch 1 on real test texts (tokenization done beforehand); "
                           f"throughput at batch {cfg.batch_size}; each (variant, threads) in its own process, "
                           f"variants interleaved over {cfg.rounds} rounds", "variants": rows,
                  "ledger": build_ledger(scored, results.quality, "accuracy")}
        plot = plot_points(rows, top, "p50", "accuracy", "batch-1 p50 latency (ms)", "accuracy")
        return {**report, "table": table(report, cfg.threads), "plot": plot}

    return BenchPlan(models=models, specs=specs, score=score, build=build,
                     # batch 1, as a device serves requests: dynamically quantized int8 scales activations per
                     # batch, so padding next to other texts can change a prediction
                     quality={name: (f"{name}@{top}", ("classify", {"texts": texts, "batch_size": 1}))
                              for name, _, _ in scored},
                     speed={key: speed for key in timed},
                     summary=f"{len(models)} variants x threads {cfg.threads}, {len(texts)} test examples")


def model_row(name: str, path: Path, manifest: dict, cfg, results: BenchResults) -> dict:
    entry = {"name": name, "format": manifest.get("format", "onnx"), "stage": manifest["stage"], "path": str(path),
             "size_bytes": model_bytes(path)}
    if name in results.failed:
        return {**entry, "error": results.failed[name]}
    quality = dict(results.quality[name])
    quality.pop("first")
    entry.update(predictions=quality.pop("predictions"), correct=quality.pop("correct"), metrics=quality,
                 latency_ms=[], throughput=[], peak_rss_bytes={})
    for t in cfg.threads:
        key = f"{name}@{t}"
        if key not in results.timings:  # scored only (the trained model)
            continue
        rounds = results.timings[key]
        entry["latency_ms"].append(latency_entry(t, [latency["seconds"] for latency, _ in rounds]))
        entry["throughput"].append(throughput_entry(t, cfg.batch_size, [tp["examples_per_s"] for _, tp in rounds]))
        entry["peak_rss_bytes"][str(t)] = results.peaks.get(key, 0)
        entry["load_seconds"] = results.loaded[key]["load_seconds"]
    return entry


def table(report: dict, threads: list[int]) -> dict:
    positive = report.get("positive_label")
    top = max(threads)
    batch = next((t["batch_size"] for v in report["variants"] for t in v.get("throughput", [])), "")
    headers = ["variant", "format", "size MiB", "accuracy", "macro-F1"] + ([f"{positive} F1"] if positive else [])
    headers += [f"p50 ms @{t}t" for t in threads] + [f"p90/p99 ms @{top}t", f"ex/s b{batch} @{top}t", "peak RSS MiB"]
    rows = []
    for v in report["variants"]:
        if "error" in v:
            rows.append([v["name"], v["format"], mib(v["size_bytes"]), f"failed: {v['error']}"])
            continue
        m = v["metrics"]
        row = [v["name"], v["format"], mib(v["size_bytes"]), f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}"]
        row += [f"{m[f'{positive}_f1']:.4f}"] if positive else []
        by_threads = {lat["threads"]: lat for lat in v["latency_ms"]}
        row += [f"{by_threads[t]['p50']:.2f}" if t in by_threads else "-" for t in threads]
        lat = by_threads.get(top)
        row.append(f"{lat['p90']:.2f}/{lat['p99']:.2f}" if lat else "-")
        tp = {x["threads"]: x for x in v["throughput"]}.get(top)
        row.append(f"{tp['examples_per_s']['median']:.0f}" if tp else "-")
        row.append(mib(max(v["peak_rss_bytes"].values())) if v["peak_rss_bytes"] else "-")
        rows.append(row)
    return {"headers": headers, "rows": rows}
