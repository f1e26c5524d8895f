"""Measuring a bundle where it runs: `edgeft-runtime bench BUNDLE` on the device itself.

Every number edgeft reported used to come from the host that built the model; the device that
will run it has another CPU, other kernels, other memory. This measures the bundle on the device
with the bundle's own data (eval.jsonl, a slice of the held-out test split) and settings (the
recipe's bench section, stored in the manifest), and reports it in the host bench's schema, built
from the same rows (report.py) and metrics (metrics.py), so a device row sits beside the
host's rows field for field:

- cold start: a fresh process from its start to its first result (interpreter, imports, hash
  check, session creation, one request), and that process's peak RSS;
- quality on the eval slice (accuracy/F1 or exact match), with the predictions themselves;
- speed at batch 1, rounds of it: latency percentiles (classifiers), time to first token,
  prefill and decode tokens/s with per-token percentiles (generators); tokenization not timed;
- peak RSS of the measuring process.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

from edgeft.runtime import load
from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.files import EVAL_FILE, MANIFEST
from edgeft.runtime.machine import library_versions, machine_info, peak_rss_bytes
from edgeft.runtime.manifest import read_manifest, sha256_file
from edgeft.runtime.metrics import classification_metrics, exact_match, normalize_answer
from edgeft.runtime.report import (
    BENCH_DEFAULTS,
    BenchSettings,
    Decode,
    Latency,
    Row,
    Spread,
    Throughput,
    example_text,
)
from edgeft.runtime.stats import spread


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
def bench_classifier(model, rows: list[dict], settings: BenchSettings, threads: int, rounds: int,
                     meta: dict) -> tuple[Row, str, str]:
    """The row's quality and speed fields, what was timed, and the quality metric."""
    texts, truth = [r["text"] for r in rows], [r["label"] for r in rows]
    said = [label for label, _ in model.predict(texts)]
    metrics = classification_metrics(truth, said, model.labels, meta.get("positive_label"))
    sample = [model.encode([texts[i % len(texts)]]) for i in range(settings.iterations)]
    batch = settings.batch_size
    batches = [model.encode(texts[i:i + batch]) for i in range(0, len(texts) - batch + 1, batch)] or [model.encode(texts)]
    for encoded in sample[:settings.warmup]:
        model.logits(encoded)
    latency, rates = [], []
    for _ in range(rounds):
        latency.append(_timed(model.logits, sample))
        seconds = _timed(model.logits, batches)
        rates.append(sum(len(b["input_ids"]) for b in batches) / sum(seconds))
    row = Row("", "onnx", "device", 0, metrics=metrics, predictions=said, correct=[t == s for t, s in zip(truth, said)],
              latency=[Latency.of(threads, latency)], throughput=[Throughput(threads, batch, Spread.of(rates))])
    return row, "model call only, at batch 1 on the bundle's eval texts (tokenization done beforehand)", "accuracy"


def _timed(call, inputs: list) -> list[float]:
    times = []
    for encoded in inputs:
        start = time.perf_counter()
        call(encoded)
        times.append(time.perf_counter() - start)
    return times


def bench_generator(model, rows: list[dict], settings: BenchSettings, threads: int, rounds: int,
                    meta: dict) -> tuple[Row, str, str]:
    said = [model.tokenizer.decode(list(model.generate_ids(model.encode_chat(r["messages"][:-1]),
                                                           settings.max_new_tokens_eval))).strip() for r in rows]
    answers = [r["answer"] for r in rows]
    text = " ".join(example_text(r) for r in rows)
    prompt = model.tokenizer.encode(text, add_special_tokens=False).ids[:settings.prompt_tokens]
    list(model.generate_ids(prompt, 2, stop=False))  # warm-up
    runs = []
    for _ in range(rounds):
        times: list[float] = []
        for _token in model.generate_ids(prompt, settings.new_tokens, stop=False, timings=times):
            pass
        runs.append({"ttft": times[0], "steps": times[1:]})
    row = Row("", "onnx", "device", 0, metrics={"exact_match": exact_match(answers, said)}, predictions=said,
              correct=[normalize_answer(a) == normalize_answer(s) for a, s in zip(answers, said)],
              decode=[Decode.of(runs, threads, len(prompt), settings.new_tokens)],
              prompt_graph_file=model.prompt_graph_file)  # chosen by this CPU's flags (generator.py)
    timed = (f"greedy decoding at batch 1: time to first token = prefill of a {len(prompt)}-token prompt + "
             f"argmax, then {settings.new_tokens - 1} decode steps; tokenization excluded")
    return row, timed, "exact_match"


BENCHES = {"classification": bench_classifier, "generation": bench_generator}


def recipe_settings(manifest) -> BenchSettings:
    """The bench settings the bundle's recipe measured it with (its `bench` section), else the defaults."""
    known = {f.name for f in dataclasses.fields(BenchSettings)} - {"threads", "rounds"}
    recipe = manifest.config.get("recipe", {}).get("bench", {})
    return dataclasses.replace(BENCH_DEFAULTS, **{k: v for k, v in recipe.items() if k in known})


def bench_bundle(folder: Path | str, threads: int | None = None, rounds: int = 3, cold_rounds: int = 3) -> dict:
    """The device's report for `folder` (a packaged bundle), in the host bench's schema: one variant row."""
    import os

    folder = Path(folder)
    manifest = read_manifest(folder, stage="package", what="bundle")
    threads = threads or os.cpu_count() or 1
    cold = cold_start(folder, threads, cold_rounds)
    start = time.perf_counter()
    model = load(folder, threads, verify=False)  # checked above; each cold-start process checks it again
    load_seconds = time.perf_counter() - start
    row, timed, metric = BENCHES[manifest.task](model, eval_rows(folder), recipe_settings(manifest), threads, rounds,
                                                manifest.self_checks)
    machine = machine_info()
    row = dataclasses.replace(row, name=f"{manifest.variant} on {machine['cpu']}", variant=manifest.variant,
                              size_bytes=sum(f["bytes"] for f in manifest.files.values()),
                              peak_rss_bytes={str(threads): peak_rss_bytes()}, load_seconds=load_seconds,
                              cold_start=cold)
    return {"task": manifest.task, "bundle": {"path": str(folder.resolve()), "variant": manifest.variant,
                                              "manifest_sha256": manifest_sha256(folder)},
            "threads": [threads], "rounds": rounds, "eval_examples": len(row.predictions),
            "quality_metric": metric, "timed": timed, "variants": [row.to_json()], "machine": machine,
            "versions": library_versions(), "command": " ".join(["edgeft-runtime", *sys.argv[1:]])}


def manifest_sha256(folder: Path) -> str:
    """What identifies a bundle's content: the hash of its manifest, which lists every file's sha256."""
    return sha256_file(Path(folder) / MANIFEST)
