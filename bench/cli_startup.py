"""How long `edgeft --help` takes, against a bare Python start: the CLI imports nothing heavy
(torch, transformers, onnxruntime) until a command needs it.

    python -m bench.cli_startup [--rounds 15]

Each round starts `python -c pass`, `edgeft --help` and `edgeft run --help` as fresh processes,
interleaved; medians with min-max. Writes bench/results/cli_startup.json.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import RESULTS, write_result

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "edgeft --help": [sys.executable, "-m", "edgeft.cli", "--help"],
    "edgeft run --help": [sys.executable, "-m", "edgeft.cli", "run", "--help"],
}


def measure(rounds: int) -> dict:
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(rounds):
        for name, cmd in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            seconds[name].append(time.perf_counter() - start)
    return {name: {"median_ms": 1000 * statistics.median(s), "min_ms": 1000 * min(s), "max_ms": 1000 * max(s)}
            for name, s in seconds.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS / "cli_startup.json")
    args = parser.parse_args(argv)
    results = measure(args.rounds)
    for name, r in results.items():
        print(f"{name:20} {r['median_ms']:7.0f} ms ({r['min_ms']:.0f}-{r['max_ms']:.0f})")
    return write_result(args.out, "cli_startup", argv, {"rounds": args.rounds, "results": results,
                                                        "timed": "a fresh process from start to exit, interleaved"})


if __name__ == "__main__":
    main()
