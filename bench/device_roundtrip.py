"""The device round trip: what installing and running the runtime alone costs and gives, against the
full toolchain, and host versus "device" numbers for the same bundles, in the same run.

    python -m bench.device_roundtrip [BUNDLE ...] [--rounds N] [--skip-install]
        (default: runs/sms-spam-minilm/package and runs/assistant-trec-smollm2/package, made by `edgeft run`)

1. Install: a fresh venv gets the bundle's edgeft-runtime wheel; another fresh venv gets the full
   toolchain (`pip install ./edgeft/runtime .` from this repository). Time of each pip install and
   the size each venv grows by. Both use this machine's pip cache and index the same way.
2. The "device": a real sshd on 127.0.0.1 (bench/sshd.py); `edgeft bench BUNDLE --on "ssh ..."
   --install` copies the bundle and installs the runtime wheel into a venv there (runtime only).
3. Rounds, interleaved over the bundles: each round is one `edgeft bench --on` call, which runs
   `edgeft-runtime bench` in the full toolchain's venv (host row: today's edgeft.runtime imported
   from the full install) and then behind ssh in the runtime-only venv (device row). Medians with
   min-max over rounds: cold start to first result and its peak RSS, latency or TTFT/decode speed,
   peak RSS, and the accuracy on the bundle's eval slice (identical by construction).
Writes bench/results/device_roundtrip.json.
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

from bench.common import RESULTS, ROOT, write_result
from bench.sshd import LocalSshd

DEFAULT_BUNDLES = [ROOT / "runs/sms-spam-minilm/package", ROOT / "runs/assistant-trec-smollm2/package"]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())


def timed_install(venv: Path, *requirements: str) -> dict:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    empty = folder_bytes(venv)
    start = time.perf_counter()
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *requirements], check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    listed = subprocess.run([str(venv / "bin/python"), "-m", "pip", "list", "--format=json"], capture_output=True,
                            text=True, check=True)
    names = sorted(p["name"].lower() for p in json.loads(listed.stdout))
    heavy = [n for n in ("torch", "transformers", "peft", "optimum", "bitsandbytes", "accelerate") if n in names]
    return {"seconds": seconds, "installed_bytes": folder_bytes(venv) - empty, "packages": len(names),
            "heavy_packages": heavy, "requirements": list(requirements)}


def install_costs(bundle: Path, tmp: Path) -> dict:
    wheel = next(bundle.glob("edgeft_runtime-*.whl"))
    return {"runtime_only": timed_install(tmp / "venv-runtime", str(wheel)),
            "full_toolchain": timed_install(tmp / "venv-full", "./edgeft/runtime", "."),
            "note": "pip cache warm and the same index for both; sizes are what each venv grew by"}


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def row_numbers(row: dict) -> dict:
    numbers = {"cold_start_s": row["cold_start"]["first_result_s"]["median"],
               "cold_start_peak_rss_mib": row["cold_start"]["peak_rss_bytes"] / 2**20,
               "peak_rss_mib": max(row["peak_rss_bytes"].values()) / 2**20}
    for d in row.get("decode", []):
        numbers.update(ttft_ms=d["ttft_ms"]["median"], prefill_tokens_per_s=d["prefill_tokens_per_s"]["median"],
                       decode_tokens_per_s=d["decode_tokens_per_s"]["median"], ms_per_token_p90=d["ms_per_token_p90"])
    for lat in row.get("latency", []):
        numbers.update(p50_ms=lat["p50_ms"], p90_ms=lat["p90_ms"], p99_ms=lat["p99_ms"])
    return numbers


def aggregate(rounds: list[dict]) -> dict:
    out = {}
    for where in ("host", "device"):
        rows = [r[where] for r in rounds]
        numbers = [row_numbers(r) for r in rows]
        out[where] = {"machine": rows[0]["machine"], "versions": rows[0]["versions"], "metrics": rows[0]["metrics"],
                      "metrics_identical_every_round": all(r["metrics"] == rows[0]["metrics"] for r in rows),
                      **{k: summary([n[k] for n in numbers]) for k in numbers[0]}}
    out["predictions_identical"] = all(r["host"]["predictions"] == r["device"]["predictions"] for r in rounds)
    return out


def rounds_behind_sshd(bundles: list[Path], rounds: int, tmp: Path) -> dict[str, list[dict]]:
    """Each round, one `edgeft bench BUNDLE --on "ssh ..." --install` per bundle: a host row and a device row."""
    results = {b.parent.name: [] for b in bundles}
    with LocalSshd(tmp / "sshd") as sshd:
        for round_ in range(rounds):
            for bundle in bundles:
                out = tmp / f"report-{round_}-{bundle.parent.name}"
                cmd = [sys.executable, "-m", "edgeft.cli", "bench", str(bundle), "--on", sshd.prefix(), "--install",
                       "--remote-dir", str(tmp / "device"), "-o", str(out), "--rounds", "1", "--cold-rounds", "1"]
                subprocess.run(cmd, check=True, capture_output=True)
                host, device = json.loads((out / "report.json").read_text())["variants"]
                results[bundle.parent.name].append({"host": host, "device": device})
                print(f"round {round_ + 1}: {bundle.parent.name} done", flush=True)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.device_roundtrip", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="*", type=Path, default=DEFAULT_BUNDLES)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-install", action="store_true",
                        help="leave out step 1, the install of both venvs (a minute and 2 GB)")
    parser.add_argument("--out", type=Path, default=RESULTS / "device_roundtrip.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgeft-roundtrip-") as tmp:
        tmp = Path(tmp)
        install = None if args.skip_install else install_costs(args.bundles[0], tmp)
        results = rounds_behind_sshd(args.bundles, args.rounds, tmp)
    report = {"rounds": args.rounds, "install": install,
              "device": "this machine behind a real sshd on 127.0.0.1, runtime-only venv made by --install",
              "bundles": {name: aggregate(rounds) for name, rounds in results.items()}}
    return write_result(args.out, "device_roundtrip", argv, report)


if __name__ == "__main__":
    main()
