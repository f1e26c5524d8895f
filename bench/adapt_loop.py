"""A new skill on a base that already ships: `edgeft adapt` against the full recipe run that built it.

    python -m bench.adapt_loop RUN --data sms-spam -r assistant-spam-smollm2 [--set tune.lora.r=8 ...]

Runs `edgeft adapt RUN --data DATA -o OUT` as a fresh process, timed from start to exit, and reads what
it wrote: the adapter file's bytes, its exact match on the held-out split with the adapter, with the
bare base and with the same adapter at fp32 (each paired on the same examples), and the seconds of each
step; beside it, the seconds the base run's stages took (its run.json). Then the decode speed the new
skill costs: the unmerged base with the new adapter against the run's merged int4 variant, at batch 1,
the same real-text prompt, interleaved round by round (medians with min-max). Writes
bench/results/adapt_loop.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, ROOT, write_result
from edgeft.core.artifacts import read_manifest
from edgeft.core.splits import load_split
from edgeft.generation.chat import speed_prompt
from edgeft.generation.models import load_tokenizer
from edgeft.runtime.files import RunLayout
from edgeft.runtime.report import Decode
from edgeft.stages.adapt import unmerged_variant


def adapt(args, out: Path) -> float:
    cmd = [sys.executable, "-m", "edgeft.cli", "adapt", str(args.run), "--data", args.data, "-o", str(out),
           "--name", args.name, *(["-r", args.recipe] if args.recipe else []),
           *[x for s in args.set for x in ("--set", s)]]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"edgeft adapt failed:\n{done.stdout}{done.stderr}")
    print(done.stdout.strip(), flush=True)
    return time.perf_counter() - start


def decode_speeds(models: dict[str, tuple], prompt: list[int], args) -> dict:
    """{name: (generator, adapter or None)}: decode speed at batch 1, interleaved round by round."""
    runs: dict[str, list] = {name: [] for name in models}
    for rounds in (1, args.rounds):  # the first is a warm-up
        for _ in range(rounds):
            for name, (generator, adapter) in models.items():
                times: list[float] = []
                for _token in generator.generate_ids(prompt, args.new_tokens, stop=False, timings=times, adapter=adapter):
                    pass
                runs[name].append({"ttft": times[0], "steps": times[1:]})
        if rounds == 1:
            runs = {name: [] for name in models}
    return {name: dataclasses.asdict(Decode.of(r, args.threads, len(prompt), args.new_tokens)) for name, r in runs.items()}


def speed_models(run: RunLayout, args, bundle: Path) -> dict[str, tuple]:
    from edgeft.runtime import Generator

    merged = Generator(run.root / args.merged, args.threads, verify=False)
    base = Generator(unmerged_variant(run.root), args.threads, verify=False)
    return {f"{args.merged} (merged)": (merged, None), f"unmerged base + {args.name}": (base, base.add_adapter(bundle))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.adapt_loop", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, default=ROOT / "runs/assistant-trec-smollm2",
                        help="the base's run folder, with an unmerged int4 variant and a bench")
    parser.add_argument("--data", default="sms-spam", help="the new skill's data (data.source)")
    parser.add_argument("-r", "--recipe", default=None, help="the new skill's recipe (default: the base run's)")
    parser.add_argument("--set", action="append", default=[], help="recipe overrides for the adapter, as edgeft's")
    parser.add_argument("--name", default="spam", help="the adapter's name")
    parser.add_argument("--merged", default="quantize/int4", help="the base run's merged model to time against")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--keep", type=Path, default=None, help="write the adapt output here (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=RESULTS / "adapt_loop.json")
    args = parser.parse_args(argv)
    run = RunLayout(args.run)
    base_seconds = json.loads(run.summary.read_text())["stage_seconds"] if run.summary.exists() else None
    known = base_seconds and None not in base_seconds.values()  # a stage skipped with no earlier record: unknown
    total = round(sum(base_seconds.values()), 1) if known else None
    tokenizer = load_tokenizer(run.merge)
    prompt = speed_prompt(tokenizer, load_split(run.data, "test"), args.prompt_tokens, "--prompt-tokens")
    with tempfile.TemporaryDirectory(prefix="edgeft-adapt-") as tmp:
        out = args.keep or Path(tmp) / args.name
        wall = adapt(args, out)
        manifest = read_manifest(RunLayout(out).adapter, stage="adapter")
        speeds = decode_speeds(speed_models(run, args, RunLayout(out).adapter), prompt, args)
    merged, unmerged = (s["decode_tokens_per_s"]["median"] for s in speeds.values())
    result = {"run": str(args.run), "adapt": {"wall_seconds": round(wall, 1), **manifest.metrics},
              "base_run_seconds": base_seconds, "base_run_total_seconds": total,
              "threads": args.threads, "rounds": args.rounds, "speed": speeds, "unmerged_over_merged": unmerged / merged}
    print(f"adapt {wall:.0f} s against the base run's {result['base_run_total_seconds'] or '?'} s; adapter "
          f"{manifest.metrics['adapter_bytes'] / 2**20:.2f} MiB; unmerged decode {unmerged / merged:.2f}x the merged")
    return write_result(args.out, "adapt_loop", argv, result)


if __name__ == "__main__":
    main()
