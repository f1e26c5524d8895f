"""`edgeft recipes`, `edgeft init` and `edgeft variants`: what a recipe can be, before any run.

Registered by `edgeft` (cli.py).
"""
from __future__ import annotations

from pathlib import Path

import click

from edgeft.runtime.errors import EdgeftError


@click.command()
def recipes():
    """List the built-in recipes (copy one out for editing with `edgeft init NAME`)."""
    from edgeft.core.recipe import builtin_recipes, load_recipe, recipe_summary

    for name, path in builtin_recipes().items():
        click.echo(f"{name:24} {load_recipe(path).task:15} {recipe_summary(path)}")


@click.command()
@click.option("--task", "tasks", multiple=True, help="only this task's kinds (repeatable)")
def variants(tasks):
    """List the quantization variant kinds a recipe's `quantize.variants` can use: per task, each kind's
    source and method, what it does, the module that builds it, and the fields it takes."""
    from edgeft.core.tasks import KNOWN, get_task
    from edgeft.core.variants import kinds_for

    for task in tasks or KNOWN:
        get_task(task).recipe_class  # its recipe registers its kinds
        click.echo(f"{task}:")
        for kind in kinds_for(task):
            fields = [f for f in kind.config.model_fields if f not in ("name", "source", "method")]
            label = f"{kind.source}:{'|'.join(kind.methods)}"
            click.echo(f"  {label:28} {kind.summary}\n  {'':28} built in {kind.module.replace('.', '/')}.py\n"
                       f"  {'':28} fields: {', '.join(fields) or '-'}")


@click.command()
@click.argument("name")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), default=None,
              help="file to write (default: ./NAME.yaml)")
@click.option("--force", is_flag=True, help="overwrite an existing file")
def init(name, out, force):
    """Copy the built-in recipe NAME into a file to edit, then run it with `edgeft run FILE`."""
    from edgeft.core.recipe import builtin_recipes

    recipes_by_name = builtin_recipes()
    if name not in recipes_by_name:
        raise EdgeftError(f"no built-in recipe named '{name}' (built-in: {', '.join(recipes_by_name)})")
    out = Path(out or f"{name}.yaml")
    if out.exists() and not force:
        raise EdgeftError(f"{out} exists: pass --force to overwrite it")
    out.write_text(recipes_by_name[name].read_text())
    click.echo(f"{out}: a copy of the built-in recipe {name}; run it with: edgeft run {out}")
