"""The edgeft command line: a thin layer over the stage functions.

Heavy libraries (torch, transformers, onnxruntime) are imported inside the commands, so that
`edgeft --help` answers at once. Errors in the input exit 2 with a message naming the field or
file; a bug in edgeft itself exits 1 with "internal error" and its traceback in a log file.
"""
from __future__ import annotations

import contextlib
import traceback
from pathlib import Path

import click

from edgeft import EdgeftError, __version__, cli_device, cli_recipes, cli_select, cli_setup

RECIPE_HELP = "recipe YAML file or the name of a built-in recipe (default: sms-spam-minilm)"


def recipe_options(fn):
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="override a recipe field, e.g. --set tune.epochs=1 (repeatable)")(fn)
    return click.option("-r", "--recipe", "recipe_ref", default=None, metavar="RECIPE", help=RECIPE_HELP)(fn)


def output_option(fn):
    return click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
                        help="folder to write (replaced atomically when the stage succeeds)")(fn)


def load(recipe_ref, overrides):
    from edgeft.core.recipe import load_recipe
    return load_recipe(recipe_ref, overrides)


def quiet(folder: Path):
    """Third-party output of a command to <folder>/edgeft.log (all of it with -v on the terminal)."""
    from edgeft.core import console
    from edgeft.runtime.files import RUN_LOG

    ctx = click.get_current_context()
    ctx.meta["log_dir"] = Path(folder)
    return console.quiet(Path(folder) / RUN_LOG, verbose=ctx.find_root().params.get("verbose", False))


def stage_command(out: Path):
    """The context a stage command runs in: quiet, logging next to its output."""
    return quiet(Path(out).resolve().parent)


def internal_error(ctx, error: Exception) -> None:
    from edgeft.runtime.files import ERROR_LOG

    folder = ctx.meta.get("log_dir") or Path.cwd()
    path = Path(folder) / ERROR_LOG
    with contextlib.suppress(OSError):
        Path(folder).mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(error)))
    click.echo(f"internal error: {type(error).__name__}: {error}\n(a bug in edgeft, not in your input; the "
               f"traceback is in {path})", err=True)
    ctx.exit(1)


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.message}", err=True)


class Group(click.Group):
    """Turns edgeft's own errors into a message and exit code 2, and Ctrl-C into a hint."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeftError as e:
            raise UserError(str(e)) from None
        except KeyboardInterrupt:
            click.echo("\ninterrupted: finished stages are kept; an interrupted tune resumes with --resume "
                       "(edgeft run resumes it by itself)", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as e:  # anything else is a bug in edgeft: say so, keep the traceback
            internal_error(ctx, e)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgeft")
@click.option("-v", "--verbose", is_flag=True, help="show third-party logging and warnings (otherwise in edgeft.log)")
def cli(verbose):
    """edgeft: take a compact transformer to an edge device.

    Fine-tune with LoRA/QLoRA, merge the adapter, export to ONNX, quantize, and measure accuracy
    and CPU latency of every variant, from one recipe. `edgeft run` does the whole path; each
    stage is also a command that reads artifact folders and writes one, with a manifest.json
    recording what it came from (sha256), the versions used and the metrics measured.
    """


@cli.command()
@click.argument("recipe_ref", required=False, metavar="[RECIPE]")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), default=None,
              help="run folder (default: runs/<recipe name>)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a recipe field (repeatable)")
@click.option("--force", is_flag=True, help="rerun stages even when their output is up to date")
@click.option("--track", type=click.Choice(["mlflow"]), default=None,
              help="log every stage's settings, metrics and reports to MLflow (pip install 'edgeft[track]'; "
                   "store: mlruns/ in the run folder, or the recipe's tracking.uri)")
def run(recipe_ref, out, overrides, force, track):
    """Run the whole pipeline from RECIPE (default: the built-in sms-spam-minilm).

    data -> [import] -> tune -> merge -> export -> quantize -> bench, into one run folder.
    Stages whose output matches their inputs are skipped; an interrupted tune resumes.
    """
    from edgeft.runtime.files import REPORT_PLOT, RunLayout

    recipe = load(recipe_ref, overrides)
    run = RunLayout(out or Path("runs") / recipe.name)
    with quiet(run.root):
        from edgeft.pipeline import run_pipeline
        report = run_pipeline(recipe, run.root, force=force, track=track)
    click.echo(render(report, run.bench, "table"))
    click.echo(f"\nreports: {run.report} (and .csv, .md, .html, {REPORT_PLOT}); bundle: {run.package}; log: {run.log}")


@cli.command()
@recipe_options
@output_option
def data(recipe_ref, overrides, out):
    """Read the recipe's dataset, deduplicate it, split it train/validation/test (stratified, seeded)."""
    recipe = load(recipe_ref, overrides)
    with stage_command(out):
        from edgeft.stages.data import prepare_data
        manifest = prepare_data(recipe, out)
    m = manifest.metrics
    click.echo(f"{out}: train {m['train_examples']}, validation {m['validation_examples']}, test {m['test_examples']} "
               f"({m['duplicates_removed']} duplicates removed)")


