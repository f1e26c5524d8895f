"""What every bundle kind (ONNX, adapter-only, GGUF) takes from the run: the bench's numbers for
its variant, as data and as README lines, and a held-out slice for measuring it on the device."""
from __future__ import annotations

import json
from pathlib import Path

from edgeft.core.artifacts import find_in_lineage
from edgeft.core.splits import load_split
from edgeft.runtime.files import EVAL_FILE, REPORT_JSON, RunLayout


def bench_metrics(report_path: Path | None, name: str) -> dict:
    """What the bench measured for this variant, in the report's own fields: quality, speed at each
    thread count, size, peak RSS; and the machine it ran on."""
    if report_path is None or not report_path.exists():
        return {}
    report = json.loads(report_path.read_text())
    entry = next((v for v in report["variants"] if v["name"] == name), None)
    if entry is None:
        return {}
    speed = {k: entry[k] for k in ("latency", "throughput", "decode") if entry.get(k)}
    return {"quality": entry["metrics"], **speed, "size_bytes": entry["size_bytes"],
            "peak_rss_bytes": entry["peak_rss_bytes"], "machine": report["machine"], "timed": report["timed"]}


def report_for(variant_dir: Path, bench_dir: Path | None) -> Path:
    """The bench report that measured a variant: --bench, else the run folder's bench/."""
    return Path(bench_dir) / REPORT_JSON if bench_dir else RunLayout.of(variant_dir).report


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
        lines.append(f"- latency at batch 1, {lat['threads']} threads: p50 {lat['p50_ms']:.2f} ms, p90 {lat['p90_ms']:.2f} ms")
    for d in metrics.get("decode", []):
        lines.append(f"- {d['threads']} threads: time to first token {d['ttft_ms']['median']:.0f} ms "
                     f"({d['prompt_tokens']}-token prompt), decode {d['decode_tokens_per_s']['median']:.1f} tokens/s")
    if metrics.get("machine"):
        lines.append(f"- on: {metrics['machine'].get('cpu', '?')}, {metrics['machine'].get('cpus')} CPUs")
    return "\n".join(lines) or "- (no bench results were found when packaging)"
