"""Cold start and memory of a shipped bundle: edgeft's runtime against transformers and optimum.

    python -m bench.cold_start [CLASSIFIER_RUN] [GENERATOR_RUN] [--rounds 5]
        (default: runs/sms-spam-minilm and runs/assistant-trec-smollm2, made by `edgeft run`)

transformers loads the merged fp32 model (PyTorch has no int8/int4 path for it); optimum loads the
bundle's ONNX variant (for a genai-built bundle, optimum's own export quantized the same way).
Each measurement is a fresh Python process: start, imports, model load, first result (a
prediction, or the first generated token). The parent times the whole process; the child reports
its own phases and peak RSS (VmHWM). Loaders are interleaved over ROUNDS rounds; medians with
min-max. Writes bench/results/cold_start.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import RESULTS, ROOT, write_result
from edgeft.runtime.files import MANIFEST, RunLayout

TEXT = "WINNER!! You have been selected for a free holiday. Call now to claim."
QUESTION = "What does NASA stand for ?"

PRELUDE = """
import json, time, sys
t0 = time.perf_counter()
def peak_rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
"""
EPILOGUE = """
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_s": t3 - t2, "peak_rss": peak_rss(),
                  "torch_loaded": "torch" in sys.modules, "transformers_loaded": "transformers" in sys.modules,
                  "result": str(result)[:80]}))
"""

LOADERS = {
    "classification": {
        "edgeft-runtime": """
from edgeft.runtime import load
t1 = time.perf_counter()
model = load({bundle!r})
t2 = time.perf_counter()
result = model.predict([{text!r}])[0]
t3 = time.perf_counter()
""",
        "transformers": """
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
t1 = time.perf_counter()
tok = AutoTokenizer.from_pretrained({merged!r}); model = AutoModelForSequenceClassification.from_pretrained({merged!r}).eval()
t2 = time.perf_counter()
with torch.inference_mode():
    result = model.config.id2label[int(model(**tok([{text!r}], return_tensors="pt")).logits.argmax())]
t3 = time.perf_counter()
""",
        "optimum": """
from optimum.onnxruntime import ORTModelForSequenceClassification
from transformers import AutoTokenizer
t1 = time.perf_counter()
tok = AutoTokenizer.from_pretrained({onnx!r}); model = ORTModelForSequenceClassification.from_pretrained({onnx!r})
t2 = time.perf_counter()
result = int(model(**tok([{text!r}], return_tensors="pt")).logits.argmax())
t3 = time.perf_counter()
""",
    },
    "generation": {
        "edgeft-runtime": """
from edgeft.runtime import load
t1 = time.perf_counter()
model = load({bundle!r})
t2 = time.perf_counter()
result = next(model.stream({text!r}))
t3 = time.perf_counter()
""",
        "transformers": """
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
t1 = time.perf_counter()
tok = AutoTokenizer.from_pretrained({merged!r}); model = AutoModelForCausalLM.from_pretrained({merged!r}).eval()
t2 = time.perf_counter()
ids = tok.apply_chat_template([{{"role": "user", "content": {text!r}}}], add_generation_prompt=True, return_tensors="pt")
result = tok.decode(model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False)[0, -1:])
t3 = time.perf_counter()
""",
        "optimum": """
