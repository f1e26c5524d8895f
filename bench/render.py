"""Every results table in README.md and docs/*.md, rendered from bench/results/*.json: numbers have
one source, and CI fails when a table no longer says what its JSON says.

    python bench/render.py           # write every table in place
    python bench/render.py --check   # exit 1, naming each table that differs from what its JSON renders

A table is a block of a Markdown file, between two comments naming its renderer (and an argument):

    <!-- render: llamacpp_history -->
    ...written by this script...
    <!-- /render -->

Each block ends with where its numbers come from: the JSON file, the commit they were measured at,
the CPU (a speed holds for the CPU kind it was measured on) and the command. Standard library only,
so that it runs anywhere (`python3 bench/render.py --check` needs no venv).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent
PAGES = ("README.md", "docs/*.md")
BLOCK = re.compile(r"(<!-- render: (?P<name>[\w-]+)(?: (?P<arg>[\w.-]+))? -->\n)(?P<body>.*?)(<!-- /render -->)", re.S)
RENDERERS = {}


def renderer(fn):
    RENDERERS[fn.__name__] = fn
    return fn


# --- small helpers -----------------------------------------------------------------------------------
def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]) + "\n"


def spread(s: dict | None, digits: int = 0) -> str:
    """A median with its min-max over rounds."""
    if not s:
        return "-"
    if "min" not in s:  # a median recorded alone
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def num(x, digits: int = 0) -> str:
    return "-" if x is None or x == 0 else f"{x:.{digits}f}"


def cpu_kind(machine: dict) -> str:
    isa = machine.get("isa", [])
    kind = ("AVX-512" + (" VNNI" if "avx512_vnni" in isa else "") if "avx512f" in isa else "AVX2" if "avx2" in isa
            else "instruction sets not recorded")
    return f"{machine.get('cpu', '?')} ({kind}), {machine.get('cpus', '?')} cores"


def source(data: dict, name: str) -> str:
    """Where a table's numbers come from."""
    commit = (data.get("commit") or data.get("versions", {}).get("edgeft-commit") or "unknown")[:10]  # a run's report
    date = f", {data['date']}" if data.get("date") else ""
    command = data.get("command", "")
    return (f"\n<sub>`bench/results/{name}.json`: measured at commit `{commit}` on {cpu_kind(data.get('machine', {}))}"
            f"{date}; `{command}`</sub>\n")


def pts(drop: dict | None) -> str:
    """A paired change in points (the candidate minus the reference) with its 95% interval."""
    if not drop:
        return "-"
    return f"{0.0 - drop['points']:+.1f} ({0.0 - drop['high']:+.1f} to {0.0 - drop['low']:+.1f})"  # no "-0.0"


# --- the classifier -----------------------------------------------------------------------------------
@renderer
def classifier_vs_optimum(arg: str | None) -> str:
    """edgeft's int8 against PyTorch fp32 and optimum's int8 configurations, batch 1."""
    data = load("compare_optimum")
    by = {(r["model"], r["threads"]): r for r in data["results"]}
    names = list(dict.fromkeys(r["model"] for r in data["results"]))
    edgeft = {t: by[("edgeft-int8", t)]["p50_ms"] for t in (1, 2)}
    rows = []
    for name in names:
        r1, r2 = by[(name, 1)], by[(name, 2)]
        label = f"**{name}**" if name == "edgeft-int8" else name
        rows.append([label, f"{r2['size_bytes'] / 2**20:.1f}", f"{r2['accuracy']:.4f}",
                     f"{r1['p50_ms']:.2f} ({r1['p50_ms_min']:.2f}-{r1['p50_ms_max']:.2f})",
                     f"{r2['p50_ms']:.2f} ({r2['p50_ms_min']:.2f}-{r2['p50_ms_max']:.2f})",
                     "-" if name == "edgeft-int8" else f"{r2['p50_ms'] / edgeft[2]:.2f}x"])
    return table(["model", "MiB", "accuracy", "p50 ms, 1 thread", "p50 ms, 2 threads", "edgeft faster by (2 threads)"],
                 rows) + source(data, "compare_optimum")


