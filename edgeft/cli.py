"""The edgeft command line: a thin layer over the stage functions.

Heavy libraries (torch, transformers, onnxruntime) are imported inside the commands, so that
`edgeft --help` answers at once.
"""
from __future__ import annotations

from pathlib import Path

import click

from edgeft import EdgeftError, __version__

RECIPE_HELP = "recipe YAML file or the name of a built-in recipe (default: sms-spam-minilm)"


def recipe_options(fn):
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="override a recipe field, e.g. --set tune.epochs=1 (repeatable)")(fn)
    return click.option("-r", "--recipe", "recipe_ref", default=None, metavar="RECIPE", help=RECIPE_HELP)(fn)


def output_option(fn):
    return click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
                        help="folder to write (replaced atomically when the stage succeeds)")(fn)


def load(recipe_ref, overrides):
    from edgeft.recipe import load_recipe
    return load_recipe(recipe_ref, overrides)


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


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgeft")
def cli():
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
def run(recipe_ref, out, overrides, force):
    """Run the whole pipeline from RECIPE (default: the built-in sms-spam-minilm).

    data -> [import] -> tune -> merge -> export -> quantize -> bench, into one run folder.
    Stages whose output matches their inputs are skipped; an interrupted tune resumes.
    """
    from edgeft.pipeline import run_pipeline
    from edgeft.report import table

    recipe = load(recipe_ref, overrides)
    run_dir = out or Path("runs") / recipe.name
    report = run_pipeline(recipe, run_dir, force=force)
    click.echo(table(report))
    click.echo(f"\nreports: {run_dir / 'bench'}/report.{{json,csv,md}}, accuracy_latency.png")


@cli.command()
@recipe_options
@output_option
def data(recipe_ref, overrides, out):
    """Read the recipe's dataset, deduplicate it, split it train/validation/test (stratified, seeded)."""
    from edgeft.data import prepare_data

    manifest = prepare_data(load(recipe_ref, overrides), out)
    m = manifest["metrics"]
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
    from edgeft.tune import tune as run_tune

    manifest = run_tune(load(recipe_ref, overrides), data_dir, out, base_dir=base_dir, resume=resume)
    if manifest:
        best = manifest["metrics"]["best_validation"]
        click.echo(f"{out}: best validation " + ", ".join(f"{k} {v:.4f}" for k, v in best.items()
                                                          if isinstance(v, float)))


@cli.command()
@click.argument("tune_dir", type=click.Path(path_type=Path))
@recipe_options
@output_option
def merge(tune_dir, recipe_ref, overrides, out):
    """Merge the adapter in TUNE_DIR into an fp32 copy of its base model, behind a parity gate."""
    from edgeft.merge import merge as run_merge

    manifest = run_merge(load(recipe_ref, overrides), tune_dir, out)
    for name, check in manifest["metrics"].items():
        if "agreement" in check:
            click.echo(f"{name}: agreement {check['agreement']:.2%}, max |logit diff| {check['max_abs_logit_diff']:.3g}")


@cli.command()
@click.argument("merge_dir", type=click.Path(path_type=Path))
@recipe_options
@output_option
@click.option("--backend", type=click.Choice(["optimum", "genai"]), default="optimum", show_default=True,
              help="optimum-onnx exporter, or onnxruntime-genai's model builder (decoders)")
def export(merge_dir, recipe_ref, overrides, out, backend):
    """Export the merged model in MERGE_DIR to ONNX and check it against PyTorch."""
    from edgeft.export import export as run_export

    manifest = run_export(load(recipe_ref, overrides), merge_dir, out, backend=backend)
    parity = manifest["metrics"]["parity"]
    click.echo(f"{out}: parity max |ONNX - PyTorch| {parity['max_abs_logit_diff']:.2e}")


@cli.command()
@click.argument("export_dir", type=click.Path(path_type=Path))
@recipe_options
@output_option
@click.option("--variant", "variants", multiple=True, help="only this recipe variant (repeatable)")
def quantize(export_dir, recipe_ref, overrides, out, variants):
    """Quantize the fp32 ONNX model in EXPORT_DIR: one folder per recipe variant under OUT."""
    from edgeft.quantize import quantize as run_quantize

    for manifest in run_quantize(load(recipe_ref, overrides), export_dir, out, only=list(variants) or None):
        click.echo(f"{out / manifest['variant']}: {manifest['variant']}")


@cli.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=Path))
@recipe_options
@output_option
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "md"]), default="table",
              show_default=True, help="what to print (all are written to OUT)")
def bench(folders, recipe_ref, overrides, out, fmt):
    """Measure accuracy, latency, throughput, size and peak RSS of every model in FOLDERS.

    FOLDERS are merged/exported/quantized artifacts, or a run folder (every artifact in it).
    """
    from edgeft.bench import bench as run_bench

    report = run_bench(load(recipe_ref, overrides), list(folders), out)
    click.echo(render(report, out, fmt))


def render(report: dict, folder: Path, fmt: str) -> str:
    from edgeft.report import table

    if fmt == "table":
        return table(report)
    return (Path(folder) / {"json": "report.json", "csv": "report.csv", "md": "report.md"}[fmt]).read_text()


