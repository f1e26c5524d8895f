"""How long `edgeft --help` takes, against a bare Python start: the CLI imports nothing heavy
(torch, transformers, onnxruntime) until a command needs it.

    python bench/cli_startup.py [ROUNDS]

Each round starts `python -c pass`, `edgeft --help` and `edgeft run --help` as fresh processes,
interleaved; medians with min-max. Writes bench/results/cli_startup.json.
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

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "edgeft --help": [sys.executable, "-m", "edgeft.cli", "--help"],
    "edgeft run --help": [sys.executable, "-m", "edgeft.cli", "run", "--help"],
}


def main() -> None:
    from edgeft.core.artifacts import library_versions, machine_info

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(rounds):
        for name, cmd in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            seconds[name].append(time.perf_counter() - start)
    results = {name: {"median_ms": 1000 * statistics.median(s), "min_ms": 1000 * min(s), "max_ms": 1000 * max(s)}
               for name, s in seconds.items()}
    for name, r in results.items():
        print(f"{name:20} {r['median_ms']:7.0f} ms ({r['min_ms']:.0f}-{r['max_ms']:.0f})")
    out = {"benchmark": "cli_startup", "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
           "rounds": rounds, "timed": "a fresh process from start to exit, interleaved", "results": results,
           "machine": machine_info(), "versions": library_versions()}
    path = ROOT / "bench" / "results" / "cli_startup.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
