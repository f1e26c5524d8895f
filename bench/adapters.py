"""Two skills on one int4 base: the TREC router and the SMS spam filter, each a LoRA adapter kept
unmerged beside the shared base (quantize variant int4-lora), as a device would run them.

    edgeft run assistant-trec-smollm2 && edgeft run assistant-spam-smollm2
    python -m bench.adapters [RUN RUN] [--variant int4-lora]
        (default: runs/assistant-trec-smollm2 and runs/assistant-spam-smollm2)

Packages the first run's unmerged variant as the base bundle (with its own adapter) and the second
run's as an adapter-only bundle (refused unless its base hash matches), each with its run's recipe,
then measures on the device side (edgeft.runtime):
- each adapter's exact match on its own 500 held-out examples through the shared base, paired
  against its own merged fp32 model (the genai fp32 export) on the same examples;
- the size of each adapter bundle;
- switching: the time to activate the other adapter for a request, and one prefill alternating
  adapters against the same adapter, medians over 100 switches;
- peak RSS of a fresh process holding the base with one adapter against two, both used.
Writes bench/results/adapters.json with the machine, versions and command.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, ROOT, write_result
from edgeft.benchkit.paired import paired_drop
from edgeft.core.metrics import normalize_answer
from edgeft.core.recipe import load_recipe
from edgeft.core.splits import load_split
from edgeft.runtime import Generator
from edgeft.runtime.files import RunLayout
from edgeft.stages.package import package, package_adapter

THREADS, MAX_ANSWER = 2, 6

RSS_PROBE = """
import sys
from edgeft.runtime import Generator
from edgeft.runtime.machine import peak_rss_bytes
g = Generator(sys.argv[1], 2)
names = [g.add_adapter(p) for p in sys.argv[2:]] or [None]
for name in [None, *names]:
    g.answer("Is this a question ?", 4, adapter=name)
print(peak_rss_bytes() / 2**20)
"""


def correct(generator: Generator, rows: list[dict], adapter: str | None) -> list[bool]:
    out = []
    for row in rows:
        ids = generator.encode_chat(row["messages"][:-1], adapter)
        said = generator.tokenizer.decode(list(generator.generate_ids(ids, MAX_ANSWER, adapter=adapter)))
        out.append(normalize_answer(said.strip()) == normalize_answer(row["answer"]))
    return out


def quality(base: Generator, run: RunLayout, adapter: str, questions: int | None) -> dict:
    rows = load_split(run.data, "test")[:questions]
    shared = correct(base, rows, adapter)
    merged = correct(Generator(run.export("genai"), THREADS, verify=False), rows, None)
    drop = paired_drop(merged, shared).to_dict()
    print(f"{adapter}: shared int4 base + adapter {sum(shared) / len(rows):.3f}, own merged fp32 "
          f"{sum(merged) / len(rows):.3f} ({-drop['points']:+.1f} pts, {-drop['high']:+.1f} to {-drop['low']:+.1f})",
          flush=True)
    return {"examples": len(rows), "exact_match_shared_int4_base": sum(shared) / len(rows),
            "exact_match_own_merged_fp32": sum(merged) / len(rows), "change_vs_merged_fp32_pts": drop}


def switching(base: Generator, names: list[str], switches: int) -> dict:
    """Activation alone (the adapter's LoRA inputs for a call), and a 16-token prefill with and without a switch."""
    prompt = base.encode_chat([{"role": "user", "content": "How far is it from Denver to Aspen ?"}], names[0])[:16]
    activate, alternating, same = [], [], []
    for i in range(switches):
        start = time.perf_counter()
        base.lora_inputs(names[i % 2])
        activate.append(time.perf_counter() - start)
        for series, name in ((alternating, names[i % 2]), (same, names[0])):
            start = time.perf_counter()
            base.prefill(prompt, name)
            series.append(time.perf_counter() - start)
    ms = lambda xs: round(statistics.median(xs) * 1000, 4)  # noqa: E731
    return {"switches": switches, "activate_ms_median": ms(activate), "prefill16_alternating_ms_median": ms(alternating),
            "prefill16_same_adapter_ms_median": ms(same)}


def peak_rss(base_bundle: Path, adapters: list[Path]) -> float:
    done = subprocess.run([sys.executable, "-c", RSS_PROBE, str(base_bundle), *map(str, adapters)],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.adapters", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="two runs whose unmerged variants share one base",
                        default=[ROOT / "runs/assistant-trec-smollm2", ROOT / "runs/assistant-spam-smollm2"])
    parser.add_argument("--variant", default="int4-lora", help="the unmerged variant of each run")
    parser.add_argument("--questions", type=int, default=None, help="only the first N held-out examples (smoke run)")
    parser.add_argument("--switches", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS / "adapters.json")
    args = parser.parse_args(argv)
    if len(args.runs) != 2:
        parser.error("give two runs")
    runs = [RunLayout(r) for r in args.runs]
    recipes = [load_recipe(r.recipe) for r in runs]
    with tempfile.TemporaryDirectory(prefix="edgeft-adapters-") as tmp:
        tmp = Path(tmp)
        package(recipes[0], runs[0].variant(args.variant), tmp / "base")
        bundles = [package_adapter(recipe, run.variant(args.variant), tmp / recipe.name)
                   for recipe, run in zip(recipes, runs)]
        base = Generator(tmp / "base", THREADS)
        names = [bundles[0].adapter_name, base.add_adapter(tmp / recipes[1].name)]
        result = {"adapter_bundle_mib": {b.adapter_name: sum(f["bytes"] for f in b.files.values()) / 2**20 for b in bundles},
                  "base_bundle_model_mib": sum((tmp / "base" / f).stat().st_size for f in ("model.onnx", "model.onnx.data"))
                  / 2**20, "base_sha256": bundles[1].base_sha256,
                  "quality": {name: quality(base, run, name, args.questions) for name, run in zip(names, runs)},
                  "switching": switching(base, names, args.switches),
                  "peak_rss_mib": {"one_adapter": peak_rss(tmp / "base", []),
                                   "two_adapters": peak_rss(tmp / "base", [tmp / recipes[1].name])}}
    return write_result(args.out, "adapters", argv, {**result, "threads": THREADS})


if __name__ == "__main__":
    main()
