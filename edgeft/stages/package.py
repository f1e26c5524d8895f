"""Package stage: one model variant as a self-contained bundle for a device.

The bundle holds only what the runtime needs (ONNX model and its data, tokenizer.json, the label
map or generation settings), the recipe, the metrics measured for this variant, a short README,
and a manifest with the sha256 of every file, which the runtime checks before loading.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from edgeft import EdgeftError
from edgeft.core.artifacts import (
    Manifest,
    find_in_lineage,
    input_ref,
    is_up_to_date,
    read_manifest,
    sha256_file,
    sha256_json,
    stage_output,
    up_to_date,
    variant_name,
    write_manifest,
)
from edgeft.core.recipe import dump_recipe
from edgeft.core.splits import load_labels
from edgeft.core.tasks import get_task
from edgeft.core.wheel import build_runtime_wheel, runtime_source
from edgeft.generation.adapters import copy_adapter
from edgeft.runtime.files import (
    ADAPTER_SUFFIX,
    ADAPTERS_DIR,
    BUNDLE_README,
    EVAL_FILE,
    GENERATION_FILE,
    LABELS_FILE,
    RECIPE_FILE,
    RUNTIME_FILES,
    TOKENIZER_CHECK_FILE,
)
from edgeft.runtime.report import example_text
from edgeft.runtime.selfcheck import record
from edgeft.stages.bundling import bench_metrics, measured_lines, report_for, write_eval_slice

DEVICE_README = """# {name}: an edgeft bundle

{what}. Made by edgeft from recipe `{recipe}`; variant `{variant}`.

Files: {files}. `manifest.json` lists the sha256 of every file; the runtime checks them, and the
tokenizer against the ids recorded in `{check}`, before it loads anything, and refuses a bundle
with a missing or changed file. `{eval}` holds {eval_examples} held-out test examples with their
answers, so the device can measure the accuracy it really gets.

## On the device (needs Python 3.10+; onnxruntime, tokenizers and numpy come from its own index)

```bash
python3 -m venv ~/edgeft-venv && . ~/edgeft-venv/bin/activate
{install}
edgeft-runtime verify {folder}
edgeft-runtime {command} {folder} ...
edgeft-runtime bench {folder}        # cold start, speed, peak RSS and accuracy here (--json for the report)
```

From the host, `edgeft bench {folder} --on "ssh user@device" --install -o device-bench` copies the
bundle, installs the runtime, measures it there and brings the report back.

```python
from edgeft.runtime import load
model = load("{folder}")
{usage}
```