# --- a run's own bench report (edgeft bench) ------------------------------------------------------------
def _speed_at(row: dict, threads: int) -> dict | None:
    return next((e for e in [*row.get("latency", []), *row.get("decode", [])] if e["threads"] == threads), None)


@renderer
def run_report(arg: str | None) -> str:
    """Every model of a run's bench report (a classifier's or a generator's), the shipped one in bold."""
    data = load(arg)
    top = max(data["threads"])
    chosen = (data.get("selection") or {}).get("chosen")
    generator = data["task"] == "generation"
    headers = ["variant", "MiB", "exact match" if generator else "accuracy"]
    headers += ["TTFT ms", "prefill tok/s", "decode tok/s (min-max)", "% of ceiling"] if generator else \
        [f"p50 ms @{t}t" for t in data["threads"]] + ["p90 ms"]
    rows = []
    for v in data["variants"]:
        if "error" in v:
            rows.append([v["name"], num(v["size_bytes"] / 2**20, 1), f"failed: {v['error']}"] + [""] * (len(headers) - 3))
            continue
        m, s = v["metrics"], _speed_at(v, top)
        row = [f"**{v['name']}**" if v["name"] == chosen else v["name"], num(v["size_bytes"] / 2**20, 1),
               f"{m.get('exact_match', m.get('accuracy')):.{3 if generator else 4}f}"]
        if generator:
            row += [spread(s["ttft_ms"]).split()[0], spread(s["prefill_tokens_per_s"]).split()[0],
                    spread(s["decode_tokens_per_s"], 1), f"{100 * s['fraction_of_ceiling']:.0f}%"] if s else ["-"] * 4
        else:
            row += [num((_speed_at(v, t) or {}).get("p50_ms"), 2) for t in data["threads"]]
            row.append(num(s["p90_ms"], 2) if s else "-")
        rows.append(row + [num(max(v["peak_rss_bytes"].values(), default=0) / 2**20)])
    shipped = f"; **bold**: shipped ({data['selection']['rule']})" if chosen else ""
    note = (f"\n{data['test_examples']} held-out examples; speed at {top} threads{shipped}. Timed: {data['timed']}.\n")
    return table(headers + ["peak RSS MiB"], rows) + note + source(data, arg)


# --- against llama.cpp --------------------------------------------------------------------------------
def _best(models: dict, prefix: str) -> float | None:
    """A llama.cpp type's exact match on its best fine-tune among those scored."""
    scores = [m["exact_match"] for n, m in models.items() if n.startswith(prefix) and "exact_match" in m]
    return max(scores) if scores else None


@renderer
def llamacpp_headline(arg: str | None) -> str:
    """The shipped int4 against llama-bench's Q4_0 and Q4_K_M at 2 threads: the README's table."""
    data = load(arg or "compare_llamacpp_int8_cache")
    models, t = data["models"], "2"
    rows = []
    for name, label in (("edgeft int4", "**edgeft int4** (shipped)"), ("llama.cpp Q4_0 (llama-bench)", "llama.cpp Q4_0"),
                        ("llama.cpp Q4_K_M (llama-bench)", "llama.cpp Q4_K_M"), ("llama.cpp Q8_0 (llama-bench)",
                                                                              "llama.cpp Q8_0")):
        m = models[name]
        base = name.replace(" (llama-bench)", "")
        em = models[base]["exact_match"] if name == "edgeft int4" else _best(models, base)
        s = m["speed"].get(t, {})
        rows.append([label, f"{m['size_mib']:.0f}", f"{em:.3f}", spread(s.get("prefill_tokens_per_s")),
                     spread(s.get("decode_tokens_per_s")), num(models[base]["peak_rss_mib"])])
    v = data["verdict"]["speed"][t]
    note = (f"\nAt {t} threads edgeft decodes {v['decode_vs_q4_0_llama_bench']:.2f}x and prefills "
            f"{v['prefill_vs_q4_0_llama_bench']:.2f}x as fast as llama-bench's Q4_0 (a {data['prompt_tokens']}-token "
            f"prompt, then {data['new_tokens']} tokens; medians (min-max) of {data['rounds']} interleaved rounds). "
            f"Exact match on {data['questions']} held-out questions; llama.cpp's rows on its best fine-tune.\n")
    return table(["model", "MiB", "exact match", "prefill tok/s", "decode tok/s", "peak RSS MiB"], rows) + note + \
        source(data, arg or "compare_llamacpp_int8_cache")


