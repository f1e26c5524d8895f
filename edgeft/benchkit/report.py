"""Bench reports: the same results as a screen table, JSON, CSV, Markdown, a plot and an HTML page."""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from tabulate import tabulate

from edgeft.benchkit.html import render as render_html
from edgeft.benchkit.ledger import ledger_table
from edgeft.benchkit.plot import close, figure
from edgeft.runtime.files import REPORT_CSV, REPORT_HTML, REPORT_JSON, REPORT_MD, REPORT_PLOT
from edgeft.runtime.report import rows_of


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}" if n else "-"


def table(view: dict, fmt: str = "simple") -> str:
    """A report's table ({"headers", "rows"}, made by its task) as text, Markdown or the like."""
    return tabulate(view["rows"], headers=view["headers"], tablefmt=fmt, disable_numparse=True)


def _flat(prefix: str, entry) -> dict:
    """An entry's numbers as CSV columns: nested spreads as <field>_median, _min, _max."""
    out = {}
    for key, value in dataclasses.asdict(entry).items():
        if isinstance(value, dict):
            out.update({f"{prefix}{key}_{stat}": x for stat, x in value.items()})
        elif key != "threads":
            out[f"{prefix}{key}"] = value
    return out


def flat_rows(report: dict) -> list[dict]:
    """One CSV row per (variant, thread count): every number in report.json, flattened; the column
    names keep the report's (and their units)."""
    out = []
    for r in rows_of(report):
        if r.error is not None:
            out.append({"variant": r.name, "error": r.error})
            continue
        base = {"variant": r.name, **({"cpu": r.machine.get("cpu")} if r.machine else {}), "format": r.format,
                "size_bytes": r.size_bytes, **{k: v for k, v in r.metrics.items() if not isinstance(v, (dict, list))}}
        speed = {e.threads: e for e in [*r.latency, *r.decode]}
        tputs = {t.threads: t for t in r.throughput}
        if not speed:
            out.append(base)
        for t, entry in speed.items():
            row = dict(base, threads=t, peak_rss_bytes=r.peak_rss_bytes.get(str(t), ""), **_flat("", entry))
            row.update(_flat("throughput_", tputs[t]) if t in tputs else {})
            out.append(row)
    return out


def plot(report: dict, spec: dict, path: Path) -> None:
    """Quality against speed, one point per model (the points come from the task)."""
    fig = figure(spec, (report.get("selection") or {}).get("chosen"), f"{report['recipe']}: {spec['ylabel']} vs latency")
    fig.savefig(path, dpi=120)
    close(fig)


def read_report(folder: Path) -> dict:
    """The report.json of a bench folder."""
    return json.loads((Path(folder) / REPORT_JSON).read_text())


def write_reports(report: dict, folder: Path, view: tuple[dict, dict | None]) -> None:
    """report.json, report.csv, report.md, the plot and report.html, all from the same report; `view`
    is its table and plot spec (the task's `report_view`)."""
    shown, spec = view
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
    (folder / REPORT_MD).write_text("\n".join(header + failed + [""] * bool(failed)) + table(shown, "github") + "\n"
                                    + "\n".join(ledger) + "\n" * bool(ledger))
    if spec:
        plot(report, spec, folder / REPORT_PLOT)
    (folder / REPORT_HTML).write_text(render_html(report, shown, spec), encoding="utf-8")
