"""edgeft against llama.cpp on the user's own fine-tuned assistant, in one run.

    python -m bench.compare_llamacpp [RUN_DIR] [--gguf-from RUN ...] [--llama-bench PATH] [--threads 1 2]

RUN_DIR is a run of the assistant recipe (default runs/assistant-trec-smollm2): its merged model,
held-out questions, fp32 genai export and shipped int4 (package/). The GGUF files are the run's own
gguf variants when it has them (export.backends with gguf), else made here the same way: llama.cpp's
converter on the merged model, then F16, Q8_0, Q4_K_M and Q4_0 by llama.cpp's quantizer.
`--gguf-from RUN` scores llama.cpp's quants of another run's merged model too (same questions), e.g.
plain QLoRA (`tune.base_quant: nf4`): the adapter edgeft ships is trained for onnxruntime's int4
grid, and llama.cpp deserves the fine-tune that suits it best.

- Quality: every model answers all held-out questions from the same prompt token ids, greedily, at
  most 6 tokens; exact match paired with the fp32 export (bootstrap interval, McNemar), and the
  shipped int4 paired with Q4_K_M, the quality bar.
- Speed: a 128-token prompt, then 64 greedy tokens, at each thread count; edgeft.runtime and
  llama.cpp through llama-cpp-python run by the very same Python loop (runtime/greedy.py), and,
  with --llama-bench, llama.cpp's own llama-bench (pp128 into an empty cache and tg64 at depth 128:
  the same work without Python), everything interleaved round by round; medians with min-max.
  `--prompt-tokens 1024` times a long conversation instead.
- Peak RSS: each model loaded and run once in a fresh process.

Writes bench/results/compare_llamacpp.json with the machine, versions, llama.cpp build flags and
the command.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import RESULTS, ROOT, write_result
from edgeft.benchkit.paired import paired_drop
from edgeft.core.artifacts import model_bytes, read_manifest
from edgeft.core.metrics import exact_match, normalize_answer
from edgeft.core.splits import load_split
from edgeft.generation.chat import encode_chat, speed_prompt
from edgeft.generation.gguf import LLAMA_CPP_PYTHON, convert, quantize_file
from edgeft.generation.llamacpp_build import cmake_args, cpu_flags
from edgeft.generation.models import load_tokenizer
from edgeft.generation.runners import OrtGenerator
from edgeft.runtime.files import GENERATION_FILE, GGUF_FILE, HF_CONFIG_FILE, MANIFEST, ONNX_FILE, TOKENIZER_FILE, RunLayout
from edgeft.runtime.generator import choose_prompt_graph
from edgeft.runtime.report import Decode
from edgeft.runtime.stats import spread

MAX_LENGTH = 96  # the assistant recipe's data.max_length: the prompts the bench gives
GGUF_TYPES = ("F16", "Q8_0", "Q4_K_M", "Q4_0")
REFERENCE, SHIPPED, QUALITY_BAR, SPEED_BAR = "edgeft fp32", "edgeft int4", "llama.cpp Q4_K_M", "llama.cpp Q4_0"
COPYING = "edgeft int4, KV cache copied each step (before)"  # the same model, speed only


def make_runner(name: str, folder: Path, threads: int) -> OrtGenerator:
    if name != COPYING:
        return OrtGenerator(folder, threads)
    from edgeft.runtime import Generator

    copying = OrtGenerator.__new__(OrtGenerator)
    copying.generator = Generator(folder, threads, verify=False, shared_kv=False)
    return copying


@dataclass(frozen=True)
class Settings:
    prompt_tokens: int = 128  # the timed prompt, and llama-bench's depth for decoding
    new_tokens: int = 64
    max_answer: int = 6  # greedy tokens per held-out question
    questions: int | None = None  # only the first N held-out questions (a smoke run)


def gguf_models(run: RunLayout, work: Path, label: str = "") -> dict[str, Path]:
    """llama.cpp's types of the run's merged model: the run's gguf variants, or converted here."""
    found = {}
    for folder in sorted(p.parent for p in run.quantized.glob(f"*/{MANIFEST}")):
        manifest = read_manifest(folder, verify=False)
        if manifest.format == "gguf":
            found[manifest.details["gguf_type"]] = folder
    missing = [t for t in GGUF_TYPES if t not in found]
    if missing:
        work.mkdir(parents=True, exist_ok=True)
        f32 = work / "f32.gguf"
        if not f32.exists():
            convert(run.merge, f32, "f32")
        for t in missing:
            folder = work / t
            folder.mkdir(exist_ok=True)
            if not (folder / GGUF_FILE).exists():
                quantize_file(f32, folder / GGUF_FILE, t)
            for name in (TOKENIZER_FILE, HF_CONFIG_FILE):
                (folder / name).write_bytes((run.merge / name).read_bytes())
            (folder / GENERATION_FILE).write_bytes((run.export("genai") / GENERATION_FILE).read_bytes())
            found[t] = folder
    return {f"llama.cpp {t}{label}": found[t] for t in GGUF_TYPES}


