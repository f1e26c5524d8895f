"""Bench reports: the same results as a screen table, JSON, CSV, Markdown and a plot."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from tabulate import tabulate


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}" if n else "-"


def classification_rows(report: dict) -> tuple[list[str], list[list]]:
    threads = report["threads"]
    positive = report.get("positive_label")
    headers = ["variant", "format", "size MiB", "accuracy", "macro-F1"] + ([f"{positive} F1"] if positive else [])
    top = max(threads)
    batch = next((t["batch_size"] for v in report["variants"] for t in v["throughput"]), "")
    headers += [f"p50 ms @{t}t" for t in threads] + [f"p90/p99 ms @{top}t", f"ex/s b{batch} @{top}t", "peak RSS MiB"]
    rows = []
    for v in report["variants"]:
        m = v["metrics"]
        row = [v["name"], v["format"], _mib(v["size_bytes"]), f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}"]
        if positive:
            row.append(f"{m[f'{positive}_f1']:.4f}")
        by_threads = {l["threads"]: l for l in v["latency_ms"]}
        row += [f"{by_threads[t]['p50']:.2f}" if t in by_threads else "-" for t in threads]
        lat = by_threads.get(top)
        row.append(f"{lat['p90']:.2f}/{lat['p99']:.2f}" if lat else "-")
        tp = {x["threads"]: x for x in v["throughput"]}.get(top)
        row.append(f"{tp['examples_per_s']['median']:.0f}" if tp else "-")
        row.append(_mib(max(v["peak_rss_bytes"].values())) if v["peak_rss_bytes"] else "-")
        rows.append(row)
    return headers, rows


def table(report: dict, fmt: str = "simple") -> str:
    if report["task"] == "generation":
        from edgeft.decoder import generation_rows
        headers, rows = generation_rows(report)
    else:
        headers, rows = classification_rows(report)
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def flat_rows(report: dict) -> list[dict]:
    """One CSV row per (variant, thread count): every number in report.json, flattened."""
    out = []
    for v in report["variants"]:
        base = {"variant": v["name"], "format": v["format"], "size_bytes": v["size_bytes"],
                **{k: v2 for k, v2 in v["metrics"].items() if not isinstance(v2, (dict, list))}}
        per_thread = {l["threads"]: l for l in v["latency_ms"]}
        tputs = {t["threads"]: t for t in v["throughput"]}
        if not per_thread:
            out.append(base)
        for t, lat in per_thread.items():
            row = dict(base, threads=t, peak_rss_bytes=v["peak_rss_bytes"].get(str(t), ""))
            row.update({f"latency_{k}_ms": val for k, val in lat.items() if not isinstance(val, dict)
                        and k not in ("threads", "batch_size")})
            for k, val in tputs.get(t, {}).items():
                if isinstance(val, dict):
                    row.update({f"{k}_{stat}": x for stat, x in val.items()})
                elif k not in ("threads",):
                    row[f"throughput_{k}"] = val
            out.append(row)
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = max(report["threads"])
    metric = "accuracy" if report["task"] == "classification" else "exact_match"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in report["variants"]:
        lat = {l["threads"]: l for l in v["latency_ms"]}.get(top)
        if lat is None or metric not in v["metrics"]:
            continue
        x = lat["p50"] if report["task"] == "classification" else lat.get("ms_per_token_p50", lat["p50"])
        ax.scatter(x, v["metrics"][metric], s=40)
        ax.annotate(v["name"], (x, v["metrics"][metric]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel(("batch-1 p50 latency (ms)" if report["task"] == "classification" else "decode ms/token (p50)")
                  + f", {top} threads")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"{report['recipe']}: {metric.replace('_', ' ')} vs latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(report: dict, folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = flat_rows(report)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(folder / "report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    header = [f"# {report['recipe']}: bench", "", f"- timed: {report['timed']}",
              f"- machine: {report['machine'].get('cpu', report['machine'].get('machine'))}, "
              f"{report['machine'].get('cpus')} CPUs", f"- test examples: {report['test_examples']}", ""]
    (folder / "report.md").write_text("\n".join(header) + table(report, "github") + "\n")
    plot(report, folder / "accuracy_latency.png")
