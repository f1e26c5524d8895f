"""Commands that try a model: generate, chat (text generators) and predict (classifiers).

They run ONNX folders through edgeft.runtime, as the device would; `edgeft` registers them.
"""
from __future__ import annotations

from pathlib import Path

import click

from edgeft import EdgeftError

MODEL_STAGES = ("import", "merge", "export", "quantize", "package")


def open_generator(folder: Path, threads: int | None):
    """An ONNX decoder folder (artifact or bundle) through the runtime; a PyTorch one through transformers."""
    from edgeft.runtime.manifest import read_manifest

    manifest = read_manifest(folder, stage=MODEL_STAGES, what="model")
    if manifest.task != "generation":
        raise EdgeftError(f"{folder} holds a '{manifest.task}' model: generate and chat need a text generator")
    if manifest.format == "pytorch" or manifest.stage == "import":
        from edgeft.generation.runners import TorchChat
        return TorchChat(folder, threads)
    from edgeft.runtime import Generator
    return Generator(folder, threads, verify=False)


def stream_answer(generator, messages, max_new_tokens) -> str:
    pieces = []
    for piece in generator.stream(messages, max_new_tokens):
        click.echo(piece, nl=False)
        pieces.append(piece)
    click.echo()
    return "".join(pieces).strip()


@click.command()
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


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--system", default=None, help="system prompt (default: the one the model was tuned with)")
@click.option("--max-new-tokens", type=int, default=None)
@click.option("--threads", type=int, default=None)
@click.option("--adapter", "adapters", multiple=True, help="an adapter bundle made for this base (`edgeft package "
              "--adapter-only`), or the name of one of its own adapters; repeatable, the first one starts")
def chat(model_dir, system, max_new_tokens, threads, adapters):
    """Chat with the text generator in MODEL_DIR in the terminal (empty line or Ctrl-D to leave).

    On a base built with lora: unmerged, `/adapter NAME` switches the adapter between turns."""
    from edgeft.runtime.cli import attach_adapters, chat_loop

    generator = open_generator(model_dir, threads)
    chat_loop(generator, system, max_new_tokens, echo=_echo, adapter=attach_adapters(generator, list(adapters)))


def _echo(text: str = "", end: str = "\n", flush: bool = False) -> None:
    click.echo(text + end, nl=False)


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("texts", nargs=-1)
@click.option("-i", "--input", "input_file", type=click.Path(path_type=Path), default=None,
              help="a JSONL file of {\"text\": ...} objects (a data split works) instead of TEXTS")
@click.option("--threads", type=int, default=None)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def predict(bundle, texts, input_file, threads, as_json):
    """Classify TEXTS (or each line of standard input) with the classifier in BUNDLE.

    Runs through edgeft.runtime: onnxruntime, tokenizers and numpy only; every file's sha256 is
    checked against the bundle's manifest first, and the bundle's own preprocessing (max_length,
    truncation) is applied.
    """
    import sys

    from edgeft.runtime import Classifier
    from edgeft.runtime.cli import predict_lines, read_texts
    from edgeft.runtime.manifest import read_manifest

    read_manifest(bundle, stage=("package", "export", "quantize"), what="bundle", verify=False)
    model = Classifier(bundle, threads)
    lines = list(texts) or (read_texts(input_file) if input_file else
                            [line.rstrip("\n") for line in sys.stdin if line.strip()])
    for line in predict_lines(model, lines, as_json):
        click.echo(line)


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
def verify(bundle):
    """Check BUNDLE before trusting it: every file's sha256 against its manifest, and its tokenizer
    against the ids recorded for sample texts when it was packaged (a tokenizer that behaves
    differently here would feed the model other tokens)."""
    from edgeft.runtime.cli import verify_message

    click.echo(verify_message(bundle))