@cli.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@recipe_options
@output_option
@click.option("--base", "base_dir", type=click.Path(path_type=Path), default=None,
              help="base model folder (default: the recipe's model.base)")
@click.option("--resume", is_flag=True, help="continue an interrupted tune from its last checkpoint")
def tune(data_dir, recipe_ref, overrides, out, base_dir, resume):
    """Fine-tune with LoRA or QLoRA on DATA_DIR (written by `edgeft data`); keeps the best adapter.

    Runs on CPU or CUDA; under `accelerate launch` it trains data-parallel on several GPUs.
    """
    recipe = load(recipe_ref, overrides)
    with stage_command(out):
        from edgeft.stages.tune import tune as run_tune
        manifest = run_tune(recipe, data_dir, out, base_dir=base_dir, resume=resume)
    if manifest:
        best = manifest.metrics["best_validation"]
        click.echo(f"{out}: best validation " + ", ".join(f"{k} {v:.4f}" for k, v in best.items()
                                                          if isinstance(v, float)))


@cli.command()
@click.argument("tune_dir", type=click.Path(path_type=Path))
@recipe_options
@output_option
def merge(tune_dir, recipe_ref, overrides, out):
    """Merge the adapter in TUNE_DIR into an fp32 copy of its base model, behind a parity gate."""
    recipe = load(recipe_ref, overrides)
    with stage_command(out):
        from edgeft.stages.merge import merge as run_merge
        manifest = run_merge(recipe, tune_dir, out)
    for name, check in manifest.metrics.items():
        if "agreement" in check:
            click.echo(f"{name}: agreement {check['agreement']:.2%}, max |logit diff| {check['max_abs_logit_diff']:.3g}")


@cli.command()
@click.argument("merge_dir", type=click.Path(path_type=Path))
@recipe_options
@output_option
@click.option("--backend", type=click.Choice(["optimum", "genai", "gguf"]), default="optimum", show_default=True,
              help="optimum-onnx exporter, onnxruntime-genai's model builder (decoders), or llama.cpp's GGUF "
                   "converter (decoders; needs `edgeft llamacpp-setup`)")
def export(merge_dir, recipe_ref, overrides, out, backend):
    """Export the merged model in MERGE_DIR (ONNX or GGUF) and check it against PyTorch."""
    recipe = load(recipe_ref, overrides)
    with stage_command(out):
        from edgeft.stages.export import export as run_export
        manifest = run_export(recipe, merge_dir, out, backend=backend)
    parity = manifest.metrics["parity"]
    click.echo(f"{out}: parity max |{manifest.format.upper()} - PyTorch| {parity['max_abs_logit_diff']:.2e}")


@cli.command()
@click.argument("export_dir", type=click.Path(path_type=Path))
@recipe_options
@output_option
@click.option("--variant", "variants", multiple=True, help="only this recipe variant (repeatable)")
def quantize(export_dir, recipe_ref, overrides, out, variants):
    """Quantize the fp32 ONNX model in EXPORT_DIR: one folder per recipe variant under OUT."""
    recipe = load(recipe_ref, overrides)
    with stage_command(out):
        from edgeft.stages.quantize import quantize as run_quantize
        manifests = run_quantize(recipe, export_dir, out, only=list(variants) or None)
    for manifest in manifests:
        drift = manifest.metrics["vs_fp32"]
        click.echo(f"{out / manifest.variant}: agrees with fp32 on {drift['agreement']:.1%} of "
                   f"{drift['compared']} validation inputs")


