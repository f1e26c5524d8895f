"""Two skills on one int4 base: the TREC router and the SMS spam filter, each a LoRA adapter kept
unmerged beside the shared base (quantize variant int4-lora), as a device would run them.

    edgeft run assistant-trec-smollm2 && edgeft run assistant-spam-smollm2
    python bench/adapters.py [--trec runs/assistant-trec-smollm2] [--spam runs/assistant-spam-smollm2]

Packages the TREC run's int4-lora variant as the base bundle and the spam run's as an adapter-only
bundle (refused unless its base hash matches), then measures on the device side (edgeft.runtime):
- each adapter's exact match on its own 500 held-out examples through the shared base, paired
  against its own merged fp32 model (the genai fp32 export) on the same examples;
- the size of each adapter bundle;
- switching: the time to activate the other adapter for a request, and one prefill alternating
  adapters against the same adapter, medians over 100 switches;
- peak RSS of a fresh process holding the base with one adapter against two, both used.
Writes bench/results/adapters.json with the machine, versions and command.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeft.benchkit.paired import paired_drop  # noqa: E402
from edgeft.core.artifacts import library_versions, machine_info  # noqa: E402
from edgeft.core.metrics import normalize_answer  # noqa: E402
from edgeft.core.recipe import load_recipe  # noqa: E402
from edgeft.core.splits import load_split  # noqa: E402
from edgeft.runtime import Generator  # noqa: E402
from edgeft.stages.package import package, package_adapter  # noqa: E402

VARIANT, THREADS, MAX_ANSWER, SWITCHES = "int4-lora", 2, 6, 100

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


def quality(base: Generator, skill: str, run: Path, adapter: str) -> dict:
    rows = load_split(run / "data", "test")
    shared = correct(base, rows, adapter)
    merged = correct(Generator(run / "export-genai", THREADS, verify=False), rows, None)
    drop = paired_drop(merged, shared).to_dict()
    print(f"{skill}: shared int4 base + adapter {sum(shared) / len(rows):.3f}, own merged fp32 "
          f"{sum(merged) / len(rows):.3f} ({-drop['points']:+.1f} pts, {-drop['high']:+.1f} to {-drop['low']:+.1f})",
          flush=True)
    return {"examples": len(rows), "exact_match_shared_int4_base": sum(shared) / len(rows),
            "exact_match_own_merged_fp32": sum(merged) / len(rows), "change_vs_merged_fp32_pts": drop}


def switching(base: Generator, names: list[str]) -> dict:
    """Activation alone (RunOptions with the adapter), and a 16-token prefill with and without a switch."""
    prompt = base.encode_chat([{"role": "user", "content": "How far is it from Denver to Aspen ?"}], names[0])[:16]
    activate, alternating, same = [], [], []
    for i in range(SWITCHES):
        start = time.perf_counter()
        base.adapters.run_options(names[i % 2])
        activate.append(time.perf_counter() - start)
        for series, name in ((alternating, names[i % 2]), (same, names[0])):
            start = time.perf_counter()
            base.prefill(prompt, name)
            series.append(time.perf_counter() - start)
    ms = lambda xs: round(statistics.median(xs) * 1000, 4)  # noqa: E731
    return {"switches": SWITCHES, "activate_ms_median": ms(activate), "prefill16_alternating_ms_median": ms(alternating),
            "prefill16_same_adapter_ms_median": ms(same)}


def peak_rss(base_bundle: Path, adapters: list[Path]) -> float:
    done = subprocess.run([sys.executable, "-c", RSS_PROBE, str(base_bundle), *map(str, adapters)],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--trec", type=Path, default=ROOT / "runs/assistant-trec-smollm2")
    parser.add_argument("--spam", type=Path, default=ROOT / "runs/assistant-spam-smollm2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeft-adapters-") as tmp:
        tmp = Path(tmp)
        trec, spam = load_recipe("assistant-trec-smollm2"), load_recipe("assistant-spam-smollm2")
        package(trec, args.trec / "quantize" / VARIANT, tmp / "base")
        bundles = {"assistant-trec-smollm2": package_adapter(trec, args.trec / "quantize" / VARIANT, tmp / "trec"),
                   "assistant-spam-smollm2": package_adapter(spam, args.spam / "quantize" / VARIANT, tmp / "spam")}
        base = Generator(tmp / "base", THREADS)
        added = base.add_adapter(tmp / "spam")
        result = {"adapter_bundle_mib": {n: sum(f["bytes"] for f in m["files"].values()) / 2**20
                                         for n, m in bundles.items()},
                  "base_bundle_model_mib": sum((tmp / "base" / f).stat().st_size for f in ("model.onnx", "model.onnx.data"))
                  / 2**20, "base_sha256": bundles["assistant-spam-smollm2"]["base_sha256"]}
        result["quality"] = {"assistant-trec-smollm2": quality(base, "trec", args.trec, "assistant-trec-smollm2"),
                             "assistant-spam-smollm2": quality(base, "spam", args.spam, added)}
        result["switching"] = switching(base, ["assistant-trec-smollm2", added])
        result["peak_rss_mib"] = {"one_adapter": peak_rss(tmp / "base", []),
                                  "two_adapters": peak_rss(tmp / "base", [tmp / "spam"])}
    result.update(machine=machine_info(), versions=library_versions(), threads=THREADS, command=" ".join(sys.argv))
    path = ROOT / "bench/results/adapters.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("adapter_bundle_mib", "switching", "peak_rss_mib")}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
