"""Cold start and memory of a shipped bundle: edgeft's runtime against transformers and optimum.

    python bench/cold_start.py [CLASSIFIER_RUN] [GENERATOR_RUN]
        (default: runs/sms-spam-minilm and runs/assistant-trec-smollm2, made by `edgeft run`)

transformers loads the merged fp32 model (PyTorch has no int8/int4 path for it); optimum loads the
bundle's ONNX variant (for a genai-built bundle, optimum's own export quantized the same way).
Each measurement is a fresh Python process: start, imports, model load, first result (a
prediction, or the first generated token). The parent times the whole process; the child reports
its own phases and peak RSS (VmHWM). Loaders are interleaved over ROUNDS rounds; medians with
min-max. Writes bench/results/cold_start.json.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ROUNDS = 5
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


def optimum_twin(run: Path, bundle: Path) -> Path:
    """What optimum loads: the bundle's own ONNX variant when optimum exported it; for a bundle built
    by onnxruntime-genai's builder (graphs optimum cannot run), optimum's export quantized the same way."""
    def config(folder: Path) -> dict:
        return json.loads((folder / "manifest.json").read_text()).get("config", {})

    name = config(bundle).get("variant")
    if not name or not (run / "quantize" / name / "manifest.json").exists():
        return run / "export-optimum"
    method = config(run / "quantize" / name)["method"]
    candidates = [run / "quantize" / name] + sorted(p.parent for p in (run / "quantize").glob("*/manifest.json"))
    return next((c for c in candidates if config(c).get("source") == "optimum" and config(c)["method"] == method),
                run / "export-optimum")


def measure(code: str) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PRELUDE + code + EPILOGUE], capture_output=True, text=True,
                          cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return {"wall_s": wall, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    runs = {"classification": Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "runs/sms-spam-minilm",
            "generation": Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "runs/assistant-trec-smollm2"}
    from edgeft.core.artifacts import library_versions, machine_info

    results, summary = {}, {}
    for task, run in runs.items():
        bundle = run / "package"
        if not (bundle / "manifest.json").exists():
            print(f"skip {task}: no bundle in {bundle}")
            continue
        paths = {"bundle": str(bundle), "merged": str(run / "merge"), "onnx": str(optimum_twin(run, bundle)),
                 "text": TEXT if task == "classification" else QUESTION}
        samples = {name: [] for name in LOADERS[task]}
        for _ in range(ROUNDS):
            for name, code in LOADERS[task].items():
                samples[name].append(measure(code.format(**paths)))
        rows = {}
        for name, runs_ in samples.items():
            wall = [r["wall_s"] for r in runs_]
            rss = [r["peak_rss"] for r in runs_]
            rows[name] = {"cold_start_s": statistics.median(wall), "min_s": min(wall), "max_s": max(wall),
                          "import_s": statistics.median(r["import_s"] for r in runs_),
                          "load_s": statistics.median(r["load_s"] for r in runs_),
                          "first_result_s": statistics.median(r["first_s"] for r in runs_),
                          "peak_rss_mib": statistics.median(rss) / 2**20,
                          "torch_loaded": runs_[0]["torch_loaded"], "transformers_loaded": runs_[0]["transformers_loaded"],
                          "result": runs_[0]["result"]}
        runtime = rows["edgeft-runtime"]
        ratios = {other: {"cold_start_speedup": rows[other]["cold_start_s"] / runtime["cold_start_s"],
                          "peak_rss_ratio": runtime["peak_rss_mib"] / rows[other]["peak_rss_mib"]}
                  for other in rows if other != "edgeft-runtime"}
        results[task] = {"rows": rows, "ratios": ratios, "bundle_mib": folder_mib(bundle),
                         "transformers_loads": paths["merged"], "optimum_loads": paths["onnx"],
                         "bundle_files": sorted(json.loads((bundle / "manifest.json").read_text())["files"])}
        print(f"\n{task}: bundle {results[task]['bundle_mib']:.1f} MiB")
        print(f"{'loader':16} {'cold start s (min-max)':>24} {'import':>7} {'load':>6} {'first':>6} {'peak RSS MiB':>13}  torch?")
        for name, r in rows.items():
            print(f"{name:16} {r['cold_start_s']:9.2f} ({r['min_s']:.2f}-{r['max_s']:.2f}){'':5} {r['import_s']:7.2f} "
                  f"{r['load_s']:6.2f} {r['first_result_s']:6.2f} {r['peak_rss_mib']:13.0f}  {r['torch_loaded']}")
        for other, ratio in ratios.items():
            print(f"  runtime vs {other}: {ratio['cold_start_speedup']:.1f}x faster to first result, "
                  f"peak RSS x{ratio['peak_rss_ratio']:.2f}")
        summary[task] = ratios
    out = {"benchmark": "cold_start", "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
           "rounds": ROUNDS, "timed": "a fresh process: start, imports, load, first prediction / first token",
           "machine": machine_info(), "versions": library_versions(), "results": results}
    path = ROOT / "bench/results/cold_start.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
