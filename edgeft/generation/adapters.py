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
from edgeft.runtime.adapters import FUSED, members
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


def lora_inputs(model_path: Path) -> dict[str, list]:
    """The per-projection LoRA inputs of a base graph and their shapes (the free rank as 'lora_rank';
    a fused input's members share its A shape, and their B widths are theirs, unknown here: None)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    out = {}
    for i in model.graph.input:
        if ".lora_A." in i.name or ".lora_B." in i.name:
            shape = [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            parts = members(i.name)
            for m in parts:
                out[m] = shape if len(parts) == 1 or ".lora_A." in m else [shape[0], None]
    return out


def peft_key(graph_name: str) -> str:
    """The peft state key of a graph's LoRA input: `model.layers.3.attn.q_proj.lora_A.MatMul.weight` is
    `...model.layers.3.self_attn.q_proj.lora_A.weight` (the builder names attention `attn`)."""
    return graph_name.replace(".attn.", ".self_attn.").replace(".MatMul.weight", ".weight")


def adapter_from_peft(tune_dir: Path, base_graph: Path, path: Path, dtype: str = "float16") -> dict:
    """A trained peft adapter as an onnxruntime adapter file for a base built unmerged, in the graph's
    own names and layout, as onnxruntime-genai's builder writes them: A transposed, B transposed and
    scaled by alpha / r (the graph has no scale node). Modules the adapter does not train stay at the
    graph's rank-0 defaults. fp16 halves the file; the runtime widens it to the graph's fp32 at load."""
    import numpy as np
    import onnxruntime as ort
    from safetensors.numpy import load_file

    config = json.loads((Path(tune_dir) / "adapter_config.json").read_text())
    state = {k.split("base_model.model.", 1)[-1]: v for k, v in load_file(Path(tune_dir) / "adapter_model.safetensors").items()}
    scale = config["lora_alpha"] / config["r"]
    values = {}
    for name, shape in lora_inputs(base_graph).items():
        weight = state.get(peft_key(name))
        if weight is None:
            continue
        array = weight.T * scale if ".lora_B." in name else weight.T
        fixed = [d for d in shape if isinstance(d, int) and d > 0]
        if fixed and fixed[0] not in array.shape:
            raise EdgeftError(f"{tune_dir}: {name} has shape {list(array.shape)}; the base graph wants {shape}: "
                              "the adapter was trained on another model")
        values[name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array, dtype=dtype))
    if not values:
        raise EdgeftError(f"{tune_dir}: none of its LoRA weights matches an input of {base_graph}")
    write_adapter(values, Path(path))
    return {"lora_r": config["r"], "lora_alpha": config["lora_alpha"], "modules": len(values) // 2,
            "parameters": int(sum(v.numpy().size for v in values.values())), "dtype": dtype}


def _lora_branch(add, producers: dict, inputs: set) -> tuple | None:
    """(lora_A MatMul, lora_B MatMul, the base output) of a `lora/Add` node, if it is one."""
    b = next((producers.get(i) for i in add.input if i in producers and producers[i].name.endswith("/lora_B/MatMul")), None)
    a = producers.get(b.input[0]) if b is not None else None
    if a is None or not a.name.endswith("/lora_A/MatMul") or a.input[1] not in inputs or b.input[1] not in inputs:
        return None
    return a, b, next(i for i in add.input if i != b.output[0])


def fuse_lora(model) -> int:
    """The LoRA paths of projections packed into one MatMulNBits (q, k, v; gate, up) become one path:
    one MatMul by the members' A matrices side by side, one by their B matrices block-diagonal, one Add
    before the packed output's Split. A decode step then runs 8 small MatMuls a layer instead of 14.
    The fused inputs name their members; the runtime builds their values from the adapter file's
    per-projection matrices (runtime/adapters.py). Edits `model` in place; returns the groups fused."""
    from onnx import TensorProto, helper

    nodes = list(model.graph.node)
    producers = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_inputs = {i.name: i for i in model.graph.input}
    inits = {i.name: i for i in model.graph.initializer}
    fused = 0
    for split in [n for n in nodes if n.op_type == "Split" and n.name.endswith("/packed/Split")]:
        adds = [consumers.get(o, []) for o in split.output]
        if not all(len(c) == 1 and c[0].name.endswith("/lora/Add") for c in adds):
            continue
        branches = [_lora_branch(c[0], producers, set(graph_inputs)) for c in adds]
        if None in branches or len({a.input[0] for a, _, _ in branches}) != 1:
            continue
        _fuse_group(model, split, [c[0] for c in adds], branches, graph_inputs, inits, helper, TensorProto)
        fused += 1
    return fused


def _fuse_group(model, split, adds, branches, graph_inputs, inits, helper, TensorProto) -> None:
    members = [a.input[1] for a, _, _ in branches]  # model.layers.0.attn.q_proj.lora_A.MatMul.weight, ...
    prefix = members[0].rsplit(".", 4)[0]  # model.layers.0.attn
    names = FUSED.join(m.rsplit(".", 4)[1] for m in members)  # q_proj+k_proj+v_proj
    fused_a, fused_b = f"{prefix}.{names}.lora_A.MatMul.weight", f"{prefix}.{names}.lora_B.MatMul.weight"
    rows = graph_inputs[members[0]].type.tensor_type.shape.dim[0].dim_value
    cols = sum(graph_inputs[b.input[1]].type.tensor_type.shape.dim[1].dim_value for _, b, _ in branches)
    base = split.name.removesuffix("/Split")
    x, packed = branches[0][0].input[0], split.input[0]
    new = [helper.make_node("MatMul", [x, fused_a], [base + "/lora_A/output"], name=base + "/lora_A/MatMul"),
           helper.make_node("MatMul", [base + "/lora_A/output", fused_b], [base + "/lora_B/output"],
                            name=base + "/lora_B/MatMul"),
           helper.make_node("Add", [packed, base + "/lora_B/output"], [base + "/lora/output"], name=base + "/lora/Add")]
    split.input[0] = base + "/lora/output"
    split.output[:] = [add.output[0] for add in adds]  # the Split now gives what the per-projection Adds gave
    for (a, b, _), add in zip(branches, adds):
        for node in (a, b, add):
            model.graph.node.remove(node)
        for name in (a.input[1], b.input[1]):
            model.graph.input.remove(graph_inputs[name])
            model.graph.initializer.remove(inits[name])
    at = list(model.graph.node).index(split)
    for node in reversed(new):
        model.graph.node.insert(at, node)
    for name, shape in ((fused_a, [rows, RANK]), (fused_b, [RANK, cols])):
        model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        empty = [rows, 0] if shape[0] == rows else [0, cols]
        model.graph.initializer.append(helper.make_tensor(name, TensorProto.FLOAT, empty, []))


def copy_adapter(src: Path, dst: Path, dtype: str = "float16") -> None:
    """An adapter file at another precision (an adapter bundle ships fp16: half the bytes; the runtime
    widens it to the graph's fp32 at load)."""
    import numpy as np
    import onnxruntime as ort

    values = ort.AdapterFormat.read_adapter(str(src)).get_parameters()
    write_adapter({n: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v.numpy(), dtype=dtype))
                   for n, v in values.items()}, Path(dst))