def questions(run: RunLayout, cfg: Settings):
    tokenizer = load_tokenizer(run.merge)
    everything = load_split(run.data, "test")
    test = everything[:cfg.questions]
    encoded = [encode_chat(tokenizer, r["messages"], MAX_LENGTH) for r in test]
    prompt = speed_prompt(tokenizer, everything, cfg.prompt_tokens, "--prompt-tokens")  # real text, as edgeft bench's
    return tokenizer, test, [f[:n] for f, n in encoded], [f[n:] for f, n in encoded], prompt


def quality(models: dict[str, Path], asked: tuple, cfg: Settings) -> dict:
    tokenizer, test, prompts, answers, _ = asked
    out = {}
    for name, folder in models.items():
        start = time.perf_counter()
        reply = OrtGenerator(folder, 2).evaluate(prompts, answers, cfg.max_answer)
        said = [tokenizer.decode(p, skip_special_tokens=True).strip() for p in reply["predictions"]]
        out[name] = {"exact_match": exact_match([r["answer"] for r in test], said),
                     "correct": [normalize_answer(r["answer"]) == normalize_answer(s) for r, s in zip(test, said)],
                     "eval_seconds": time.perf_counter() - start}
        print(f"{name}: exact match {out[name]['exact_match']:.3f}", flush=True)
    return out


def llama_bench_round(binary: Path, gguf: Path, threads: int, cfg: Settings) -> dict:
    """One llama-bench repetition (tokens/s): the prompt into an empty cache (pp, depth 0), then the new
    tokens after it (tg at the prompt's depth), as edgeft's prefill and decode are timed."""
    out = {}
    for what, work in (("prefill", ["-p", str(cfg.prompt_tokens), "-n", "0"]),
                       ("decode", ["-p", "0", "-n", str(cfg.new_tokens), "-d", str(cfg.prompt_tokens)])):
        cmd = [str(binary), "-m", str(gguf), *work, "-t", str(threads), "-r", "1", "-o", "json"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True,
                              env={"LD_LIBRARY_PATH": str(binary.parent)})
        out[what] = json.loads(done.stdout)[0]["avg_ts"]
    return out


def speed(models: dict[str, Path], prompt: list[int], threads: list[int], rounds: int,
          llama_bench: Path | None, cfg: Settings) -> dict:
    runners = {(name, t): make_runner(name, folder, t) for name, folder in models.items() for t in threads}
    for runner in runners.values():
        runner.speed(prompt, 2)  # warm-up
    runs = {key: [] for key in runners}
    native = {(name, t): [] for name in models if name.startswith("llama.cpp") for t in threads} if llama_bench else {}
    for r in range(rounds):
        for key, runner in runners.items():
            runs[key].append(runner.speed(prompt, cfg.new_tokens))
        for (name, t) in native:
            native[(name, t)].append(llama_bench_round(llama_bench, models[name] / GGUF_FILE, t, cfg))
        print(f"round {r + 1}/{rounds} done", flush=True)
    out = {}
    for (name, t), v in runs.items():
        entry = dataclasses.asdict(Decode.of(v, t, cfg.prompt_tokens, cfg.new_tokens))
        out.setdefault(name, {})[str(t)] = {k: entry[k] for k in ("prefill_tokens_per_s", "decode_tokens_per_s",
                                                                   "ttft_ms", "ms_per_token_p50", "ms_per_token_p90")}
    for (name, t), v in native.items():
        out.setdefault(f"{name} (llama-bench)", {})[str(t)] = {
            "prefill_tokens_per_s": spread([x["prefill"] for x in v]), "decode_tokens_per_s": spread([x["decode"] for x in v])}
    return out


