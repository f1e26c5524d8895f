"""Measuring a bundle where it runs: `edgeft-runtime bench BUNDLE` on the device itself.

Every number edgeft reported used to come from the host that built the model; the device that
will run it has another CPU, other kernels, other memory. This measures the bundle on the device
with the bundle's own data (eval.jsonl, a slice of the held-out test split) and settings (the
recipe's bench section, stored in the manifest), and reports it in the host bench's schema, built
from the same statistics (stats.py) and metrics (metrics.py), so a device row sits beside the
host's rows field for field:

- cold start: a fresh process from its start to its first result (interpreter, imports, hash
  check, session creation, one request), and that process's peak RSS;
- quality on the eval slice (accuracy/F1 or exact match), with the predictions themselves;
- speed at batch 1, rounds of it: latency percentiles (classifiers), time to first token,
  prefill and decode tokens/s with per-token percentiles (generators); tokenization not timed;
- peak RSS of the measuring process.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from edgeft.runtime import load
from edgeft.runtime.bundle import read_manifest, sha256_file
from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.files import EVAL_FILE, MANIFEST
from edgeft.runtime.machine import library_versions, machine_info, peak_rss_bytes
from edgeft.runtime.metrics import classification_metrics, exact_match, normalize_answer
from edgeft.runtime.stats import decode_entry, latency_entry, spread, throughput_entry

DEFAULTS = {"iterations": 60, "warmup": 5, "batch_size": 32, "prompt_tokens": 128, "new_tokens": 64,
            "max_new_tokens_eval": 8}


def eval_rows(folder: Path) -> list[dict]:
    path = Path(folder) / EVAL_FILE
    if not path.exists():
        raise EdgeftError(f"{path} is missing: package the bundle with package.eval_samples > 0 to measure accuracy "
                          "on the device")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise EdgeftError(f"{path} holds no examples")
    return rows


# --- cold start: a fresh process to its first result ---------------------------------------------
def first_result(folder: Path, threads: int | None) -> None:
    """What a cold-start process runs: load (hash check included) and answer the first eval example."""
    model = load(folder, threads)
    row = eval_rows(folder)[0]
    if hasattr(model, "predict"):
        model.predict([row["text"]])
    else:
        model.answer(row["messages"][:-1], max_new_tokens=1)
    print(json.dumps({"peak_rss_bytes": peak_rss_bytes()}), flush=True)


def cold_start(folder: Path, threads: int | None, rounds: int) -> dict:
    seconds, peaks = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "edgeft.runtime.cli", "_first", str(folder), str(threads or 0)],
                              capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise EdgeftError(f"the cold-start process failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        peaks.append(json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_bytes"])
    return {"first_result_s": spread(seconds), "peak_rss_bytes": max(peaks), "rounds": rounds}


# --- per task: quality on the eval slice, then speed rounds ---------------------------------------
def bench_classifier(model, rows: list[dict], settings: dict, threads: int, rounds: int, meta: dict) -> dict:
    texts, truth = [r["text"] for r in rows], [r["label"] for r in rows]
    said = [label for label, _ in model.predict(texts)]
    metrics = classification_metrics(truth, said, model.labels, meta.get("positive_label"))
    sample = [model.encode([texts[i % len(texts)]]) for i in range(settings["iterations"])]
    batch = settings["batch_size"]
    batches = [model.encode(texts[i:i + batch]) for i in range(0, len(texts) - batch + 1, batch)] or [model.encode(texts)]
    for encoded in sample[:settings["warmup"]]:
        model.logits(encoded)
    latency, rates = [], []
    for _ in range(rounds):
        latency.append(_timed(model.logits, sample))
        seconds = _timed(model.logits, batches)
        rates.append(sum(len(b["input_ids"]) for b in batches) / sum(seconds))
    return {"metrics": metrics, "predictions": said, "correct": [t == s for t, s in zip(truth, said)],
            "latency_ms": [latency_entry(threads, latency)],
            "throughput": [throughput_entry(threads, batch, rates)],
            "timed": "model call only, at batch 1 on the bundle's eval texts (tokenization done beforehand)",
            "quality_metric": "accuracy"}


def _timed(call, inputs: list) -> list[float]:
    times = []
    for encoded in inputs:
        start = time.perf_counter()
        call(encoded)
        times.append(time.perf_counter() - start)
    return times


def bench_generator(model, rows: list[dict], settings: dict, threads: int, rounds: int, meta: dict) -> dict:
    said = [model.tokenizer.decode(list(model.generate_ids(model.encode_chat(r["messages"][:-1]),
                                                           settings["max_new_tokens_eval"]))).strip() for r in rows]
    answers = [r["answer"] for r in rows]
    metrics = {"exact_match": exact_match(answers, said)}
    text = " ".join(r.get("text") or r["messages"][-2]["content"] for r in rows)
    prompt = model.tokenizer.encode(text, add_special_tokens=False).ids[:settings["prompt_tokens"]]
    list(model.generate_ids(prompt, 2, stop=False))  # warm-up
    runs = []
    for _ in range(rounds):
        times: list[float] = []
        for _token in model.generate_ids(prompt, settings["new_tokens"], stop=False, timings=times):
            pass
        runs.append({"ttft": times[0], "steps": times[1:]})
    return {"metrics": metrics, "predictions": said,
            "correct": [normalize_answer(a) == normalize_answer(s) for a, s in zip(answers, said)],
            "latency_ms": [decode_entry(runs, threads, len(prompt), settings["new_tokens"])], "throughput": [],
            "prompt_graph_file": model.prompt_graph_file,  # chosen by this CPU's flags (generator.py)
            "timed": (f"greedy decoding at batch 1: time to first token = prefill of a {len(prompt)}-token prompt + "
                      f"argmax, then {settings['new_tokens'] - 1} decode steps; tokenization excluded"),
            "quality_metric": "exact_match"}


BENCHES = {"classification": bench_classifier, "generation": bench_generator}


def bench_bundle(folder: Path | str, threads: int | None = None, rounds: int = 3, cold_rounds: int = 3) -> dict:
    """The device's report for `folder` (a packaged bundle), in the host bench's schema: one variant row."""
    import os

    folder = Path(folder)
    manifest = read_manifest(folder, stage="package", what="bundle")
    threads = threads or os.cpu_count() or 1
    settings = {**DEFAULTS, **{k: v for k, v in manifest["config"]["recipe"].get("bench", {}).items() if k in DEFAULTS}}
    meta = manifest.get("self_checks", {})
    cold = cold_start(folder, threads, cold_rounds)
    start = time.perf_counter()
    model = load(folder, threads, verify=False)  # checked above; each cold-start process checks it again
    load_seconds = time.perf_counter() - start
    measured = BENCHES[manifest["task"]](model, eval_rows(folder), settings, threads, rounds, meta)
    machine = machine_info()
    row = {"name": f"{manifest['variant']} on {machine['cpu']}", "variant": manifest["variant"], "format": "onnx",
           "stage": "device", "size_bytes": sum(f["bytes"] for f in manifest["files"].values()),
           **{k: v for k, v in measured.items() if k not in ("timed", "quality_metric")},
           "peak_rss_bytes": {str(threads): peak_rss_bytes()},
           "load_seconds": load_seconds, "cold_start": cold}
    return {"task": manifest["task"], "bundle": {"path": str(folder.resolve()), "variant": manifest["variant"],
                                                 "manifest_sha256": manifest_sha256(folder)},
            "threads": [threads], "rounds": rounds, "eval_examples": len(measured["predictions"]),
            "quality_metric": measured["quality_metric"],
            "timed": measured["timed"], "variants": [row], "machine": machine, "versions": library_versions(),
            "command": " ".join(["edgeft-runtime", *sys.argv[1:]])}


def manifest_sha256(folder: Path) -> str:
    """What identifies a bundle's content: the hash of its manifest, which lists every file's sha256."""
    return sha256_file(Path(folder) / MANIFEST)
