"""`edgeft select`: which variant to ship for a budget, each variant with its reasons.

Registered by `edgeft` (cli.py); the logic is edgeft/benchkit/select.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from edgeft.runtime.errors import EdgeftError

LIMIT_FLAGS = ("max_quality_drop", "max_size_mib", "max_peak_rss_mib", "max_p90_ms", "max_ttft_ms",
               "min_decode_tokens_per_s", "threads")


def find_report(path: Path) -> tuple[Path, Path | None]:
    """report.json from a run folder, a bench folder or the file itself; and the run's recipe, if any."""
    from edgeft.runtime.files import REPORT_JSON, RunLayout

    path = Path(path)
    for candidate in (path, path / REPORT_JSON, RunLayout(path).report):
        if candidate.is_file():
            recipe = RunLayout.of(candidate.parent).recipe  # the run's, when the report is its bench's
            return candidate, (recipe if recipe.exists() else None)
    raise EdgeftError(f"select: no {REPORT_JSON} in {path} (give a run folder, its bench folder or a report.json)")


def limit_options(fn):
    for flag in reversed(LIMIT_FLAGS):
        kind = int if flag == "threads" else float
        fn = click.option(f"--{flag.replace('_', '-')}", flag, type=kind, default=None,
                          help=f"overrides select.{flag}")(fn)
    return fn


@click.command()
@click.argument("run_or_report", type=click.Path(path_type=Path))
@click.option("-r", "--recipe", "recipe_ref", default=None,
              help="recipe whose select section is the budget (default: the run's recipe.yaml)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a recipe field (repeatable)")
@limit_options
@click.option("--objective", type=click.Choice(["fastest", "smallest", "most_accurate"]), default=None)
@click.option("--device", "device_dirs", multiple=True, type=click.Path(path_type=Path),
              help="an `edgeft bench BUNDLE --on ...` folder: its device's speed and memory replace the host's for "
                   "the variant it measured (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the selection as JSON")
def select(run_or_report, recipe_ref, overrides, objective, device_dirs, as_json, **limits):
    """Judge every variant of a bench report against a budget and name the one to ship.

    The budget is the recipe's `select` section, with any flag given here on top, e.g.
    `edgeft select runs/NAME --max-quality-drop 1 --max-size-mib 60`. Quality is judged paired
    against the fine-tuned fp32 model: a variant fits only when the worse end of the drop's 95%
    interval is inside the budget. Exits 2, naming the nearest variant, when nothing fits.
    """
    from edgeft.benchkit.select import describe, select_variant
    from edgeft.core.recipe import load_recipe
    from edgeft.runtime.files import REPORT_JSON

    report_path, run_recipe = find_report(run_or_report)
    sets = [*overrides, *(f"select.{k}={v}" for k, v in limits.items() if v is not None)]
    sets += [f"select.objective={objective}"] if objective else []
    recipe = load_recipe(recipe_ref or run_recipe, sets)
    devices = [json.loads((Path(d) / REPORT_JSON).read_text()) for d in device_dirs]
    selection = select_variant(json.loads(report_path.read_text()), recipe.select, devices)
    click.echo(json.dumps(selection, indent=1) if as_json else "\n".join(describe(selection)))
