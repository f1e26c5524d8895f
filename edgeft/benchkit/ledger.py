"""The accuracy ledger: the task metric followed through every step a model took, so that a drop
after export or quantization is pinned to the step that caused it.

Steps, each compared with the one it was made from (its lineage in the manifests): what was
trained (the adapter on the base it was trained against) -> merged into fp32 -> each ONNX (or GGUF) export
-> each quantized variant (-> the device, when measured). Per step: the metric, its change from
the previous step in points, how often the two agree on the first output (top-1 label, or first
answer token), and the mean KL divergence of the output distribution from the previous step's:
exact over the labels for classifiers; for generators over the previous step's 32 most likely
first answer tokens, tokens outside this step's top 32 given its 32nd log-probability (a lower
bound). The step that loses the most is flagged.
"""
from __future__ import annotations

import math
from pathlib import Path

from edgeft.core.artifacts import Manifest, resolve_input

STEP_NAMES = {"tune": "trained (adapter on its training base)", "merge": "merged into fp32",
              "export": "exported to ONNX", "quantize": "quantized", "device": "on the device"}


def previous_steps(models: list[tuple[str, Path, Manifest]]) -> dict[str, str | None]:
    """Each model's previous step: the model among `models` its manifest names as an input."""
    by_path = {str(Path(path).resolve()): name for name, path, _ in models}
    previous = {}
    for name, _, manifest in models:
        refs = [str(resolve_input(manifest, ref).resolve()) for ref in manifest.inputs]
        previous[name] = next((by_path[r] for r in refs if r in by_path and by_path[r] != name), None)
    return previous


def _top1(first) -> int:
    return first["ids"][0] if isinstance(first, dict) else max(range(len(first)), key=first.__getitem__)


def _kl(p, q) -> float:
    """KL(p || q) for one example: label probabilities, or top-k first-token log-probabilities."""
    if isinstance(p, dict):
        q_logp = dict(zip(q["ids"], q["logp"]))
        floor = min(q["logp"])
        return sum(math.exp(lp) * (lp - q_logp.get(i, floor)) for i, lp in zip(p["ids"], p["logp"]))
    return sum(a * (math.log(max(a, 1e-12)) - math.log(max(b, 1e-12))) for a, b in zip(p, q) if a > 0)


def compare(prev: list, cur: list) -> tuple[float, float]:
    """(agreement on the first output, mean KL divergence) of two steps over the same examples."""
    agree = sum(_top1(a) == _top1(b) for a, b in zip(prev, cur)) / len(cur)
    # a divergence is never negative; rounding (and the truncated top-k sum) can dip below zero
    return agree, sum(max(0.0, _kl(a, b)) for a, b in zip(prev, cur)) / len(cur)


def build_ledger(models: list[tuple[str, Path, Manifest]], quality: dict[str, dict], metric: str) -> dict:
    """{"metric", "steps": [...], "worst": step name}; models without quality results are left out."""
    previous = previous_steps(models)
    steps = []
    for name, _, manifest in models:
        if name not in quality or "first" not in quality[name]:
            continue
        prev = previous.get(name)
        label = STEP_NAMES.get(manifest.stage, manifest.stage)
        if manifest.format == "gguf":  # the same steps, through llama.cpp
            label = label.replace("ONNX", "GGUF") + (" (llama.cpp)" if manifest.stage == "quantize" else "")
        step = {"model": name, "step": label, "previous": prev,
                "metric": quality[name][metric], "change_pts": None, "agreement": None, "mean_kl": None,
                "top1": [_top1(f) for f in quality[name]["first"]]}
        if prev in quality and "first" in quality[prev]:
            step["change_pts"] = 100 * (quality[name][metric] - quality[prev][metric])
            step["agreement"], step["mean_kl"] = compare(quality[prev]["first"], quality[name]["first"])
        steps.append(step)
    losses = [s for s in steps if s["change_pts"] is not None]
    worst = min(losses, key=lambda s: (s["change_pts"], -(s["mean_kl"] or 0)), default=None)
    return {"metric": metric, "steps": steps, "worst": worst["model"] if worst and worst["change_pts"] < 0 else None,
            "kl": "exact over the labels (classification); over the previous step's 32 most likely first answer "
                  "tokens, a lower bound (generation)"}


def ledger_table(ledger: dict) -> dict:
    headers = ["step", "model", "from", ledger["metric"].replace("_", " "), "change pts", "agreement", "mean KL", ""]
    rows = [[s["step"], s["model"], s["previous"] or "-", f"{s['metric']:.4f}",
             "-" if s["change_pts"] is None else f"{s['change_pts']:+.1f}",
             "-" if s["agreement"] is None else f"{s['agreement']:.3f}",
             "-" if s["mean_kl"] is None else f"{s['mean_kl']:.4f}",
             "loses the most" if s["model"] == ledger["worst"] else ""] for s in ledger["steps"]]
    return {"headers": headers, "rows": rows}


def trained_model(models: list[tuple[str, Path, Manifest]]) -> tuple[str, Path, Manifest] | None:
    """The tune folder the benched models came from, as a model of the ledger's first step."""
    from edgeft.core.artifacts import find_in_lineage, read_manifest
    from edgeft.runtime.errors import EdgeftError

    for _, _, manifest in models:
        try:
            tune_dir = find_in_lineage(manifest, "adapter")
        except EdgeftError:
            continue
        manifest = read_manifest(tune_dir, stage="tune", what="tune output", verify=False)
        manifest.format = "pytorch"  # scored as a PyTorch model
        return "trained", tune_dir, manifest
    return None


def device_ledger(host: dict, device: dict, metric: str) -> dict:
    """The last step of the ledger, on the device: the same bundle on the same eval examples there
    and here. Agreement is on the whole prediction (label or answer); the device reports no
    distributions, so no KL."""
    value = device["metrics"][metric]
    steps = [{"model": host["name"], "step": "on the host", "previous": None, "metric": host["metrics"][metric],
              "change_pts": None, "agreement": None, "mean_kl": None},
             {"model": device["name"], "step": f"{STEP_NAMES['device']} ({device['machine'].get('cpu')})",
              "previous": host["name"], "metric": value, "change_pts": 100 * (value - host["metrics"][metric]),
              "agreement": sum(a == b for a, b in zip(host["predictions"], device["predictions"]))
              / max(len(device["predictions"]), 1), "mean_kl": None}]
    return {"metric": metric, "steps": steps, "worst": device["name"] if steps[1]["change_pts"] < 0 else None,
            "kl": "not measured on the device (it reports predictions, not distributions)"}