@cli.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=Path))
@recipe_options
@output_option
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "md"]), default="table",
              show_default=True, help="what to print (all are written to OUT)")
@click.option("--on", "on", metavar="PREFIX", default=None,
              help="measure the bundle FOLDERS names on a device: a command prefix that gives a shell there, e.g. "
                   "\"ssh pi@10.0.0.5\", \"ssh -p 2222 -i key root@host\", \"adb shell\", \"docker exec -i NAME\"")
@click.option("--install", is_flag=True, help="with --on: install the bundle's runtime wheel into a venv on the device")
@click.option("--remote-dir", default="~/edgeft", show_default=True, help="with --on: the folder used on the device")
@click.option("--python", "python", default="python3", show_default=True, help="with --on: the device's Python")
@click.option("--pip-args", default="", help="with --install: extra pip arguments on the device, e.g. "
              "\"--no-index --find-links /wheels\" for an offline device")
@click.option("--threads", type=int, default=None, help="with --on: CPU threads (default: all of each machine's)")
@click.option("--rounds", type=int, default=3, show_default=True, help="with --on: timed rounds")
@click.option("--cold-rounds", type=int, default=3, show_default=True, help="with --on: cold starts timed")
@click.option("--host/--no-host", "compare_host", default=True, show_default=True,
              help="with --on: measure the bundle here too, the same way, as rows beside the device's")
def bench(folders, recipe_ref, overrides, out, fmt, on, **device):
    """Measure accuracy, latency, throughput, size and peak RSS of every model in FOLDERS.

    FOLDERS are merged/exported/quantized artifacts, or a run folder (every artifact in it).
    With --on, FOLDERS is one packaged bundle: it is copied to the device (skipped when the device
    already holds it), measured there with edgeft-runtime on its eval slice, and reported beside
    the same measurement taken here.
    """
    if on is not None:
        return bench_device(folders, on, out, fmt, device)
    recipe = load(recipe_ref, overrides)
    with stage_command(out):
        from edgeft.benchkit.report import read_report
        from edgeft.stages.bench import bench as run_bench
        run_bench(recipe, list(folders), out)
    click.echo(render(read_report(out), out, fmt))


def bench_device(folders, on: str, out: Path, fmt: str, options: dict) -> None:
    if len(folders) != 1:
        raise EdgeftError(f"bench --on measures one bundle; got {len(folders)} folders")
    for flag in ("threads", "rounds", "cold_rounds"):
        if options[flag] is not None and options[flag] < 1:
            raise EdgeftError(f"--{flag.replace('_', '-')} must be at least 1")
    with stage_command(out):
        from edgeft.stages.device import bench_on_device
        report = bench_on_device(folders[0], on, out, **options)
    click.echo(render(report, out, fmt))


def render(report: dict, folder: Path, fmt: str) -> str:
    from edgeft.benchkit.report import table

    if fmt == "table":
        from edgeft.stages.bench import report_view
        return table(report_view(report)[0])
    from edgeft.runtime.files import REPORT_CSV, REPORT_JSON, REPORT_MD

    return (Path(folder) / {"json": REPORT_JSON, "csv": REPORT_CSV, "md": REPORT_MD}[fmt]).read_text()


