"""`edgeft adapt BASE --data FILE -o OUT`: a new skill, or one user's adapter, on a base that already
ships, in minutes.

Why: a personalised assistant is one shared base and an adapter per person or per skill. A full
recipe run exports and quantizes the base again for each (a run of the assistant recipe takes tens of
minutes on 2 cores); the base's files do not change, so `adapt` reuses them. It trains the LoRA adapter
on the user's data against the base as its unmerged int4 variant rounds it (the run's own
`tune.base_quant` grid), writes the adapter's matrices straight into an onnxruntime adapter file in the
base graph's own input names (fp16: half the bytes), and binds it to the base's sha256. Nothing is
exported or quantized.

OUT is laid out as a run folder: `data/` and `tune/` (an interrupted tune resumes) and `adapter/`, the
adapter bundle, whose manifest holds the exact match on the user's held-out split with the adapter,
without it (the bare base) and with the same adapter at fp32 (what fp16 costs), each paired on the same
examples, and the seconds each step took.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from edgeft import EdgeftError
from edgeft.benchkit.paired import paired_drop
from edgeft.core.artifacts import Manifest, find_in_lineage, input_ref, read_manifest, stage_output, write_manifest
from edgeft.core.metrics import normalize_answer
from edgeft.core.recipe import Recipe
from edgeft.generation.adapters import adapter_from_peft
from edgeft.runtime.files import ADAPTER_SUFFIX, GENERATION_FILE, LABELS_FILE, MANIFEST, ONNX_FILE, RunLayout
from edgeft.stages.bundling import write_eval_slice
from edgeft.stages.data import prepare_data
from edgeft.stages.tune import tune


def unmerged_variant(base: Path) -> Path:
    """The unmerged int4 variant `base` names: the folder itself, or the one of a run folder."""
    base = Path(base)
    candidates = [base] if (base / MANIFEST).is_file() else \
        sorted(p.parent for p in RunLayout(base).quantized.glob(f"*/{MANIFEST}"))
    found = [c for c in candidates if read_manifest(c, verify=False).details.get("lora") == "unmerged"]
    if len(found) != 1:
        what = ", ".join(c.name for c in found) or "none"
        raise EdgeftError(f"adapt: {base} must be a run folder with one variant built with lora: unmerged, or that "
                          f"variant's folder (found: {what})")
    return found[0]


def grid_recipe(recipe: Recipe, variant: Manifest) -> Recipe:
    """The recipe with the tune settings of the grid the base was built on: an adapter trained on
    another grid would be rounded onto this one."""
    base_tune = read_manifest(find_in_lineage(variant, "adapter"), stage="tune", verify=False).config
    grid = {k: base_tune[k] for k in ("method", "base_quant", "grid_block_size", "grid_head_bits") if k in base_tune}
    return recipe.model_copy(update={"tune": recipe.tune.model_copy(update=grid)})


def exact(generator, rows: list[dict], adapter: str, max_tokens: int) -> list[bool]:
    out = []
    for row in rows:
        ids = generator.encode_chat(row["messages"][:-1], adapter)
        said = generator.tokenizer.decode(list(generator.generate_ids(ids, max_tokens, adapter=adapter)))
        out.append(normalize_answer(said) == normalize_answer(row["answer"]))
    return out


def evaluate(variant_dir: Path, bundle: Path, fp32_file: Path, rows: list[dict], max_tokens: int,
             threads: int | None) -> dict:
    """Exact match with the adapter, without it (the bare base) and with its fp32 matrices, on the same
    held-out examples; `vs_*` is how many points the shipped adapter is worse, with its interval."""
    from edgeft.runtime import Generator

    generator = Generator(variant_dir, threads, verify=False)
    name = generator.add_adapter(bundle)
    generator.adapters.load("fp32", fp32_file, generator.adapters.settings(name))
    shipped, fp32, bare = (exact(generator, rows, a, max_tokens) for a in (name, "fp32", "none"))
    n = len(rows)
    return {"examples": n, "exact_match": sum(shipped) / n, "base_exact_match": sum(bare) / n,
            "fp32_exact_match": sum(fp32) / n, "vs_base": paired_drop(bare, shipped).to_dict(),
            "vs_fp32": paired_drop(fp32, shipped).to_dict()}


def adapt(recipe: Recipe, base: Path, out: Path, *, threads: int | None = None, progress: bool = True) -> Manifest:
    variant_dir = unmerged_variant(base)
    variant = read_manifest(variant_dir, stage="quantize", what="base variant")
    recipe, run, seconds = grid_recipe(recipe, variant), RunLayout(out), {}
    start = time.perf_counter()
    prepare_data(recipe, run.data, force=False)
    seconds["data"] = time.perf_counter() - start
    tuned = tune(recipe, run.data, run.tune, base_dir=find_in_lineage(variant, "base_model"), resume=True,
                 force=False, progress=progress)
    seconds["tune"] = time.perf_counter() - start - seconds["data"]
    with stage_output(run.adapter) as tmp:
        file = f"{recipe.name}{ADAPTER_SUFFIX}"
        lora = adapter_from_peft(run.tune, variant_dir / ONNX_FILE, tmp / file)
        settings = json.loads((variant_dir / GENERATION_FILE).read_text())
        (tmp / GENERATION_FILE).write_text(json.dumps({**settings, "system_prompt": recipe.data.system_prompt}, indent=2))
        shutil.copy(run.tune / LABELS_FILE, tmp / LABELS_FILE)
        rows = write_eval_slice(tmp, tuned, recipe.package.eval_samples)
        fields = dict(stage="adapter", task=variant.task, inputs=[input_ref("variant", variant_dir, variant),
                                                                  input_ref("adapter", run.tune, tuned)],
                      config={"recipe": recipe.model_dump(mode="json")}, adapter_name=recipe.name, adapter_file=file,
                      base_sha256=variant.details["base_sha256"], base_variant=variant.variant,
                      self_checks={"eval_examples": len(rows)})
        write_manifest(tmp, **fields)  # the runtime loads the adapter from a checked bundle
        with tempfile.TemporaryDirectory() as scratch:
            fp32_file = Path(scratch) / file
            adapter_from_peft(run.tune, variant_dir / ONNX_FILE, fp32_file, dtype="float32")
            quality = evaluate(variant_dir, tmp, fp32_file, rows, recipe.bench.max_new_tokens_eval, threads)
        seconds["write_and_evaluate"] = time.perf_counter() - start - seconds["data"] - seconds["tune"]
        metrics = {**quality, "lora": lora, "seconds": {k: round(v, 1) for k, v in seconds.items()},
                   "adapter_bytes": (tmp / file).stat().st_size}
        return write_manifest(tmp, metrics=metrics, **fields)