@cli.command()
@click.argument("bench_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "md"]), default="table", show_default=True)
def report(bench_dir, fmt):
    """Print the report of a finished bench (BENCH_DIR) as a table, JSON, CSV or Markdown."""
    import json

    from edgeft.artifacts import read_manifest

    read_manifest(bench_dir, stage="bench", what="bench folder")
    click.echo(render(json.loads((Path(bench_dir) / "report.json").read_text()), bench_dir, fmt))


@cli.command(name="import")
@click.argument("gguf", type=click.Path(path_type=Path))
@output_option
def import_cmd(gguf, out):
    """Turn a GGUF file (or a model alias such as smollm2) into a Hugging Face folder (fp32 safetensors,
    tokenizer, chat template) with a manifest."""
    from edgeft.importer import import_gguf
    from edgeft.models import resolve_model

    path = resolve_model(str(gguf), field="GGUF") if not Path(gguf).exists() else Path(gguf)
    manifest = import_gguf(path, out)
    click.echo(f"{out}: {manifest['architecture']}, {manifest['metrics']['parameters'] / 1e6:.1f}M parameters")


MODEL_STAGES = ("import", "merge", "export", "quantize", "package")


def open_generator(folder: Path, threads: int | None):
    """An ONNX decoder folder (artifact or bundle) through the runtime; a PyTorch one through transformers."""
    from edgeft.artifacts import read_manifest

    manifest = read_manifest(folder, stage=MODEL_STAGES, what="model")
    if manifest.get("task") != "generation":
        raise EdgeftError(f"{folder} holds a '{manifest.get('task')}' model: generate and chat need a text generator")
    if manifest.get("format") == "pytorch" or manifest["stage"] == "import":
        from edgeft.decoder import TorchChat
        return TorchChat(folder, threads)
    from edgeft.runtime_gen import Generator
    return Generator(folder, threads, verify=False)


def stream_answer(generator, messages, max_new_tokens) -> str:
    pieces = []
    for piece in generator.stream(messages, max_new_tokens):
        click.echo(piece, nl=False)
        pieces.append(piece)
    click.echo()
    return "".join(pieces).strip()


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("prompt", nargs=-1)
@click.option("--max-new-tokens", type=int, default=None, help="default: the model's generation settings (128)")
@click.option("--threads", type=int, default=None, help="CPU threads (default: all cores)")
def generate(model_dir, prompt, max_new_tokens, threads):
    """Answer PROMPT with the text generator in MODEL_DIR, streaming tokens as they come.

    MODEL_DIR is an exported or quantized decoder (or a bundle, or a merged PyTorch model). Without
    PROMPT, each line of standard input is answered in turn.
    """
    import sys

    generator = open_generator(model_dir, threads)
    prompts = [" ".join(prompt)] if prompt else [line.strip() for line in sys.stdin if line.strip()]
    for text in prompts:
        stream_answer(generator, [{"role": "user", "content": text}], max_new_tokens)


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--system", default=None, help="system prompt (default: the one the model was tuned with)")
@click.option("--max-new-tokens", type=int, default=None)
@click.option("--threads", type=int, default=None)
def chat(model_dir, system, max_new_tokens, threads):
    """Chat with the text generator in MODEL_DIR in the terminal (empty line or Ctrl-D to leave)."""
    generator = open_generator(model_dir, threads)
    history = [{"role": "system", "content": system}] if system else []
    click.echo("chat: an empty line or Ctrl-D ends it", err=True)
    while True:
        try:
            text = input("> ").strip()
        except EOFError:
            break
        if not text:
            break
        history.append({"role": "user", "content": text})
        history.append({"role": "assistant", "content": stream_answer(generator, history, max_new_tokens)})


@cli.command(name="package")
@click.argument("variant_dir", type=click.Path(path_type=Path))
@recipe_options
@output_option
@click.option("--bench", "bench_dir", type=click.Path(path_type=Path), default=None,
              help="bench folder whose measurements go into the bundle (default: the run's bench/)")
@click.option("--zip", "zip_bundle", is_flag=True, help="also write OUT.zip")
def package_cmd(variant_dir, recipe_ref, overrides, out, bench_dir, zip_bundle):
    """Make a self-contained bundle for a device from an exported or quantized VARIANT_DIR."""
    from edgeft.package import package

    manifest = package(load(recipe_ref, overrides), variant_dir, out, bench_dir=bench_dir, zip_bundle=zip_bundle)
    size = sum(f["bytes"] for f in manifest["files"].values())
    click.echo(f"{out}: {manifest['variant']} ({manifest['task']}), {len(manifest['files'])} files, {size / 2**20:.1f} MiB"
               + (f", {out}.zip" if zip_bundle else ""))


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("texts", nargs=-1)
@click.option("--threads", type=int, default=None)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def predict(bundle, texts, threads, as_json):
    """Classify TEXTS (or each line of standard input) with the classifier in BUNDLE.

    Runs through edgeft.runtime: onnxruntime, tokenizers and numpy only; every file's sha256 is
    checked against the bundle's manifest first.
    """
    import json
    import sys

    from edgeft.artifacts import read_manifest
    from edgeft.runtime import Classifier

    read_manifest(bundle, stage=("package", "export", "quantize"), what="bundle", verify=False)
    model = Classifier(bundle, threads)
    lines = list(texts) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for text, (label, prob) in zip(lines, model.predict(lines)):
        click.echo(json.dumps({"text": text, "label": label, "probability": round(prob, 4)}) if as_json
                   else f"{label}\t{prob:.3f}\t{text}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
