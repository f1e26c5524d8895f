"""Bench stage: accuracy and speed of every variant of a run, on the same inputs, in one run.

Rows: PyTorch fp32 (the merged model), ONNX fp32, each quantized variant, and a majority-class
baseline. Each (variant, thread count) runs in its own process (see runners.py); the variants
are interleaved for `bench.rounds` rounds so that machine noise is shared, and every number is a
median with its min-max. Latency is the model call only: tokenization is done beforehand.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from edgeft import EdgeftError
from edgeft.artifacts import (
    MANIFEST,
    find_in_lineage,
    input_ref,
    is_up_to_date,
    library_versions,
    machine_info,
    read_manifest,
    stage_output,
    write_manifest,
)
from edgeft.data import load_labels, load_split
from edgeft.recipe import Recipe

MODEL_FILE_SUFFIXES = (".onnx", ".onnx_data", ".data", ".safetensors", ".bin")


def variant_name(manifest: dict) -> str:
    stage = manifest["stage"]
    if stage == "merge":
        return "pytorch-fp32"
    if stage == "export":
        return "onnx-fp32" if manifest.get("backend", "optimum") == "optimum" else f"{manifest['backend']}-fp32"
    return manifest.get("variant") or Path(manifest.get("path", "variant")).name


def discover(folders: list[Path]) -> list[tuple[str, Path, dict]]:
    """Artifact folders to bench; a run folder stands for every artifact in it."""
    found = []
    for folder in map(Path, folders):
        if (folder / MANIFEST).exists():
            candidates = [folder]
        elif folder.is_dir():
            candidates = sorted(p.parent for p in folder.rglob(MANIFEST))
        else:
            raise EdgeftError(f"bench: folder not found: {folder}")
        for path in candidates:
            manifest = read_manifest(path, what="variant")
            if manifest["stage"] in ("merge", "export", "quantize"):
                found.append((variant_name(manifest), path, manifest))
    if not found:
        raise EdgeftError(f"bench: no merged, exported or quantized model in {', '.join(map(str, folders))}")
    order = {"merge": 0, "export": 1, "quantize": 2}
    found.sort(key=lambda item: (order[item[2]["stage"]], item[0]))
    names = [n for n, _, _ in found]
    if len(set(names)) != len(names):
        raise EdgeftError(f"bench: two variants share a name: {names}")
    return found


def model_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(MODEL_FILE_SUFFIXES))


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def percentiles_ms(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "min": float(ms.min()), "max": float(ms.max()),
            "samples": int(ms.size)}


def bench(recipe: Recipe, folders: list[Path], out: Path, *, force: bool = True, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from edgeft.metrics import classification_metrics
    from edgeft.report import write_reports
    from edgeft.runners import WorkerPool

    cfg = recipe.bench
    variants = discover(folders)
    if not cfg.include_pytorch:
        variants = [v for v in variants if v[2]["stage"] != "merge"]
    task = variants[0][2]["task"]
    if task != "classification":
        from edgeft.decoder import bench_generation
        return bench_generation(recipe, variants, out, force=force, progress=progress)
    inputs = [input_ref(name, path, manifest) for name, path, manifest in variants]
    if not force and is_up_to_date(out, inputs, cfg.model_dump(mode="json")):
        return {**json.loads((Path(out) / "report.json").read_text()), "_up_to_date": True}
    data_dir = find_in_lineage(variants[0][2], "data")
    label_info = load_labels(data_dir)
    labels, positive = label_info["labels"], label_info.get("positive_label")
    test = load_split(data_dir, "test")[:cfg.max_test_samples]
    texts, truth = [r["text"] for r in test], [r["label"] for r in test]
    max_length = recipe.data.max_length

    specs = {f"{name}@{t}": {"task": task, "format": manifest.get("format", "onnx"), "folder": str(path),
                             "threads": t, "options": {"max_length": max_length}}
             for name, path, manifest in variants for t in cfg.threads}
    print(f"bench: {len(variants)} variants x threads {cfg.threads}, {len(texts)} test examples", file=sys.stderr)
    pool = WorkerPool(specs)
    try:
        results = {}
        top = max(cfg.threads)
        for name, path, manifest in variants:
            preds = pool.call(f"{name}@{top}", "classify", texts=texts, batch_size=cfg.batch_size)["predictions"]
            results[name] = {"metrics": classification_metrics(truth, [labels[p] for p in preds], labels, positive)}
        latency = {key: [] for key in specs}
        round_p50 = {key: [] for key in specs}
        throughput = {key: [] for key in specs}
        # inputs for batch-1 latency: test texts in a fixed order, the same for every variant
        sample = [texts[i % len(texts)] for i in range(cfg.iterations)]
        bar = tqdm(total=cfg.rounds * len(specs), desc="bench", unit="run", disable=not progress)
        for _ in range(cfg.rounds):
            for key in specs:
                seconds = pool.call(key, "latency", texts=sample, warmup=cfg.warmup)["seconds"]
                latency[key] += seconds
                round_p50[key].append(statistics.median(seconds) * 1000)
                throughput[key].append(pool.call(key, "throughput", texts=texts[:cfg.batch_size * 4],
                                                 batch_size=cfg.batch_size, warmup=1)["examples_per_s"])
                bar.update(1)
                time.sleep(0.05)  # let the last worker's threads stop spinning
        bar.close()
    finally:
        peaks = pool.close()

    rows = []
    for name, path, manifest in variants:
        entry = {"name": name, "format": manifest.get("format", "onnx"), "stage": manifest["stage"],
                 "path": str(path), "size_bytes": model_bytes(path), **results[name], "latency_ms": [],
                 "throughput": [], "peak_rss_bytes": {}}
        for t in cfg.threads:
            key = f"{name}@{t}"
            entry["latency_ms"].append({"threads": t, "batch_size": 1, **percentiles_ms(latency[key]),
                                        "round_p50": spread(round_p50[key])})
            entry["throughput"].append({"threads": t, "batch_size": cfg.batch_size,
                                        "examples_per_s": spread(throughput[key])})
            entry["peak_rss_bytes"][str(t)] = peaks.get(key, 0)
            entry["load_seconds"] = pool.loaded[key]["load_seconds"]
        rows.append(entry)
    majority = Counter(r["label"] for r in load_split(data_dir, "train")).most_common(1)[0][0]
    rows.append({"name": "majority-class", "format": "baseline", "stage": "baseline", "size_bytes": 0,
                 "metrics": classification_metrics(truth, [majority] * len(truth), labels, positive),
                 "latency_ms": [], "throughput": [], "peak_rss_bytes": {}, "predicts": majority})
    report = {
        "task": task, "recipe": recipe.name, "test_examples": len(texts), "labels": labels,
        "positive_label": positive, "threads": cfg.threads,
        "timed": "model call only, at batch 1 on real test texts (tokenization done beforehand); throughput "
                 f"at batch {cfg.batch_size}; each (variant, threads) in its own process, variants interleaved "
                 f"over {cfg.rounds} rounds",
        "machine": machine_info(), "versions": library_versions(), "command": " ".join(sys.argv),
        "variants": rows,
    }
    with stage_output(out) as tmp:
        write_reports(report, tmp)
        write_manifest(tmp, stage="bench", task=task, inputs=inputs,
                       config=cfg.model_dump(mode="json"), metrics={v["name"]: v["metrics"] for v in rows})
    return report
