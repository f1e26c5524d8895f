"""edgeft's int8 classifier against PyTorch fp32 and optimum's default int8 path, in one run.

    python -m bench.compare_optimum [RUN_DIR] [--rounds 5]   (default: runs/sms-spam-minilm, from `edgeft run`)

optimum's default path is what its documentation shows: `optimum-cli export onnx` then
`optimum-cli onnxruntime quantize --avx2` (dynamic int8); on a CPU with AVX512-VNNI also its
`--avx512_vnni` configuration, the one a user of such a CPU would pick. Every model gets the very same
pre-tokenized test inputs and thread counts; the models are interleaved over several rounds so
that noise on this shared machine hits them alike. Timed: the model call at batch 1 (tokenization
excluded). Prints medians with min-max and ratios; writes bench/results/compare_optimum.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import RESULTS, ROOT, write_result
from edgeft.core.artifacts import read_manifest
from edgeft.core.metrics import classification_metrics
from edgeft.core.splits import load_split
from edgeft.runtime.files import RunLayout

THREADS = (1, 2)


def optimum_configs() -> dict[str, str]:
    """optimum's quantization configurations to compare: --avx2 everywhere, --avx512_vnni where the CPU has it."""
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    return {"optimum-int8": "--avx2", **({"optimum-int8-vnni": "--avx512_vnni"} if "avx512_vnni" in flags else {})}


def optimum_models(merge_dir: Path, work: Path) -> dict[str, Path]:
    """The optimum-cli commands a user would run, as they are documented: one export, one quantize
    per configuration."""
    exported = work / "optimum-onnx"
    cli = [sys.executable, "-m", "optimum.commands.optimum_cli"]  # optimum-cli, from this Python's install
    subprocess.run([*cli, "export", "onnx", "--model", str(merge_dir), "--task", "text-classification",
                    str(exported)], check=True, capture_output=True)
    models = {}
    for name, flag in optimum_configs().items():
        subprocess.run([*cli, "onnxruntime", "quantize", "--onnx_model", str(exported), flag,
                        "-o", str(work / name)], check=True, capture_output=True)
        models[name] = next((work / name).glob("*.onnx"))
    return models


def summarize(names: list[str], p50: dict, accuracy: dict, sizes: dict) -> tuple[list[dict], dict]:
    """One row per (model, threads) with the median and min-max of the rounds' p50, and edgeft's
    ratios against each baseline; printed as a table."""
    results = []
    print(f"{'model':17} {'threads':>7} {'p50 ms (median of rounds, min-max)':>36} {'accuracy':>9} {'spam F1':>8} {'MiB':>7}")
    for t in THREADS:
        for name in names:
            runs = p50[(name, t)]
            row = {"model": name, "threads": t, "p50_ms": statistics.median(runs), "p50_ms_min": min(runs),
                   "p50_ms_max": max(runs), "round_p50_ms": runs, **accuracy[name], "size_bytes": sizes[name]}
            results.append(row)
            print(f"{name:17} {t:7d} {row['p50_ms']:14.2f} ({min(runs):.2f}-{max(runs):.2f}){'':8} "
                  f"{row['accuracy']:9.4f} {row['spam_f1']:8.4f} {sizes[name] / 2**20:7.1f}")
    by = {(r["model"], r["threads"]): r for r in results}
    ratios = {}
    for t in THREADS:
        e = by[("edgeft-int8", t)]
        for base in names[:-1]:
            b = by[(base, t)]
            ratios[f"{base}@{t}t"] = {"speedup_p50": b["p50_ms"] / e["p50_ms"],
                                      "accuracy_delta_points": 100 * (e["accuracy"] - b["accuracy"]),
                                      "size_ratio": e["size_bytes"] / b["size_bytes"]}
    print("\nedgeft-int8 against:")
    for key, r in ratios.items():
        print(f"  {key:18} {r['speedup_p50']:.2f}x faster (p50), accuracy {r['accuracy_delta_points']:+.2f} points, "
              f"size x{r['size_ratio']:.2f}")
    return results, ratios


def load_inputs(run: RunLayout):
    """The held-out test texts, tokenized once as the model was tuned (its max_length), one at a time."""
    from transformers import AutoTokenizer

    edgeft_dir = run.variant("int8-dynamic")
    read_manifest(run.merge, stage="merge")
    read_manifest(edgeft_dir, stage="quantize")
    labels = json.loads((run.data / "labels.json").read_text())["labels"]
    test = load_split(run.data, "test")
    tokenizer = AutoTokenizer.from_pretrained(run.merge)
    max_length = json.loads((edgeft_dir / "preprocess.json").read_text())["max_length"]
    single = [dict(tokenizer([r["text"]], truncation=True, max_length=max_length, return_tensors="np")) for r in test]
    return labels, test, single


def sessions(onnx_files: dict[str, Path]) -> dict:
    import onnxruntime as ort

    models = {}
    for t in THREADS:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = t, 1
        for name, path in onnx_files.items():
            models[(name, t)] = ort.InferenceSession(str(path), options)
    return models


def measure(run: RunLayout, rounds: int, calls: int, work: Path) -> tuple[list[str], dict, dict, dict, int]:
    """Accuracy on every test text, then each model's p50 at batch 1 per round, interleaved."""
    import torch
    from transformers import AutoModelForSequenceClassification

    labels, test, single = load_inputs(run)
    onnx_files = {**optimum_models(run.merge, work), "edgeft-int8": run.variant("int8-dynamic") / "model.onnx"}
    sizes = {name: path.stat().st_size for name, path in onnx_files.items()}
    sizes["pytorch-fp32"] = (run.merge / "model.safetensors").stat().st_size
    models = sessions(onnx_files)
    torch_model = AutoModelForSequenceClassification.from_pretrained(run.merge).eval()

    def call(name, threads, feed):
        if name == "pytorch-fp32":
            torch.set_num_threads(threads)
            with torch.inference_mode():
                return torch_model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
        session = models[(name, threads)]
        wanted = {i.name for i in session.get_inputs()}
        return session.run(None, {k: v.astype(np.int64) for k, v in feed.items() if k in wanted})[0]

    names = ["pytorch-fp32", *optimum_configs(), "edgeft-int8"]
    accuracy = {name: classification_metrics([r["label"] for r in test],
                                             [labels[int(call(name, 2, feed).argmax(-1)[0])] for feed in single],
                                             labels, "spam") for name in names}
    p50 = {(n, t): [] for n in names for t in THREADS}
    inputs = single[:calls]
    for _ in range(rounds):
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
    return names, p50, accuracy, sizes, len(test)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.compare_optimum", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, default=ROOT / "runs/sms-spam-minilm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100, help="timed batch-1 calls per model, thread count and round")
    parser.add_argument("--out", type=Path, default=RESULTS / "compare_optimum.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        names, p50, accuracy, sizes, examples = measure(RunLayout(args.run), args.rounds, args.calls, Path(tmp))
    results, ratios = summarize(names, p50, accuracy, sizes)
    return write_result(args.out, "compare_optimum", argv, {
        "run_dir": str(args.run), "test_examples": examples, "rounds": args.rounds, "calls_per_round": args.calls,
        "timed": "model call at batch 1 on pre-tokenized real test SMS; median over rounds of each round's p50",
        "optimum_path": "optimum-cli export onnx --task text-classification; optimum-cli onnxruntime quantize "
                        + " / ".join(optimum_configs().values()), "results": results, "ratios": ratios})


if __name__ == "__main__":
    main()
