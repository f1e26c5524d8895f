"""edgeft's int8 classifier against PyTorch fp32 and optimum's default int8 path, in one run.

    python bench/compare_optimum.py [RUN_DIR]      (default: runs/sms-spam-minilm, from `edgeft run`)

optimum's default path is what its documentation shows: `optimum-cli export onnx` then
`optimum-cli onnxruntime quantize --avx2` (dynamic int8). Every model gets the very same
pre-tokenized test inputs and thread counts; the models are interleaved over several rounds so
that noise on this shared machine hits them alike. Timed: the model call at batch 1 (tokenization
excluded). Prints medians with min-max and ratios; writes bench/results/compare_optimum.json.
"""
from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeft.core.artifacts import library_versions, machine_info, read_manifest  # noqa: E402
from edgeft.core.metrics import classification_metrics  # noqa: E402
from edgeft.stages.data import load_split  # noqa: E402

THREADS = (1, 2)
ROUNDS = 5
CALLS_PER_ROUND = 100


def optimum_default(merge_dir: Path, work: Path) -> Path:
    """The two optimum-cli commands a user would run, as they are documented."""
    exported, quantized = work / "optimum-onnx", work / "optimum-int8"
    subprocess.run(["optimum-cli", "export", "onnx", "--model", str(merge_dir), "--task", "text-classification",
                    str(exported)], check=True, capture_output=True)
    subprocess.run(["optimum-cli", "onnxruntime", "quantize", "--onnx_model", str(exported), "--avx2",
                    "-o", str(quantized)], check=True, capture_output=True)
    return next(quantized.glob("*.onnx"))


def main() -> None:
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "runs" / "sms-spam-minilm")
    merge_dir, edgeft_dir = run_dir / "merge", run_dir / "quantize" / "int8-dynamic"
    read_manifest(merge_dir, stage="merge")
    read_manifest(edgeft_dir, stage="quantize")
    data_dir = run_dir / "data"
    labels = json.loads((data_dir / "labels.json").read_text())["labels"]
    test = load_split(data_dir, "test")
    tokenizer = AutoTokenizer.from_pretrained(merge_dir)
    max_length = 64
    single = [dict(tokenizer([r["text"]], truncation=True, max_length=max_length, return_tensors="np"))
              for r in test]

    with tempfile.TemporaryDirectory() as tmp:
        optimum_model = optimum_default(merge_dir, Path(tmp))
        optimum_bytes = optimum_model.stat().st_size
        models = {}
        for t in THREADS:
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = t, 1
            models[("edgeft-int8", t)] = ort.InferenceSession(str(edgeft_dir / "model.onnx"), options)
            models[("optimum-int8", t)] = ort.InferenceSession(str(optimum_model), options)
        torch_model = AutoModelForSequenceClassification.from_pretrained(merge_dir).eval()

        def call(name, threads, feed):
            if name == "pytorch-fp32":
                torch.set_num_threads(threads)
                with torch.inference_mode():
                    return torch_model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
            session = models[(name, threads)]
            names = {i.name for i in session.get_inputs()}
            return session.run(None, {k: v.astype(np.int64) for k, v in feed.items() if k in names})[0]

        names = ["pytorch-fp32", "optimum-int8", "edgeft-int8"]
        accuracy = {}
        for name in names:
            preds = [labels[int(call(name, 2, feed).argmax(-1)[0])] for feed in single]
            accuracy[name] = classification_metrics([r["label"] for r in test], preds, labels, "spam")
        p50 = {(n, t): [] for n in names for t in THREADS}
        inputs = single[:CALLS_PER_ROUND]
        for _ in range(ROUNDS):
            for t in THREADS:
                for name in names:
                    for feed in inputs[:5]:
                        call(name, t, feed)  # warm-up
                    times = []
                    for feed in inputs:
                        start = time.perf_counter()
                        call(name, t, feed)
                        times.append((time.perf_counter() - start) * 1000)
                    p50[(name, t)].append(statistics.median(times))
    sizes = {"pytorch-fp32": (merge_dir / "model.safetensors").stat().st_size, "optimum-int8": optimum_bytes,
             "edgeft-int8": (edgeft_dir / "model.onnx").stat().st_size}

    results = []
    print(f"{'model':14} {'threads':>7} {'p50 ms (median of rounds, min-max)':>36} {'accuracy':>9} {'spam F1':>8} {'MiB':>7}")
    for t in THREADS:
        for name in names:
            runs = p50[(name, t)]
            row = {"model": name, "threads": t, "p50_ms": statistics.median(runs), "p50_ms_min": min(runs),
                   "p50_ms_max": max(runs), "round_p50_ms": runs, **accuracy[name], "size_bytes": sizes[name]}
            results.append(row)
            print(f"{name:14} {t:7d} {row['p50_ms']:14.2f} ({min(runs):.2f}-{max(runs):.2f}){'':8} "
                  f"{row['accuracy']:9.4f} {row['spam_f1']:8.4f} {sizes[name] / 2**20:7.1f}")
    by = {(r["model"], r["threads"]): r for r in results}
    ratios = {}
    for t in THREADS:
        e = by[("edgeft-int8", t)]
        for base in ("pytorch-fp32", "optimum-int8"):
            b = by[(base, t)]
            ratios[f"{base}@{t}t"] = {"speedup_p50": b["p50_ms"] / e["p50_ms"],
                                      "accuracy_delta_points": 100 * (e["accuracy"] - b["accuracy"]),
                                      "size_ratio": e["size_bytes"] / b["size_bytes"]}
    print("\nedgeft-int8 against:")
    for key, r in ratios.items():
        print(f"  {key:18} {r['speedup_p50']:.2f}x faster (p50), accuracy {r['accuracy_delta_points']:+.2f} points, "
              f"size x{r['size_ratio']:.2f}")
    out = {"benchmark": "compare_optimum", "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
           "run_dir": str(run_dir), "test_examples": len(test), "rounds": ROUNDS, "calls_per_round": CALLS_PER_ROUND,
           "timed": "model call at batch 1 on pre-tokenized real test SMS; median over rounds of each round's p50",
           "optimum_path": "optimum-cli export onnx --task text-classification; optimum-cli onnxruntime quantize --avx2",
           "machine": machine_info(), "python": platform.python_version(), "versions": library_versions(),
           "results": results, "ratios": ratios}
    path = ROOT / "bench" / "results" / "compare_optimum.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
