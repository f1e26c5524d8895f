"""`edgeft run`: the whole path from a recipe, stage after stage, into one run folder.

A stage whose output already matches its inputs and settings is skipped (unless --force), and an
interrupted tune continues from its last checkpoint. One run at a time holds the folder's lock.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from edgeft import EdgeftError
from edgeft.benchkit.report import read_report, write_reports
from edgeft.benchkit.select import describe, select_variant
from edgeft.core.artifacts import rehash, variant_name
from edgeft.core.console import say
from edgeft.core.lock import run_lock
from edgeft.core.models import is_gguf, resolve_model
from edgeft.core.recipe import Recipe, dump_recipe
from edgeft.core.tasks import get_task
from edgeft.core.tracking import NoTracking, tracker
from edgeft.runtime.files import RunLayout
from edgeft.stages.bench import bench
from edgeft.stages.data import prepare_data
from edgeft.stages.export import export
from edgeft.stages.importer import import_gguf
from edgeft.stages.merge import merge
from edgeft.stages.package import package
from edgeft.stages.quantize import quantize
from edgeft.stages.tune import tune


class Stages:
    """Runs stages one after another, saying what each did and timing it. `seconds` is how long each
    stage took to build its output: for a stage skipped as up to date, what an earlier run recorded."""

    def __init__(self, tracker=None, earlier: dict | None = None):
        self.seconds: dict[str, float | None] = {}
        self.skipped: list[str] = []
        self.tracker = tracker or NoTracking()
        self.earlier = earlier or {}
        self.current: str | None = None

    def __call__(self, name: str, fn, *args, **kwargs):
        say(f"== {name}")
        self.current, start = name, time.perf_counter()
        result = fn(*args, **kwargs)
        seconds = time.perf_counter() - start
        self.seconds[name] = round(seconds, 1)
        results = result if isinstance(result, list) else [result]
        skipped = bool(results) and all(r.reused for r in results)
        if skipped:
            self.skipped.append(name)
            self.seconds[name] = self.earlier.get(name)
            say(f"   {name}: up to date, skipped")
        else:
            say(f"   {name}: done in {seconds:.1f} s")
        self.tracker.stage(name, result, seconds, skipped)
        return result


def run_pipeline(recipe: Recipe, run_dir: Path, *, force: bool = False, progress: bool = True,
                 track: str | None = None) -> dict:
    run = RunLayout(run_dir)
    with run_lock(run.root):
        run.recipe.write_text(dump_recipe(recipe))
        stage = Stages(tracker(recipe, run.root, track), earlier_seconds(run))
        failed = None
        try:
            return run_stages(recipe, run, stage, force, progress)
        except BaseException:
            failed = stage.current
            raise
        finally:
            stage.tracker.close(ok=failed is None)
            run.summary.write_text(json.dumps({"recipe": recipe.name, "stage_seconds": stage.seconds,
                                               "skipped": stage.skipped, "failed": failed}, indent=2) + "\n")


def earlier_seconds(run: RunLayout) -> dict:
    """The stage seconds an earlier run of this folder recorded (a stage it skipped stays unknown)."""
    try:
        return {k: v for k, v in json.loads(run.summary.read_text())["stage_seconds"].items() if v is not None}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}


def run_stages(recipe: Recipe, run: RunLayout, stage: Stages, force: bool, progress: bool) -> dict:
    base = resolve_model(recipe.model.base)
    get_task(recipe.task).check_base(recipe, base)  # before any work
    stage("data", prepare_data, recipe, run.data, force=force)
    base_dir = None
    if is_gguf(base):
        stage("import", import_gguf, base, run.base, force=force)
        base_dir = run.base
    stage("tune", tune, recipe, run.data, run.tune, base_dir=base_dir, resume=True, force=force, progress=progress)
    stage("merge", merge, recipe, run.tune, run.merge, force=force)
    models = {"merge": run.merge}
    for backend in recipe.export.backends:
        models[backend] = run.export(backend)
        exported = stage(f"export {backend}", export, recipe, run.merge, models[backend], backend=backend, force=force)
        models[variant_name(exported)] = models[backend]  # the name reports give it (onnx-fp32, genai-fp32)
        manifests = stage(f"quantize {backend}", quantize, recipe, models[backend], run.quantized, force=force)
        models.update({m.variant: run.variant(m.variant) for m in manifests})
    stage("bench", bench, recipe, list(dict.fromkeys(models.values())), run.bench, force=force, progress=progress)
    report = read_report(run.bench)
    shipped, selection = choose_variant(recipe, report, run.bench)
    if shipped:  # the recipe's checks made sure it names a variant or an export backend
        stage("package", package, recipe, models[shipped], run.package, bench_dir=run.bench,
              zip_bundle=recipe.package.zip, force=force, selection=selection)
    return report


def choose_variant(recipe: Recipe, report: dict, bench_dir: Path) -> tuple[str | None, dict | None]:
    """The variant to package: the one `select` picks for the recipe's budget (package.variant auto, or
    any select limit set), else package.variant, else the first quantized variant. The selection
    (or why nothing fits) goes into the bench folder's report.json and report.html."""
    variant = recipe.package.variant
    if variant != "auto" and not (variant is None and recipe.select.active()):
        return variant or next((v.name for v in recipe.quantize.variants), None), None
    try:
        selection = select_variant(report, recipe.select)
    except EdgeftError as e:
        record_selection(report, {"error": str(e)}, bench_dir)
        raise
    for line in describe(selection):
        say(f"select: {line}")
    record_selection(report, selection, bench_dir)
    return selection["chosen"], selection


def record_selection(report: dict, selection: dict, bench_dir: Path) -> None:
    report = {**report, "selection": selection}
    write_reports(report, bench_dir, get_task(report["task"]).report_view(report))
    rehash(bench_dir)
