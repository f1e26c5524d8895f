"""report.html: one self-contained page per bench a person opens in a browser or prints.

No network, no script library: the plot is inline SVG (matplotlib), the styles are in the page,
and it reflows to a narrow window or paper (no horizontal scrolling at 1000 px). It holds the
results table (the very cells of report.json's table), the quality-latency plot with the Pareto
front and the chosen variant marked, the selection with every variant's reasons, the accuracy
ledger, and the machine, versions, threads, rounds and command that reproduce it.
"""
from __future__ import annotations

import html
import io

from edgeft.benchkit.plot import close, figure

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 960px; margin: 1.5em auto; padding: 0 1em; color: #1c1c1c; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; margin: .6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 5px; text-align: left; vertical-align: top; overflow-wrap: break-word; }
th { background: #f3f3f3; } tr.chosen td { background: #e6f4ea; font-weight: 600; } tr.worst td { background: #fdecea; }
.fits { color: #137333; } .rejected { color: #b3261e; } .undecided { color: #8a5a00; }
svg { max-width: 100%; height: auto; } code { overflow-wrap: anywhere; font-size: 12px; }
ul { padding-left: 1.2em; } .muted { color: #5f6368; }
@media print { body { max-width: none; margin: 0; font-size: 11px; } table { font-size: 10px; } }
"""
# the page measures itself once laid out (a browser test reads it back from the DOM)
SELF_CHECK = ("<script>addEventListener('load',()=>{document.body.dataset.scrollWidth="
              "document.documentElement.scrollWidth;document.body.dataset.clientWidth="
              "document.documentElement.clientWidth;});</script>")


def esc(value) -> str:
    return html.escape(str(value))


def table_html(t: dict, css_id: str, row_class=lambda row: "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in t["headers"])
    body = "".join(f"<tr class='{row_class(row)}'>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                   for row in t["rows"])
    return f"<table id='{css_id}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plot_svg(spec: dict, chosen: str | None) -> str:
    fig = figure(spec, chosen)
    out = io.StringIO()
    fig.savefig(out, format="svg")
    close(fig)
    svg = out.getvalue()
    return svg[svg.index("<svg"):]


def selection_html(selection: dict | None) -> str:
    if not selection:
        return "<p class='muted'>No budget was set (recipe <code>select</code>): the recipe's variant is shipped.</p>"
    if "error" in selection:
        return f"<p class='rejected'>{esc(selection['error'])}</p>"
    items = "".join(f"<li><b>{esc(v['name'])}</b>: <span class='{v['status']}'>{esc(v['status'])}</span> "
                    f"({esc(v.get('shown', ''))}), "
                    f"{esc('; '.join(v['reasons']) or 'no limits set')}</li>" for v in selection["verdicts"])
    return (f"<p><b>chosen: {esc(selection['chosen'])}</b> ({esc(selection['rule'])}; read at {selection['threads']} "
            f"threads; quality against {esc(selection['reference'])})</p>"
            + (f"<p>quality rule: {esc(selection['quality_rule'])}</p>" if selection.get("quality_rule") else "")
            + f"<ul>{items}</ul>")


def ledger_html(ledger: dict | None) -> str:
    if not ledger:
        return "<p class='muted'>No ledger in this report.</p>"
    from edgeft.benchkit.ledger import ledger_table

    worst = next((s for s in ledger["steps"] if s["model"] == ledger["worst"]), None)
    lead = (f"<p>The step that loses the most: <b>{esc(worst['model'])}</b> ({esc(worst['step'])} from "
            f"{esc(worst['previous'])}): {worst['change_pts']:+.1f} points, first-output agreement "
            f"{worst['agreement']:.3f}, mean KL {worst['mean_kl']:.4f}.</p>" if worst else
            "<p>No step loses quality.</p>")
    return lead + table_html(ledger_table(ledger), "ledger", lambda row: "worst" if row[-1] else "") + \
        f"<p class='muted'>KL: {esc(ledger['kl'])}.</p>"


def machine_html(report: dict) -> str:
    m = report.get("machine", {})
    versions = ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items())
    return (f"<ul><li>machine: {esc(m.get('cpu'))}, {esc(m.get('cpus'))} CPUs, {esc(', '.join(m.get('isa', [])))}, "
            f"{esc(m.get('os', m.get('platform', '')))}, {esc(m.get('memory_gib', '?'))} GiB</li>"
            f"<li>threads {esc(report.get('threads'))}; timed: {esc(report.get('timed', ''))}</li>"
            f"<li>versions: {esc(versions)}</li><li>reproduce: <code>{esc(report.get('command', ''))}</code></li></ul>")


def render(report: dict, table: dict, spec: dict | None) -> str:
    """The page for a report, with its table and plot spec (the task's `report_view`)."""
    selection = report.get("selection")
    chosen = selection.get("chosen") if selection else None
    plot = plot_svg(spec, chosen) if spec and spec.get("points") else ""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>{esc(report.get('recipe'))}: edgeft bench</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(report.get('recipe'))}: edgeft bench</h1>"
            f"<p class='muted'>{esc(report.get('task', ''))}, {esc(report.get('test_examples'))} test examples</p>"
            f"<h2>Results</h2>{table_html(table, 'results', lambda row: 'chosen' if row[0] == chosen else '')}"
            f"<p class='muted'>{esc(report.get('quality', ''))}</p>"
            f"<h2>Quality against speed</h2>{plot}<h2>Selection</h2>{selection_html(selection)}"
            f"<h2>Accuracy ledger</h2>{ledger_html(report.get('ledger'))}<h2>Machine and command</h2>"
            f"{machine_html(report)}{SELF_CHECK}</body></html>\n")