@renderer
def llamacpp_run(arg: str | None) -> str:
    """Every model of one compare_llamacpp run, at each thread count."""
    name = arg or "compare_llamacpp_int8_cache"
    data = load(name)
    threads = [str(t) for t in data["threads"]]
    headers = ["model", "MiB", "exact match", "vs fp32, pts (95%)"]
    headers += [h for t in threads for h in (f"prefill tok/s @{t}t", f"decode tok/s @{t}t")] + ["peak RSS MiB"]
    rows = []
    for model, m in data["models"].items():
        cells = [model, f"{m['size_mib']:.0f}", num(m.get("exact_match"), 3), pts(m.get("vs_fp32"))]
        for t in threads:
            s = m["speed"].get(t) if isinstance(m["speed"], dict) else None
            cells += [spread(s and s.get("prefill_tokens_per_s")), spread(s and s.get("decode_tokens_per_s"))]
        rows.append(cells + [num(m["peak_rss_mib"])])
    note = (f"\n{data['questions']} questions; a {data['prompt_tokens']}-token prompt then {data['new_tokens']} tokens; "
            f"{data['rounds']} interleaved rounds, medians (min-max).\n")
    return table(headers, rows) + note + source(data, name)


@renderer
def llamacpp_history(arg: str | None) -> str:
    """Every llama.cpp comparison kept: the shipped int4's ratios against Q4_0 at 2 threads, by file."""
    rows = []
    for path in sorted(RESULTS.glob("compare_llamacpp*.json")):
        data = json.loads(path.read_text())
        v = data["verdict"]["speed"].get("2") or next(iter(data["verdict"]["speed"].values()))
        best = data["verdict"]["best_q4_k_m"]
        rows.append([f"`{path.stem}`", (data.get("commit") or "?")[:10], cpu_kind(data["machine"]),
                     data["prompt_tokens"], num(v.get("decode_vs_q4_0_llama_bench"), 2) + "x",
                     num(v.get("decode_vs_q4_0_python"), 2) + "x", num(v.get("prefill_vs_q4_0_llama_bench"), 2) + "x",
                     num(data["models"]["edgeft int4"].get("exact_match"), 3),
                     num(data["models"][best].get("exact_match"), 3)])
    return table(["run", "commit", "CPU", "prompt tokens", "decode vs Q4_0 (llama-bench)", "decode vs Q4_0 (same loop)",
                  "prefill vs Q4_0 (llama-bench)", "int4 exact match", "best Q4_K_M exact match"], rows)


# --- what each remedy keeps at 4 bits ----------------------------------------------------------------
@renderer
def int4_retention(arg: str | None) -> str:
    data = load("int4_retention")
    rows = [[name, f"{c['exact_match']:.3f}", pts(c.get("drop_vs_reference_pts")), f"{c['retention']:.3f}",
             f"{c['size_mib']:.0f}", spread(c["decode_tokens_per_s"], 1), spread(c["prefill_tokens_per_s"]).split()[0]]
            for name, c in data["candidates"].items()]
    note = (f"\n{data['questions']} held-out questions, paired against `{data['reference']}`; speed at "
            f"{data['threads']} threads over {data['rounds']} interleaved rounds.\n")
    return table(["candidate", "exact match", "change, pts (95%)", "retention", "MiB", "decode tok/s", "prefill tok/s"],
                 rows) + note + source(data, "int4_retention")


# --- choosing what to ship ---------------------------------------------------------------------------
@renderer
def selection(arg: str | None) -> str:
    """A run's selection: every variant's verdict and reasons."""
    data = load(arg)
    sel = data["selection"]
    rows = [[f"**{v['name']}**" if v["name"] == sel["chosen"] else v["name"], v["status"], v["shown"],
             "; ".join(v["reasons"]) or "no limits set"] for v in sel["verdicts"]]
    note = f"\nChosen: **{sel['chosen']}** ({sel['rule']}; {sel['threads']} threads; quality against {sel['reference']}).\n"
    if sel.get("quality_rule"):
        note += f"Quality rule: {sel['quality_rule']}.\n"
    return table(["variant", "verdict", "measured", "reasons"], rows) + note + source(data, arg)


