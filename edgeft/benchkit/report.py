"""Bench reports: the same results as a screen table, JSON, CSV, Markdown, a plot and an HTML page."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from tabulate import tabulate

from edgeft.benchkit.html import render as render_html
from edgeft.benchkit.ledger import ledger_table
from edgeft.benchkit.plot import close, figure
from edgeft.runtime.files import REPORT_CSV, REPORT_HTML, REPORT_JSON, REPORT_MD, REPORT_PLOT


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}" if n else "-"


def table(report: dict, fmt: str = "simple") -> str:
    """The report's table (built by its task when the bench ran) as text, Markdown or the like."""
    t = report["table"]
    return tabulate(t["rows"], headers=t["headers"], tablefmt=fmt, disable_numparse=True)


def flat_rows(report: dict) -> list[dict]:
    """One CSV row per (variant, thread count): every number in report.json, flattened."""
    out = []
    for v in report["variants"]:
        if "error" in v:
            out.append({"variant": v["name"], "error": v["error"]})
            continue
        base = {"variant": v["name"], **({"cpu": v["machine"].get("cpu")} if "machine" in v else {}),
                "format": v["format"], "size_bytes": v["size_bytes"],
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


def plot_points(rows: list[dict], threads: int, x: str, y: str, xlabel: str, ylabel: str) -> dict:
    """The plot's points: one per model that was timed at `threads` (x from its latency row, y
    from its metrics)."""
    points = [{"name": v["name"], "x": lat[x], "y": v["metrics"][y]}
              for v in rows if "error" not in v for lat in v["latency_ms"] if lat["threads"] == threads]
    return {"xlabel": f"{xlabel}, {threads} threads", "ylabel": ylabel, "points": points}


def plot(report: dict, path: Path) -> None:
    """Quality against speed, one point per model (the points come from the task)."""
    spec = report["plot"]
    fig = figure(spec, (report.get("selection") or {}).get("chosen"), f"{report['recipe']}: {spec['ylabel']} vs latency")
    fig.savefig(path, dpi=120)
    close(fig)


def write_reports(report: dict, folder: Path) -> None:
    """report.json, report.csv, report.md, the plot and report.html, all from the same report."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    rows = flat_rows(report)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(folder / REPORT_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    machines = ([("machine", report["machine"])] if "machine" in report else
                [(v["name"], v["machine"]) for v in report["variants"] if "machine" in v])
    header = [f"# {report['recipe']}: bench", "", f"- timed: {report['timed']}"]
    header += [f"- {label}: {m.get('cpu', m.get('machine'))}, {m.get('cpus')} CPUs "
               f"({', '.join(m.get('isa', [])) or 'ISA unknown'}){', ' + m['os'] if m.get('os') else ''}"
               for label, m in machines]
    header += [f"- test examples: {report['test_examples']}", ""]
    failed = [f"- failed: {v['name']}: {v['error']}" for v in report["variants"] if "error" in v]
    ledger = []
    if report.get("ledger"):
        t = ledger_table(report["ledger"])
        ledger = ["", "## Accuracy ledger", "", f"KL: {report['ledger']['kl']}.", "",
                  tabulate(t["rows"], headers=t["headers"], tablefmt="github", disable_numparse=True)]
    (folder / REPORT_MD).write_text("\n".join(header + failed + [""] * bool(failed)) + table(report, "github") + "\n"
                                    + "\n".join(ledger) + "\n" * bool(ledger))
    if "plot" in report:
        plot(report, folder / REPORT_PLOT)
    (folder / REPORT_HTML).write_text(render_html(report), encoding="utf-8")
