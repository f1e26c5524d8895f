"""What every benchmark records beside its numbers, and where: the date, the git commit it was
measured at, the command, the machine (CPU and its instruction sets) and the library versions."""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent


def provenance(benchmark: str, argv: list[str] | None) -> dict:
    from edgeft.core.artifacts import library_versions, machine_info, source_commit

    command = shlex.join(["python", "-m", f"bench.{benchmark}", *(sys.argv[1:] if argv is None else argv)])
    return {"benchmark": benchmark, "date": time.strftime("%Y-%m-%d"), "commit": source_commit(), "command": command,
            "machine": machine_info(), "versions": library_versions()}


def write_result(path: Path, benchmark: str, argv: list[str] | None, result: dict) -> dict:
    """The result with its provenance, written as JSON; returned as written."""
    out = {**provenance(benchmark, argv), **result}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return out
