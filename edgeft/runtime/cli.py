"""`edgeft-runtime`: the device's command line (argparse: nothing to install beyond the runtime).

    edgeft-runtime predict BUNDLE [TEXT ...]      classify TEXTs, or each line of stdin, or --input FILE.jsonl
    edgeft-runtime chat BUNDLE                    chat with a text generator in the terminal
    edgeft-runtime verify BUNDLE                  sha256 of every file and the tokenizer self-test
    edgeft-runtime bench BUNDLE [--json]          cold start, latency, peak RSS, accuracy on the bundle's eval slice
    edgeft-runtime serve BUNDLE [--adapter DIR]   an OpenAI-compatible server (pip install 'edgeft-runtime[serve]')

The host's `edgeft predict`, `chat` and `verify` run the same functions. A problem with the input
(a missing or damaged file, a bad flag) exits 2 with one line naming it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator

from edgeft.runtime.errors import EdgeftError


def read_texts(path: Path) -> list[str]:
    """The `text` field of each line of a JSONL file (a data split or a bundle's eval.jsonl works)."""
    if not Path(path).is_file():
        raise EdgeftError(f"input file not found: {path}")
    texts = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                texts.append(json.loads(line)["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise EdgeftError(f"{path}:{number}: expected a JSON object with a 'text' field") from None
    return texts


def predict_lines(model, texts: list[str], as_json: bool) -> Iterator[str]:
    for text, (label, prob) in zip(texts, model.predict(texts)):
        yield (json.dumps({"text": text, "label": label, "probability": round(prob, 4)}, ensure_ascii=False) if as_json
               else f"{label}\t{prob:.3f}\t{text}")


def verify_message(folder: Path) -> str:
    from edgeft.runtime.manifest import read_manifest
    from edgeft.runtime.selfcheck import verify_tokenizer

    manifest = read_manifest(folder, what="bundle")
    samples = verify_tokenizer(folder)
    return (f"{folder}: {len(manifest.files)} files match their sha256; "
            + (f"the tokenizer gives the recorded ids for all {samples} sample texts" if samples
               else "no tokenizer self-test (not a packaged bundle)"))


def attach_adapters(generator, specs: list[str]) -> str | None:
    """Load each adapter bundle folder in `specs` (a name picks one of the base's own adapters);
    returns the first one's name, which the chat starts with."""
    names = [generator.add_adapter(Path(s)) if Path(s).is_dir() else s for s in specs]
    for name in names:
        if getattr(generator, "adapters", None) is None:
            raise EdgeftError(f"adapter '{name}': this model was built merged and takes no adapters")
        generator.adapters.resolve(name)
    return names[0] if names else None


def chat_loop(generator, system: str | None, max_new_tokens: int | None, echo=print, adapter: str | None = None) -> None:
    """Read user turns from the terminal until an empty line or end of input; stream each answer.
    `/adapter NAME` switches the adapter (on an unmerged base) and starts a new conversation."""
    history = [{"role": "system", "content": system}] if system else []
    print("chat: an empty line or Ctrl-D ends it" + (f"; adapter '{adapter}' (/adapter NAME switches)" if adapter
                                                     else ""), file=sys.stderr)
    while True:
        try:
            text = input("> ").strip()
        except EOFError:
            break
        if not text:
            break
        if text.startswith("/adapter "):
            try:
                adapter = attach_adapters(generator, [text.split(maxsplit=1)[1]])
            except EdgeftError as e:
                print(f"error: {e}", file=sys.stderr)
            history = history[:1] if system else []
            continue
        history.append({"role": "user", "content": text})
        pieces = []
        for piece in generator.stream(history, max_new_tokens, adapter):
            echo(piece, end="", flush=True)
            pieces.append(piece)
        echo()
        history.append({"role": "assistant", "content": "".join(pieces).strip()})


def summary(report: dict) -> str:
    """The device row as a few readable lines (the JSON has everything)."""
    row, machine = report["variants"][0], report["machine"]
    lines = [f"{report['bundle']['variant']} on {machine['cpu']} ({machine['cpus']} CPUs, {machine['os']}, "
             f"{machine['machine']}), {report['threads'][0]} threads, {report['rounds']} rounds"]
    lines += [f"  {k.replace('_', ' ')}: {v:.4f} ({report['eval_examples']} eval examples)"
              for k, v in row["metrics"].items()]
    cold = row["cold_start"]
    lines.append(f"  cold start to first result: {cold['first_result_s']['median']:.2f} s "
                 f"(min-max {cold['first_result_s']['min']:.2f}-{cold['first_result_s']['max']:.2f}), "
                 f"peak RSS {cold['peak_rss_bytes'] / 2**20:.0f} MiB")
    for lat in row.get("decode", []):
        d = lat["decode_tokens_per_s"]
        lines.append(f"  TTFT {lat['ttft_ms']['median']:.0f} ms ({lat['prompt_tokens']}-token prompt), prefill "
                     f"{lat['prefill_tokens_per_s']['median']:.0f} tok/s, decode {d['median']:.1f} tok/s "
                     f"({d['min']:.1f}-{d['max']:.1f}), ms/token p50/p90 {lat['ms_per_token_p50']:.1f}/"
                     f"{lat['ms_per_token_p90']:.1f}")
    for lat in row.get("latency", []):
        lines.append(f"  latency at batch 1: p50 {lat['p50_ms']:.2f} ms, p90 {lat['p90_ms']:.2f}, p99 {lat['p99_ms']:.2f}")
    lines.append(f"  peak RSS {max(row['peak_rss_bytes'].values()) / 2**20:.0f} MiB")
    return "\n".join(lines)


# --- the commands ---------------------------------------------------------------------------------
def cmd_predict(args) -> None:
    from edgeft.runtime import Classifier

    model = Classifier(args.bundle, args.threads)
    texts = args.texts or (read_texts(args.input) if args.input else [l.rstrip("\n") for l in sys.stdin if l.strip()])
    for line in predict_lines(model, texts, args.json):
        print(line, flush=True)


def cmd_chat(args) -> None:
    from edgeft.runtime import Generator

    generator = Generator(args.bundle, args.threads)
    adapter = attach_adapters(generator, args.adapter)
    chat_loop(generator, args.system, args.max_new_tokens, adapter=adapter)


def cmd_verify(args) -> None:
    print(verify_message(args.bundle))


def cmd_bench(args) -> None:
    from edgeft.runtime.device_bench import bench_bundle

    report = bench_bundle(args.bundle, args.threads, args.rounds, args.cold_rounds)
    print(json.dumps(report, indent=1) if args.json else summary(report))


def cmd_serve(args) -> None:
    from edgeft.runtime.server import serve

    if args.parallel < 1 or args.max_queue < 0:
        raise EdgeftError("--parallel must be at least 1 and --max-queue at least 0")
    print(f"serving {args.bundle} on http://{args.host}:{args.port} (OpenAI API at /v1, a chat page at /; "
          "Ctrl-C or SIGTERM stops it after the requests in flight)", file=sys.stderr, flush=True)
    serve(args.bundle, args.adapter, args.host, args.port, args.api_key, args.max_queue, args.threads, args.parallel)


def cmd_first(args) -> None:
    from edgeft.runtime.device_bench import first_result

    first_result(args.bundle, args.threads or None)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="edgeft-runtime", description="Run, check and measure an edgeft bundle on this "
                                  "machine (onnxruntime, tokenizers and numpy only).")
    from edgeft.runtime import __version__
    top.add_argument("--version", action="version", version=f"edgeft-runtime {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, fn, help_text, threads=True):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("bundle", type=Path, help="bundle folder (made by `edgeft package`)")
        if threads:
            p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
        p.set_defaults(run=fn)
        return p

    p = command("predict", cmd_predict, "classify texts with the bundle's classifier")
    p.add_argument("texts", nargs="*", help="texts to classify (default: each line of standard input)")
    p.add_argument("-i", "--input", type=Path, help="a JSONL file of {\"text\": ...} objects instead of TEXTS")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = command("chat", cmd_chat, "chat with the bundle's text generator (empty line or Ctrl-D ends it)")
    p.add_argument("--system", default=None, help="system prompt (default: the one the model was tuned with)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--adapter", action="append", default=[], help="an adapter bundle made for this base "
                   "(`edgeft package --adapter-only`), or the name of one of its own adapters; repeatable")
    command("verify", cmd_verify, "check every file's sha256 and the tokenizer against the ids recorded at "
            "package time", threads=False)
    p = command("bench", cmd_bench, "measure the bundle here: cold start, batch-1 latency (or TTFT, prefill and "
                "decode speed), peak RSS, and accuracy on the bundle's eval slice, in the host bench's schema")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument("--cold-rounds", type=int, default=3, help="fresh processes timed to their first result (default 3)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p = command("serve", cmd_serve, "serve the bundle over HTTP as OpenAI does (chat completions, streamed or not; "
                "/v1/classify for classifiers), with /health, /metrics and a chat page at /")
    p.add_argument("--adapter", action="append", default=[], help="an adapter bundle made for this base; each becomes "
                   "a model a request can name (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs --api-key)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-key", default=None, help="clients must send Authorization: Bearer KEY")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond the batch; more are answered "
                   "503 with Retry-After (default 64)")
    p.add_argument("--parallel", type=int, default=8, help="conversations decoded together in one model call (default 8)")
    first = sub.add_parser("_first")  # internal: one cold-start process of `bench`
    first.add_argument("bundle", type=Path)
    first.add_argument("threads", type=int)
    first.set_defaults(run=cmd_first)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for flag in ("threads", "rounds", "cold_rounds", "max_new_tokens"):
        if (getattr(args, flag, None) or 1) < 1:
            print(f"edgeft-runtime: --{flag.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    try:
        args.run(args)
    except EdgeftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