def peak_rss(folder: Path, threads: int, cfg: Settings) -> int:
    """VmHWM of a fresh process that loads the model and generates the new tokens after the prompt."""
    code = ("from edgeft.generation.runners import OrtGenerator\n"
            "from edgeft.runtime.machine import peak_rss_bytes\n"
            "OrtGenerator(%r, %d).speed(list(range(1000, 1000 + %d)), %d)\nprint(peak_rss_bytes())"
            % (str(folder), threads, cfg.prompt_tokens, cfg.new_tokens))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return int(done.stdout.split()[-1])


def ratio(rows: dict, name: str, peer: str, threads: str, what: str) -> float | None:
    try:
        return rows[name]["speed"][threads][what]["median"] / rows[peer]["speed"][threads][what]["median"]
    except KeyError:
        return None


def verdict(rows: dict, threads: list[int]) -> dict:
    """The issue's bar at each thread count: int4 decode >= 1.3x and prefill >= 1.0x llama.cpp Q4_0 (both
    through the same Python loop and against llama-bench), exact match >= Q4_K_M's."""
    out = {}
    for t in map(str, threads):
        out[t] = {f"{what}_vs_{peer}": ratio(rows, SHIPPED, p, t, f"{what}_tokens_per_s")
                  for what in ("decode", "prefill") for peer, p in
                  (("q4_0_python", SPEED_BAR), ("q4_0_llama_bench", f"{SPEED_BAR} (llama-bench)"))}
    best = max((n for n in rows if n.startswith(QUALITY_BAR) and "exact_match" in rows[n]),
               key=lambda n: rows[n]["exact_match"])
    return {"speed": out, "best_q4_k_m": best,
            "exact_match_minus_best_q4_k_m_pts": 100 * (rows[SHIPPED]["exact_match"] - rows[best]["exact_match"]),
            "int4_vs_q4_k_m_paired": rows[SHIPPED]["vs_q4_k_m"]}


def measure(run: RunLayout, args, cfg: Settings) -> tuple[dict, dict, dict, dict, dict]:
    """Every model's quality on the same questions, then speed interleaved, then each one's peak RSS."""
    with tempfile.TemporaryDirectory(prefix="edgeft-vs-llamacpp-") as tmp:
        extra = {f"edgeft {n}": Path(d) for n, d in (e.split("=", 1) for e in args.edgeft)}
        models = {REFERENCE: run.export("genai"), SHIPPED: run.package, **extra, **gguf_models(run, Path(tmp))}
        timed = {k: v for k, v in models.items() if k != REFERENCE}
        timed[COPYING] = models[SHIPPED]
        for other in args.gguf_from:  # quality only: the same files' speed does not depend on the weights' values
            models.update(gguf_models(RunLayout(other), Path(tmp) / other.name, f" ({other.name})"))
        asked = questions(run, cfg)  # the same token ids for every model
        scores = quality(models, asked, cfg)
        speeds = speed(timed, asked[-1], args.threads, args.rounds, args.llama_bench, cfg)
        rss = {name: peak_rss(folder, max(args.threads), cfg) for name, folder in timed.items() if name != COPYING}
        sizes = {name: model_bytes(folder) / 2**20 for name, folder in {**models, **timed}.items()}
    return models, timed, scores, speeds, {"rss": rss, "sizes": sizes}