@renderer
def ledger(arg: str | None) -> str:
    data = load(arg)
    led = data["ledger"]
    rows = [[s["step"], s["model"], f"{s['metric']:.3f}", "-" if s["change_pts"] is None else f"{s['change_pts']:+.1f}",
             num(s["agreement"], 3), num(s["mean_kl"], 3), "loses the most" if s["model"] == led["worst"] else ""]
            for s in led["steps"]]
    return table(["step", "model", led["metric"].replace("_", " "), "change, pts", "first-output agreement",
                  "mean KL", ""], rows) + source(data, arg)


# --- the device side ----------------------------------------------------------------------------------
@renderer
def cold_start(arg: str | None) -> str:
    data = load("cold_start")
    rows = []
    for task, r in data["results"].items():
        for loader, x in r["rows"].items():
            rows.append([f"{task} ({r['bundle_mib']:.1f} MiB bundle)" if loader == "edgeft-runtime" else "", loader,
                         f"{x['cold_start_s']:.2f} ({x['min_s']:.2f}-{x['max_s']:.2f})", f"{x['peak_rss_mib']:.0f}",
                         "yes" if x["torch_loaded"] else "no"])
    return table(["bundle", "runtime", "cold start s (min-max)", "peak RSS MiB", "torch imported"], rows) + \
        source(data, "cold_start")


@renderer
def device_roundtrip(arg: str | None) -> str:
    data = load("device_roundtrip")
    rows = []
    for bundle, b in data["bundles"].items():
        for where in ("host", "device"):
            x = b[where]
            speed = (f"decode {spread(x['decode_tokens_per_s'], 1)} tok/s" if "decode_tokens_per_s" in x
                     else f"p50 {spread(x['p50_ms'], 2)} ms")
            quality = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in x["metrics"].items())
            rows.append([bundle if where == "host" else "", where, quality, spread(x["cold_start_s"], 2), speed,
                         f"{x['peak_rss_mib']['median']:.0f}"])
    install = data.get("install")
    note = ""
    if install:
        runtime, full = install["runtime_only"], install["full_toolchain"]
        note = (f"\nInstall: the runtime wheel alone {runtime['seconds']:.1f} s, {runtime['installed_bytes'] / 1e6:.0f} MB, "
                f"{runtime['packages']} packages; the full toolchain {full['seconds']:.0f} s, "
                f"{full['installed_bytes'] / 1e9:.2f} GB, {full['packages']} packages.\n")
    return table(["bundle", "where", "quality", "cold start s", "speed", "peak RSS MiB"], rows) + note + \
        source(data, "device_roundtrip")


@renderer
def cli_startup(arg: str | None) -> str:
    data = load("cli_startup")
    rows = [[f"`{name}`", f"{r['median_ms']:.0f} ({r['min_ms']:.0f}-{r['max_ms']:.0f})"] for name, r in data["results"].items()]
    return table(["command", "ms (min-max)"], rows) + source(data, "cli_startup")


@renderer
def adapters(arg: str | None) -> str:
    data = load("adapters")
    rows = [[skill, f"{q['exact_match_shared_int4_base']:.3f}", f"{q['exact_match_own_merged_fp32']:.3f}",
             pts(q["change_vs_merged_fp32_pts"]), f"{data['adapter_bundle_mib'][skill]:.1f}"]
            for skill, q in data["quality"].items()]
    s, rss = data["switching"], data["peak_rss_mib"]
    note = (f"\nSwitching adapters: activation {s['activate_ms_median']:.3f} ms; a 16-token prefill alternating adapters "
            f"{s['prefill16_alternating_ms_median']:.2f} ms against {s['prefill16_same_adapter_ms_median']:.2f} ms with one "
            f"(medians of {s['switches']}). Peak RSS {rss['one_adapter']:.0f} MiB with one adapter, "
            f"{rss['two_adapters']:.0f} MiB with both.\n")
    return table(["skill", "exact match, shared int4 base + adapter", "its own merged fp32", "change, pts (95%)",
                  "adapter bundle MiB"], rows) + note + source(data, "adapters")


