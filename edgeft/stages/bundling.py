"""What every bundle kind (ONNX, adapter-only, GGUF) takes from the run: the bench's numbers for
its variant, as data and as README lines, and a held-out slice for measuring it on the device."""
from __future__ import annotations

import json
from pathlib import Path

from edgeft.core.artifacts import find_in_lineage
from edgeft.core.splits import load_split
from edgeft.runtime.files import EVAL_FILE, REPORT_JSON


def bench_metrics(report_path: Path | None, name: str) -> dict:
    """What the bench measured for this variant: quality, latency at each thread count, size, RSS."""
    if report_path is None or not report_path.exists():
        return {}
    report = json.loads(report_path.read_text())
    entry = next((v for v in report["variants"] if v["name"] == name), None)
    if entry is None:
        return {}
    return {"quality": entry["metrics"], "latency": entry["latency_ms"], "throughput": entry["throughput"],
            "size_bytes": entry["size_bytes"], "peak_rss_bytes": entry["peak_rss_bytes"],
            "machine": report["machine"], "timed": report["timed"]}


def report_for(variant_dir: Path, source: dict, bench_dir: Path | None) -> Path:
    """The bench report that measured a variant: --bench, else the run folder's bench/."""
    if bench_dir:
        return Path(bench_dir) / REPORT_JSON
    report = variant_dir.parent.parent / "bench" / REPORT_JSON
    if not report.exists() and source["stage"] == "export":
        report = variant_dir.parent / "bench" / REPORT_JSON
    return report


def write_eval_slice(folder: Path, source: dict, eval_samples: int) -> list[dict]:
    rows = load_split(find_in_lineage(source, "data"), "test")[:eval_samples]
    with open(folder / EVAL_FILE, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows


def measured_lines(metrics: dict) -> str:
    """The bench's numbers for one variant, as README bullets."""
    lines = []
    for key, value in (metrics.get("quality") or {}).items():
        if isinstance(value, float):
            lines.append(f"- {key.replace('_', ' ')}: {value:.4f}")
    for lat in metrics.get("latency", []):
        if "decode_tokens_per_s" not in lat:
            lines.append(f"- latency at batch 1, {lat['threads']} threads: p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms")
        else:
            lines.append(f"- {lat['threads']} threads: time to first token {lat['ttft_ms']['median']:.0f} ms "
                         f"({lat['prompt_tokens']}-token prompt), decode {lat['decode_tokens_per_s']['median']:.1f} tokens/s")
    if metrics.get("machine"):
        lines.append(f"- on: {metrics['machine'].get('cpu', '?')}, {metrics['machine'].get('cpus')} CPUs")
    return "\n".join(lines) or "- (no bench results were found when packaging)"
