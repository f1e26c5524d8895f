"""Unmerged LoRA: one int4 base graph, the adapters beside it as onnxruntime adapter files.

Why: the seed of this project is one small model per person or per skill. Merging bakes an adapter
into its own copy of the base (96 MiB each at int4); kept unmerged, every skill shares one base and
adds its LoRA A/B matrices (a few MB in fp32), bound per request through onnxruntime's
`LoraAdapter` and `RunOptions.add_active_adapter`.

onnxruntime-genai's builder writes the LoRA path (MatMul A, MatMul B scaled by alpha/r, Add) when it
is given the adapter; edgeft keeps those MatMuls out of the int4 pass, then turns their weights into
graph inputs (rank left free, rank-0 defaults: the bare base) and writes their values into
`adapters/<name>.onnx_adapter`. The base graph and its weights no longer hold anything of the
adapter, so their hash (`base_sha256`, recorded in the manifests) is the same for every adapter
trained on that base with the same quantization, and an adapter records the hash of the base it
was made for.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from edgeft import EdgeftError
from edgeft.runtime.files import ADAPTER_SUFFIX, ADAPTERS_DIR, ONNX_FILE

PROJECTIONS = ("attn/q_proj", "attn/k_proj", "attn/v_proj", "attn/o_proj", "mlp/gate_proj", "mlp/up_proj",
               "mlp/down_proj")
RANK = "lora_rank"


def lora_node_names(layers: int) -> list[str]:
    """The builder's names for the LoRA MatMuls (kept in fp32: the int4 pass must not take them)."""
    return [f"/model/layers.{i}/{p}/lora_{ab}/MatMul" for i in range(layers) for p in PROJECTIONS for ab in "AB"]


def base_sha256(model_path: Path) -> str:
    """The identity of a base graph: its weights (name, type, shape, bytes) and its LoRA inputs,
    adapters excluded. The rotary caches are left out: the builder derives them from the config and
    their last bits vary from one build to the next (1.5e-4 seen)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    digest = hashlib.sha256()
    for init in sorted(model.graph.initializer, key=lambda i: i.name):
        if init.name.endswith(("cos_cache", "sin_cache")):
            continue
        array = numpy_helper.to_array(init)
        digest.update(f"{init.name}|{array.dtype}|{array.shape}".encode() + array.tobytes())
    digest.update(",".join(sorted(i.name for i in model.graph.input)).encode())
    return digest.hexdigest()


def build_unmerged(base_dir: Path, tune_dir: Path, out: Path, precision: str, variant, name: str) -> dict:
    """The base at `precision` with the adapter's LoRA path as inputs; the adapter as a file."""
    from edgeft.generation.genai import build_genai

    layers = json.loads((Path(base_dir) / "config.json").read_text())["num_hidden_layers"]
    extra = [f"adapter_path={tune_dir}"]
    if precision != "fp32":
        extra.append(f"nodes_to_exclude={','.join(lora_node_names(layers))}")
    build_genai(base_dir, out, precision=precision, variant=variant, extra=extra)
    adapter = Path(out) / ADAPTERS_DIR / f"{name}{ADAPTER_SUFFIX}"
    params = split_adapter(Path(out) / ONNX_FILE, adapter)
    return {"lora": "unmerged", "adapter": adapter.relative_to(out).as_posix(), "lora_parameters": params,
            "base_sha256": base_sha256(Path(out) / ONNX_FILE)}


def split_adapter(model_path: Path, adapter_path: Path) -> int:
    """Move the LoRA weights of a graph into an onnxruntime adapter file; they become graph inputs
    with a free rank. Returns the number of parameters moved."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_path))
    lora = [i for i in model.graph.initializer if ".lora_A." in i.name or ".lora_B." in i.name]
    if not lora:
        raise EdgeftError(f"{model_path} has no LoRA weights to split off (was the adapter given to the builder?)")
    values = {}
    for init in lora:
        array = numpy_helper.to_array(init)
        values[init.name] = ort.OrtValue.ortvalue_from_numpy(array)
        a = ".lora_A." in init.name
        model.graph.input.append(helper.make_tensor_value_info(
            init.name, init.data_type, [array.shape[0], RANK] if a else [RANK, array.shape[1]]))
        model.graph.initializer.remove(init)
        # a rank-0 default: without an active adapter the LoRA path adds zeros (the bare base)
        empty = np.zeros((array.shape[0], 0) if a else (0, array.shape[1]), dtype=array.dtype)
        model.graph.initializer.append(numpy_helper.from_array(empty, init.name))
    with tempfile.TemporaryDirectory(dir=model_path.parent) as tmp:
        staged = Path(tmp) / model_path.name
        data = model_path.name + ".data"
        onnx.save(model, str(staged), save_as_external_data=True, location=data)
        for f in (model_path, model_path.parent / data):
            f.unlink(missing_ok=True)
        shutil.move(str(staged), model_path)
        shutil.move(str(Path(tmp) / data), model_path.parent / data)
    write_adapter(values, adapter_path)
    return sum(v.numpy().size for v in values.values())


def write_adapter(values: dict, path: Path) -> None:
    import onnxruntime as ort

    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    fmt.set_parameters(values)
    fmt.export_adapter(str(path))