@renderer
def serve_load(arg: str | None) -> str:
    """edgeft's server against llama-server at each number of concurrent streaming clients."""
    data = load(arg or "serve_load")
    rows = []
    for clients, s in data["summary"].items():
        e, ll = s["edgeft"], s["llama-server"]
        rows.append([clients, spread(e["tokens_per_s"]), spread(ll["tokens_per_s"]), spread(s["tokens_per_s_ratio"], 2),
                     f"{e['ttft_p50_ms']['median']:.0f} / {e['ttft_p99_ms']['median']:.0f}",
                     f"{ll['ttft_p50_ms']['median']:.0f} / {ll['ttft_p99_ms']['median']:.0f}",
                     f"{e['requests_per_s']['median']:.2f} / {ll['requests_per_s']['median']:.2f}",
                     f"{e['peak_rss_mib']['median']:.0f} / {ll['peak_rss_mib']['median']:.0f}"])
    note = (f"\nEach client streams {data['requests_per_client']} requests one after another, {data['max_tokens']} tokens "
            f"each (end of turn ignored), greedy; {data['threads']} threads; llama-server with `-np` = clients; "
            f"{data['rounds']} interleaved rounds, medians (min-max). TTFT at the client.\n")
    return table(["clients", "edgeft tok/s", "llama-server tok/s", "edgeft / llama-server", "TTFT p50 / p99 ms, edgeft",
                  "TTFT p50 / p99 ms, llama-server", "requests/s, edgeft / llama-server",
                  "peak RSS MiB, edgeft / llama-server"], rows) + note + \
        source(data, arg or "serve_load")


@renderer
def adapt_loop(arg: str | None) -> str:
    """A new skill by `edgeft adapt` on a shipped base, against the full recipe run that built the base."""
    data = load(arg or "adapt_loop")
    a, (merged, unmerged) = data["adapt"], data["speed"].items()
    full = data["base_run_total_seconds"]
    rows = [["time", f"{a['wall_seconds'] / 60:.1f} min", f"{full / 60:.1f} min: the full recipe run" if full else "-"],
            ["adapter file", f"{a['adapter_bytes'] / 2**20:.2f} MiB ({a['lora']['dtype']}, r={a['lora']['lora_r']})",
             "the base bundle stays as it is"],
            ["exact match", f"{a['exact_match']:.3f}", f"the same adapter at fp32: {a['fp32_exact_match']:.3f}; "
             f"change {pts(a['vs_fp32'])} pts"],
            ["", "", f"the bare base: {a['base_exact_match']:.3f}; change {pts(a['vs_base'])} pts"],
            [f"decode tok/s, {data['threads']} threads", f"{spread(unmerged[1]['decode_tokens_per_s'])} ({unmerged[0]})",
             f"{spread(merged[1]['decode_tokens_per_s'])} ({merged[0]}): {data['unmerged_over_merged']:.2f}x"]]
    note = (f"\nExact match on {a['examples']} held-out examples, paired (95% intervals); decode at batch 1 after a "
            f"{merged[1]['prompt_tokens']}-token prompt, {data['rounds']} interleaved rounds, medians (min-max).\n")
    return table(["", "edgeft adapt", "against"], rows) + note + source(data, arg or "adapt_loop")


@renderer
def data_scale(arg: str | None) -> str:
    """`edgeft data` on a million-row CSV and 200,000 chats: time and peak memory against the goal."""
    data = load(arg or "data_scale")
    rows = [[f"{r['file']} ({r['file_mib']:.0f} MiB)", f"{r['rows_read']:,}", f"{r['duplicates_removed']:,}",
             f"{r['train_examples']:,} / {r['validation_examples']:,} / {r['test_examples']:,}",
             spread(r["seconds"], 1), f"{r['peak_rss_mib']:,}"] for r in (data["csv"], data["chat"])]
    goal = data["goal"]
    note = (f"\nEach run a fresh `edgeft data` process with an empty cache (the Arrow copy of the file made inside "
            f"it), {data['csv']['rounds']} rounds, seconds as median (min-max), the largest peak RSS. Goal: under "
            f"{goal['seconds']} s and {goal['peak_rss_mib'] / 1024:.0f} GiB: {'met' if data['goal_met'] else 'not met'}.\n")
    return table(["file", "rows", "duplicates removed", "train / validation / test", "seconds", "peak RSS MiB"], rows) + \
        note + source(data, arg or "data_scale")