@cli.command()
@click.argument("bench_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "md"]), default="table", show_default=True)
def report(bench_dir, fmt):
    """Print the report of a finished bench (BENCH_DIR) as a table, JSON, CSV or Markdown."""
    import json

    from edgeft.runtime.manifest import read_manifest

    read_manifest(bench_dir, stage="bench", what="bench folder")
    from edgeft.runtime.files import REPORT_JSON

    click.echo(render(json.loads((Path(bench_dir) / REPORT_JSON).read_text()), bench_dir, fmt))


@cli.command()
@click.argument("base", type=click.Path(path_type=Path))
@click.option("--data", "data_file", required=True, type=click.Path(path_type=Path),
              help="the user's (or skill's) examples: a .csv or .jsonl file, as data.source takes it")
@recipe_options
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="folder to write: data/, tune/ and adapter/, the adapter bundle")
@click.option("--name", default=None, help="the adapter's name: the model a request names (default: OUT's name)")
def adapt(base, data_file, recipe_ref, overrides, out, name):
    """Train an adapter for BASE, a run's unmerged int4 variant (or its run folder), on new data.

    Nothing is exported or quantized again: the adapter trains against the base as that variant
    rounds it and becomes an adapter bundle bound to the base's sha256, with its exact match on the
    held-out split beside the bare base's. The recipe is the base run's unless -r names another;
    `--set` overrides its fields (data.system_prompt, tune.lora.r, ...). Serve it with
    `edgeft-runtime serve BASE_BUNDLE --adapter OUT/adapter`.
    """
    from edgeft.runtime.files import RunLayout
    from edgeft.stages.adapt import unmerged_variant

    recipe = load(recipe_ref or RunLayout.of(unmerged_variant(base)).recipe,
                  (*overrides, f"data.source={data_file}", f"name={name or Path(out).resolve().name}"))
    with quiet(out):
        from edgeft.stages.adapt import adapt as run_adapt
        manifest = run_adapt(recipe, base, out)
    m = manifest.metrics
    click.echo(f"{Path(out) / 'adapter'}: adapter '{manifest.adapter_name}' for {manifest.base_variant}, "
               f"{m['adapter_bytes'] / 2**20:.1f} MiB; exact match {m['exact_match']:.3f} against the bare base's "
               f"{m['base_exact_match']:.3f} (fp32 adapter: {m['fp32_exact_match']:.3f}) on {m['examples']} held-out "
               f"examples; {sum(m['seconds'].values()):.0f} s")


@cli.command(name="import")
@click.argument("gguf", type=click.Path(path_type=Path))
@output_option
def import_cmd(gguf, out):
    """Turn a GGUF file (or a model alias such as smollm2) into a Hugging Face folder (fp32 safetensors,
    tokenizer, chat template) with a manifest."""
    from edgeft.core.models import resolve_model

    path = resolve_model(str(gguf), field="GGUF") if not Path(gguf).exists() else Path(gguf)
    with stage_command(out):
        from edgeft.stages.importer import import_gguf
        manifest = import_gguf(path, out)
    click.echo(f"{out}: {manifest.architecture}, {manifest.metrics['parameters'] / 1e6:.1f}M parameters")


@cli.command(name="package")
@click.argument("variant_dir", type=click.Path(path_type=Path))
@recipe_options
@output_option
@click.option("--bench", "bench_dir", type=click.Path(path_type=Path), default=None,
              help="bench folder whose measurements go into the bundle (default: the run's bench/)")
@click.option("--zip", "zip_bundle", is_flag=True, help="also write OUT.zip")
@click.option("--with-runtime/--without-runtime", default=None,
              help="put the edgeft-runtime wheel in the bundle, so that a device installs it offline with "
                   "`pip install BUNDLE/*.whl` (default: the recipe's package.with_runtime, true)")
@click.option("--adapter-only", is_flag=True,
              help="from a variant built with lora: unmerged, write only its adapter (its LoRA matrices at fp16, a "
                   "few MiB against the base's tens), bound by hash to that base: load it with "
                   "`edgeft chat BASE_BUNDLE --adapter OUT` or `edgeft-runtime serve BASE_BUNDLE --adapter OUT`")
def package_cmd(variant_dir, recipe_ref, overrides, out, bench_dir, zip_bundle, with_runtime, adapter_only):
    """Make a self-contained bundle for a device from an exported or quantized VARIANT_DIR."""
    if with_runtime is not None:
        overrides = (*overrides, f"package.with_runtime={str(with_runtime).lower()}")
    recipe = load(recipe_ref, overrides)
    with stage_command(out):
        from edgeft.stages.package import package, package_adapter
        if adapter_only:
            manifest = package_adapter(recipe, variant_dir, out, bench_dir=bench_dir)
            what = f"adapter '{manifest.adapter_name}' for {manifest.base_variant}"
        else:
            manifest = package(recipe, variant_dir, out, bench_dir=bench_dir, zip_bundle=zip_bundle)
            what = manifest.variant
    size = sum(f["bytes"] for f in manifest.files.values())
    click.echo(f"{out}: {what} ({manifest.task}), {len(manifest.files)} files, {size / 2**20:.1f} MiB"
               + (f", {out}.zip" if zip_bundle else ""))


for command in (cli_device.generate, cli_device.chat, cli_device.predict, cli_device.verify, cli_select.select,
                cli_recipes.recipes, cli_recipes.init, cli_recipes.variants, cli_setup.llamacpp_setup):
    cli.add_command(command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