## Measured on the host that made it (see manifest.json, `metrics`)
{measured}
"""


def package(recipe, variant_dir: Path, out: Path, *, bench_dir: Path | None = None, zip_bundle: bool = False,
            force: bool = True, selection: dict | None = None) -> Manifest:
    """The bundle for `variant_dir`; with `package.with_runtime`, it carries the edgeft-runtime wheel."""
    variant_dir = Path(variant_dir)
    source = read_manifest(variant_dir, stage=("export", "quantize"), what="model to package")
    if source.format == "gguf":
        from edgeft.stages.package_gguf import package_gguf
        return package_gguf(recipe, variant_dir, source, out, bench_dir=bench_dir, force=force)
    if source.format != "onnx":
        raise EdgeftError(f"{variant_dir} is not an ONNX model: package an exported or quantized variant")
    name = variant_name(source)
    inputs = [input_ref("variant", variant_dir, source)]
    metrics = bench_metrics(report_for(variant_dir, bench_dir), name)
    with_runtime = recipe.package.with_runtime
    config = {"variant": name, "recipe": recipe.model_dump(mode="json"), "zip": zip_bundle,
              "metrics": metrics, "runtime_source": runtime_fingerprint() if with_runtime else None,
              "selection": selection}
    if not force and is_up_to_date(out, inputs, config):
        return up_to_date(out)

    task = source.task
    with stage_output(out) as tmp:
        files = [f for f in RUNTIME_FILES if (variant_dir / f).exists()]
        for f in files:
            shutil.copy(variant_dir / f, tmp / f)
        if (variant_dir / ADAPTERS_DIR).is_dir():  # an unmerged base's own adapters
            shutil.copytree(variant_dir / ADAPTERS_DIR, tmp / ADAPTERS_DIR)
            files.append(ADAPTERS_DIR)
        (tmp / RECIPE_FILE).write_text(dump_recipe(recipe))
        checks = ship_self_checks(tmp, source, recipe.package.eval_samples)
        wheel = build_runtime_wheel(tmp).name if with_runtime else None
        (tmp / BUNDLE_README).write_text(device_readme(recipe, name, task, files, metrics, Path(out).name, checks, wheel))
        manifest = write_manifest(tmp, stage="package", task=task, inputs=inputs, config=config, metrics=metrics,
                                  variant=name, format="onnx", labels=source.labels, self_checks=checks,
                                  runtime={"wheel": wheel, "requires": "onnxruntime, tokenizers, numpy"},
                                  base_sha256=source.details.get("base_sha256"))
    if zip_bundle:
        shutil.make_archive(str(out), "zip", root_dir=out)
    return manifest


def ship_self_checks(folder: Path, source: dict, eval_samples: int) -> dict:
    """An evaluation slice of the held-out test split (eval.jsonl) and the tokenizer's ids for some of
    its texts (tokenizer_check.json), so that the device can check itself and measure its accuracy."""
    rows = write_eval_slice(folder, source, eval_samples)
    texts = [example_text(r) for r in rows[:8]]
    check = record(folder, texts)
    positive = load_labels(find_in_lineage(source, "data")).get("positive_label")
    return {"eval_examples": len(rows), "tokenizer_samples": len(check["samples"]), "positive_label": positive}


def runtime_fingerprint() -> str:
    """The hash of what goes into the runtime wheel (its modules and project files, not build leftovers):
    a bundle is rebuilt when the runtime it carries changes."""
    folder = runtime_source()
    return sha256_json({p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.suffix in (".py", ".toml", ".md")})


def device_readme(recipe, name: str, task: str, files: list[str], metrics: dict, folder: str, checks: dict,
                  wheel: str | None) -> str:
    what, usage = get_task(task).device_usage(recipe)
    command = get_task(task).device_command
    install = (f"pip install {folder}/{wheel}" if wheel else
               "pip install edgeft-runtime   # from your index: this bundle was made without --with-runtime")
    return DEVICE_README.format(name=recipe.name, what=what, recipe=recipe.name, variant=name, install=install,
                                files=", ".join(files), folder=folder, usage=usage, command=command,
                                check=TOKENIZER_CHECK_FILE, eval=EVAL_FILE, eval_examples=checks["eval_examples"],
                                measured=measured_lines(metrics))


def package_adapter(recipe, variant_dir: Path, out: Path, *, bench_dir: Path | None = None) -> Manifest:
    """An adapter-only bundle: the unmerged variant's own adapter file (at fp16), its chat settings and
    its own held-out slice, bound by `base_sha256` to the base graph it was quantized with."""
    variant_dir = Path(variant_dir)
    source = read_manifest(variant_dir, stage="quantize", what="model to package")
    details = source.details
    if details.get("lora") != "unmerged":
        raise EdgeftError(f"{variant_dir} was built merged: --adapter-only needs a variant with lora: unmerged")
    name = variant_name(source)
    metrics = bench_metrics(report_for(variant_dir, bench_dir), name)
    adapter = variant_dir / details["adapter"]
    with stage_output(out) as tmp:
        copy_adapter(adapter, tmp / adapter.name)  # fp16: half the bytes
        for f in (GENERATION_FILE, LABELS_FILE):
            shutil.copy(variant_dir / f, tmp / f)
        checks = {"eval_examples": len(write_eval_slice(tmp, source, recipe.package.eval_samples))}
        return write_manifest(tmp, stage="adapter", task=source.task, inputs=[input_ref("variant", variant_dir, source)],
                              config={"variant": name, "recipe": recipe.model_dump(mode="json")}, metrics=metrics,
                              adapter_name=adapter.name[:-len(ADAPTER_SUFFIX)], adapter_file=adapter.name,
                              base_sha256=details["base_sha256"], base_variant=name, self_checks=checks)
