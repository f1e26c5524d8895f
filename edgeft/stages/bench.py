"""Bench stage: quality and speed of every model of a run, on the same inputs, in one run.

The skeleton is the same for every task: find the models, let the task plan the workers and
requests (classification/bench_plan.py, generation/bench_plan.py), run the plan through benchkit (one
process per model and thread count, interleaved rounds, medians with min-max), and write the
report as JSON, CSV, Markdown and a plot. A model whose worker dies is reported as failed; the
others' results are kept, and the stage then fails naming it.
"""
from __future__ import annotations

import sys
from pathlib import Path

from edgeft import EdgeftError
from edgeft.benchkit.plan import run_plan, steps
from edgeft.benchkit.report import read_report, write_reports
from edgeft.core.artifacts import (
    Manifest,
    find_in_lineage,
    input_ref,
    is_up_to_date,
    library_versions,
    machine_info,
    read_manifest,
    stage_output,
    up_to_date,
    variant_name,
    write_manifest,
)
from edgeft.core.console import progress as console_progress
from edgeft.core.console import say
from edgeft.core.recipe import Recipe
from edgeft.core.tasks import get_task
from edgeft.runtime.files import MANIFEST, REPORT_JSON

ORDER = {"merge": 0, "export": 1, "quantize": 2}


def discover(folders: list[Path]) -> list[tuple[str, Path, dict]]:
    """Artifact folders to bench; a run folder stands for every artifact in it."""
    found = []
    for folder in map(Path, folders):
        if (folder / MANIFEST).exists():
            candidates = [folder]
        elif folder.is_dir():
            candidates = sorted(p.parent for p in folder.rglob(MANIFEST))
        else:
            raise EdgeftError(f"bench: folder not found: {folder}")
        for path in candidates:
            manifest = read_manifest(path, what="variant")
            if manifest.stage in ORDER:
                found.append((variant_name(manifest), path, manifest))
    if not found:
        raise EdgeftError(f"bench: no merged, exported or quantized model in {', '.join(map(str, folders))}")
    found.sort(key=lambda item: (ORDER[item[2].stage], item[0]))
    names = [n for n, _, _ in found]
    if len(set(names)) != len(names):
        raise EdgeftError(f"bench: two variants share a name: {names}")
    return found


def completed_before(out: Path, inputs: list, config: dict) -> bool:
    """Whether `out` holds an earlier bench of exactly these models and settings that completed."""
    return is_up_to_date(out, inputs, config) and not read_report(out).get("failed")


def bench(recipe: Recipe, folders: list[Path], out: Path, *, force: bool = True, progress: bool = True) -> Manifest:
    """Measure the models in `folders`; the report is in `out` (benchkit.report.read_report)."""
    cfg = recipe.bench
    variants = [v for v in discover(folders) if cfg.include_pytorch or v[2].stage != "merge"]
    task = get_task(variants[0][2].task)
    inputs = [input_ref(name, path, manifest) for name, path, manifest in variants]
    config = cfg.model_dump(mode="json")
    if not force and completed_before(out, inputs, config):
        return up_to_date(out)
    plan = task.bench_plan(recipe, variants, find_in_lineage(variants[0][2], "data"))
    say(f"bench: {plan.summary}")
    bar = console_progress(steps(plan, cfg.rounds), "bench", "run", progress)
    results = run_plan(plan, cfg.rounds, bar)
    bar.close()
    report = {"task": task.name, "recipe": recipe.name, "threads": cfg.threads, **plan.build(results),
              "failed": results.failed, "machine": machine_info(), "versions": library_versions(),
              "command": " ".join(sys.argv)}
    with stage_output(out) as tmp:
        write_reports(report, tmp, task.report_view(report))
        manifest = write_manifest(tmp, stage="bench", task=task.name, inputs=inputs, config=config,
                                  metrics={v["name"]: v.get("metrics", {"error": v.get("error")}) for v in report["variants"]})
    if results.failed:
        raise EdgeftError("bench: " + "; ".join(f"the worker for {name} {why}" for name, why in results.failed.items())
                          + f". The other models' results are in {Path(out) / REPORT_JSON}")
    return manifest


def report_view(report: dict) -> tuple[dict, dict | None]:
    """The table and plot spec of any bench report: a run's (by its task) or a device bench's."""
    if "bundle" in report:
        from edgeft.stages.device import device_view
        return device_view(report)
    return get_task(report["task"]).report_view(report)