from optimum.onnxruntime import ORTModelForCausalLM
from transformers import AutoTokenizer
t1 = time.perf_counter()
tok = AutoTokenizer.from_pretrained({onnx!r}); model = ORTModelForCausalLM.from_pretrained({onnx!r})
t2 = time.perf_counter()
ids = tok.apply_chat_template([{{"role": "user", "content": {text!r}}}], add_generation_prompt=True, return_tensors="pt")
result = tok.decode(model.generate(ids, max_new_tokens=1, do_sample=False)[0, -1:])
t3 = time.perf_counter()
""",
    },
}


def folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def optimum_twin(run: RunLayout, bundle: Path) -> Path:
    """What optimum loads: the bundle's own ONNX variant when optimum exported it; for a bundle built
    by onnxruntime-genai's builder (graphs optimum cannot run), optimum's export quantized the same way."""
    def config(folder: Path) -> dict:
        return json.loads((folder / MANIFEST).read_text()).get("config", {})

    name = config(bundle).get("variant")
    if not name or not (run.variant(name) / MANIFEST).exists():
        return run.export("optimum")
    method = config(run.variant(name))["method"]
    candidates = [run.variant(name)] + sorted(p.parent for p in run.quantized.glob(f"*/{MANIFEST}"))
    return next((c for c in candidates if config(c).get("source") == "optimum" and config(c)["method"] == method),
                run.export("optimum"))


def measure(code: str) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PRELUDE + code + EPILOGUE], capture_output=True, text=True,
                          cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return {"wall_s": wall, **json.loads(done.stdout.strip().splitlines()[-1])}


def loader_row(runs: list[dict]) -> dict:
    wall = [r["wall_s"] for r in runs]
    return {"cold_start_s": statistics.median(wall), "min_s": min(wall), "max_s": max(wall),
            "import_s": statistics.median(r["import_s"] for r in runs), "load_s": statistics.median(r["load_s"] for r in runs),
            "first_result_s": statistics.median(r["first_s"] for r in runs),
            "peak_rss_mib": statistics.median(r["peak_rss"] for r in runs) / 2**20,
            "torch_loaded": runs[0]["torch_loaded"], "transformers_loaded": runs[0]["transformers_loaded"],
            "result": runs[0]["result"]}


def measure_task(task: str, run: RunLayout, rounds: int) -> dict:
    """Each loader's fresh processes, interleaved over the rounds."""
    bundle = run.package
    paths = {"bundle": str(bundle), "merged": str(run.merge), "onnx": str(optimum_twin(run, bundle)),
             "text": TEXT if task == "classification" else QUESTION}
    samples = {name: [] for name in LOADERS[task]}
    for _ in range(rounds):
        for name, code in LOADERS[task].items():
            samples[name].append(measure(code.format(**paths)))
    rows = {name: loader_row(runs) for name, runs in samples.items()}
    runtime = rows["edgeft-runtime"]
    ratios = {other: {"cold_start_speedup": rows[other]["cold_start_s"] / runtime["cold_start_s"],
                      "peak_rss_ratio": runtime["peak_rss_mib"] / rows[other]["peak_rss_mib"]}
              for other in rows if other != "edgeft-runtime"}
    result = {"rows": rows, "ratios": ratios, "bundle_mib": folder_mib(bundle), "transformers_loads": paths["merged"],
              "optimum_loads": paths["onnx"], "bundle_files": sorted(json.loads((bundle / MANIFEST).read_text())["files"])}
    print(f"\n{task}: bundle {result['bundle_mib']:.1f} MiB")
    for name, r in rows.items():
        print(f"{name:16} {r['cold_start_s']:6.2f} s ({r['min_s']:.2f}-{r['max_s']:.2f}), peak RSS "
              f"{r['peak_rss_mib']:.0f} MiB, torch loaded: {r['torch_loaded']}")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_start", description=__doc__.split("\n\n")[0])
    parser.add_argument("classifier_run", nargs="?", type=Path, default=ROOT / "runs/sms-spam-minilm")
    parser.add_argument("generator_run", nargs="?", type=Path, default=ROOT / "runs/assistant-trec-smollm2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "cold_start.json")
    args = parser.parse_args(argv)
    results = {}
    for task, run in (("classification", RunLayout(args.classifier_run)), ("generation", RunLayout(args.generator_run))):
        if not (run.package / MANIFEST).exists():
            print(f"skip {task}: no bundle in {run.package}")
            continue
        results[task] = measure_task(task, run, args.rounds)
    return write_result(args.out, "cold_start", argv, {
        "rounds": args.rounds, "timed": "a fresh process: start, imports, load, first prediction / first token",
        "results": results})


if __name__ == "__main__":
    main()