@renderer
def tune_throughput(arg: str | None) -> str:
    data = load(arg or "tune_throughput_cpu")
    rows = []
    for r in data["results"]:
        ratio = data["ratios"].get(f"{r['shape']}/{r['mode']}")
        rows.append([r["shape"], r["mode"], "failed" if "error" in r else f"{r['tokens_per_s']:.0f}",
                     "-" if "error" in r else f"{r['peak_gib']:.2f}", f"{ratio['speedup']:.2f}x" if ratio else "baseline"])
    note = f"\nBatch {data['batch']} x {data['seq']} tokens, {data['steps']} timed steps, on {data['device']}.\n"
    return table(["shape", "mode", "tokens/s", "peak GiB", "vs plain"], rows) + note + \
        source(data, arg or "tune_throughput_cpu")


# --- model families -----------------------------------------------------------------------------------
STAGES = ("data", "tune NF4", "tune int4 grid", "merge gate", "optimum", "genai", "gguf", "quantize", "bench",
          "bundle + runtime")


@renderer
def families(arg: str | None) -> str:
    """Family x stage, from the families each task registers (tests/test_families.py runs every cell marked
    ✓ on a tiny model of that family); families whose rows are the same share one."""
    from edgeft.classification.families import FAMILIES as ENCODERS
    from edgeft.generation.families import FAMILIES as DECODERS

    groups: dict[tuple, list[str]] = {}
    for name, family in DECODERS.items():
        why = {"gguf": family.gguf, "genai": family.genai}
        cells = tuple(f"refused: {why[stage]}" if why.get(stage) else "✓" for stage in STAGES)
        groups.setdefault(cells, []).append(f"{name} ({family.examples})")
    # smollm3 without the genai export: its int4 comes from optimum's graph, and unmerged LoRA is genai's
    encoder = tuple("-" if stage in ("genai", "gguf") else "✓" for stage in STAGES)
    groups[encoder] = [f"{name} ({what})" for name, what in ENCODERS.items()]
    rows = [["<br>".join(names), *cells] for cells, names in groups.items()]
    return table(["family (config model_type)", *STAGES], rows) + (
        "\n<sub>From `edgeft/generation/families.py` and `edgeft/classification/families.py`; every ✓ runs in "
        "`tests/test_families.py` (and conftest's llama and BERT runs) on a tiny model of the family.</sub>\n")


# --- the files ----------------------------------------------------------------------------------------
def pages() -> list[Path]:
    return sorted({p for pattern in PAGES for p in ROOT.glob(pattern)})


def render_page(text: str, page: Path) -> tuple[str, list[str]]:
    """The page with every block rendered, and the problems found (an unknown renderer, a missing JSON)."""
    problems = []

    def fill(match):
        name, arg = match["name"], match["arg"]
        if name not in RENDERERS:
            problems.append(f"{page}: unknown table '{name}' (known: {', '.join(RENDERERS)})")
            return match[0]
        try:
            body = RENDERERS[name](arg)
        except (OSError, KeyError, ValueError) as e:
            problems.append(f"{page}: table '{name} {arg or ''}' cannot be rendered: {type(e).__name__}: {e}")
            return match[0]
        return match[1] + body + match[5]

    return BLOCK.sub(fill, text), problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/render.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its JSON")
    args = parser.parse_args(argv)
    stale, problems, blocks = [], [], 0
    for page in pages():
        text = page.read_text()
        new, found = render_page(text, page)
        problems += found
        blocks += len(BLOCK.findall(text))
        if new != text:
            stale += [f"{page.relative_to(ROOT)}: {m['name']} {m['arg'] or ''}".strip()
                      for m, n in zip(BLOCK.finditer(text), BLOCK.finditer(new)) if m[0] != n[0]]
            if not args.check:
                page.write_text(new)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if args.check and stale:
        print("tables that differ from what their JSON renders (run `python bench/render.py`):\n  " + "\n  ".join(stale),
              file=sys.stderr)
    if not args.check:
        print(f"rendered {blocks} tables in {len(pages())} pages" + (f"; {len(stale)} changed" if stale else ""))
    return 1 if problems or (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
