"""`edgeft run`: the whole path from a recipe, stage after stage, into one run folder.

A stage whose output already matches its inputs and settings is skipped (unless --force), and an
interrupted tune continues from its last checkpoint.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from edgeft import EdgeftError
from edgeft.recipe import Recipe, dump_recipe


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_pipeline(recipe: Recipe, run_dir: Path, *, force: bool = False, progress: bool = True) -> dict:
    from edgeft.bench import bench
    from edgeft.data import prepare_data
    from edgeft.export import export
    from edgeft.merge import merge
    from edgeft.models import is_gguf, resolve_model
    from edgeft.quantize import quantize
    from edgeft.tune import tune

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(dump_recipe(recipe))
    timings = {}

    def stage(name: str, fn, *args, **kwargs):
        log(f"== {name}")
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds = time.perf_counter() - start
        timings[name] = round(seconds, 1)
        results = result if isinstance(result, list) else [result]
        skipped = bool(results) and all(isinstance(r, dict) and r.get("_up_to_date") for r in results)
        log(f"   {name}: {'up to date, skipped' if skipped else f'done in {seconds:.1f} s'}")
        return result

    stage("data", prepare_data, recipe, run_dir / "data", force=force)
    base_dir = None
    base = resolve_model(recipe.model.base)
    if is_gguf(base):
        from edgeft.importer import import_gguf
        stage("import", import_gguf, base, run_dir / "base", force=force)
        base_dir = run_dir / "base"
    stage("tune", tune, recipe, run_dir / "data", run_dir / "tune", base_dir=base_dir, resume=True, force=force,
          progress=progress)
    stage("merge", merge, recipe, run_dir / "tune", run_dir / "merge", force=force)
    bench_inputs = [run_dir / "merge"]
    for backend in recipe.export.backends:
        export_dir = run_dir / f"export-{backend}"
        stage(f"export {backend}", export, recipe, run_dir / "merge", export_dir, backend=backend, force=force)
        bench_inputs.append(export_dir)
        manifests = stage(f"quantize {backend}", quantize, recipe, export_dir, run_dir / "quantize", force=force)
        bench_inputs += [run_dir / "quantize" / m["variant"] for m in manifests]
    report = stage("bench", bench, recipe, bench_inputs, run_dir / "bench", force=force, progress=progress)
    shipped = recipe.package.variant or next((v.name for v in recipe.quantize.variants), None)
    if shipped:
        from edgeft.package import package
        variant_dir = next((p for p in bench_inputs if p.name == shipped or p.name == f"export-{shipped}"), None)
        if variant_dir is None:
            raise EdgeftError(f"package.variant: no variant named '{shipped}' in this run")
        stage("package", package, recipe, variant_dir, run_dir / "package", bench_dir=run_dir / "bench",
              zip_bundle=recipe.package.zip, force=force)
    (run_dir / "run.json").write_text(json.dumps({"recipe": recipe.name, "stage_seconds": timings}, indent=2) + "\n")
    return report