def rows_of(models: dict, timed: dict, scores: dict, speeds: dict, measured: dict) -> dict:
    rows = {}
    for name in [*models, *(k for k in speeds if k not in models)]:
        base = name.replace(" (llama-bench)", "")
        s = scores.get(base)
        rows[name] = {"size_mib": measured["sizes"][base], "speed": speeds.get(name, {}),
                      "peak_rss_mib": measured["rss"].get(name, 0) / 2**20}
        folder = {**models, **timed}.get(base)
        if folder is not None and (folder / ONNX_FILE).exists():  # the graph this CPU's prompts ran
            rows[name]["prompt_graph_file"] = choose_prompt_graph(folder).name
        if s and name == base:
            rows[name].update(exact_match=s["exact_match"], eval_seconds=s["eval_seconds"],
                              vs_fp32=paired_drop(scores[REFERENCE]["correct"], s["correct"]).to_dict())
    for name in [n for n in scores if n.startswith(QUALITY_BAR)]:  # every Q4_K_M, each with its own fine-tune
        rows[SHIPPED].setdefault("vs_q4_k_m", {})[name] = paired_drop(scores[name]["correct"],
                                                                      scores[SHIPPED]["correct"]).to_dict()
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.compare_llamacpp", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, default=ROOT / "runs/assistant-trec-smollm2")
    parser.add_argument("--gguf-from", type=Path, action="append", default=[],
                        help="also score llama.cpp's quants of this run's merged model (quality only)")
    parser.add_argument("--edgeft", action="append", default=[], metavar="NAME=DIR",
                        help="another edgeft model to score and time beside the shipped one")
    parser.add_argument("--llama-bench", type=Path, default=None, help="llama.cpp's llama-bench binary, if built")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=Settings.prompt_tokens,
                        help="the timed prompt's length, and llama-bench's depth (long conversations: 1024)")
    parser.add_argument("--new-tokens", type=int, default=Settings.new_tokens)
    parser.add_argument("--questions", type=int, default=None, help="only the first N held-out questions (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS / "compare_llamacpp.json")
    args = parser.parse_args(argv)
    cfg = Settings(prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, questions=args.questions)
    models, timed, scores, speeds, measured = measure(RunLayout(args.run), args, cfg)
    rows = rows_of(models, timed, scores, speeds, measured)
    result = {"run": str(args.run), "questions": len(scores[REFERENCE]["correct"]), "threads": args.threads,
              "rounds": args.rounds, "prompt_tokens": cfg.prompt_tokens, "new_tokens": cfg.new_tokens,
              "max_answer_tokens": cfg.max_answer, "models": rows, "verdict": verdict(rows, args.threads),
              "llama_cpp": {"llama_cpp_python": LLAMA_CPP_PYTHON, "cmake_args": cmake_args(cpu_flags()),
                            "llama_bench": str(args.llama_bench) if args.llama_bench else None}}
    print_table(result)
    return write_result(args.out, "compare_llamacpp", argv, result)


def print_table(result: dict) -> None:
    threads = [str(t) for t in result["threads"]]
    head = "| model | MiB | exact match | vs fp32 pts (95%) | " + " | ".join(
        f"prefill tok/s @{t} | decode tok/s @{t}" for t in threads) + " | peak RSS MiB |"
    print(head + "\n|" + " --- |" * (head.count("|") - 1))
    for name, r in result["models"].items():
        em = f"{r['exact_match']:.3f}" if "exact_match" in r else "-"
        d = r.get("vs_fp32")
        drop = f"{-d['points']:+.1f} ({-d['high']:+.1f}, {-d['low']:+.1f})" if d else "-"
        cells = []
        for t in threads:
            s = r["speed"].get(t)
            cells += [f"{s[k]['median']:.0f} ({s[k]['min']:.0f}-{s[k]['max']:.0f})" if s else "-"
                      for k in ("prefill_tokens_per_s", "decode_tokens_per_s")]
        rss = f"{r['peak_rss_mib']:.0f}" if r["peak_rss_mib"] else "-"
        print(f"| {name} | {r['size_mib']:.0f} | {em} | {drop} | " + " | ".join(cells) + f" | {rss} |")
    print(json.dumps(result["verdict"], indent=1))


if __name__ == "__main__":
    main()
