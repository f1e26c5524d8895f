"""The shipped int4 model's weight grid, for training: `tune.base_quant: int4`.

Why: QLoRA trains the adapter against the NF4 base. edgeft then merges it into the original fp32
weights and rounds the sum to onnxruntime's int4 grid (MatMulNBits, round-to-nearest, block 32),
which the adapter never saw: on the assistant recipe, exact match fell from 0.902 (merged fp32) to
0.844 (int4), and neither GPTQ, HQQ, k-quant nor int8 for the sensitive layers won it back
(bench/int4_retention.py). Trained instead against the base *as the int4 variant rounds it*, the
adapter learns to correct that rounding; merged into the original fp32 weights and rounded again
(not into the grid values: onnxruntime's RTN is not idempotent), it keeps 0.918 on the same 500
questions at the same size and speed. Its fp32 merge is worse (0.864): it is an adapter for int4.

The grid values come from onnxruntime itself, not from a re-implementation: every weight goes
through the same `MatMulNBitsQuantizer` (RTN, symmetric, the variant's block size) into a one-node
graph, which then multiplies an identity matrix at accuracy level 0 (fp32 compute), so what comes
out is exactly the dequantized weight the device will hold. Linear layers take the body's bits (4),
the output embedding (the LM head, tied to the input embedding in small models) the head's (8).
`tune.grid_block_size` and `tune.grid_head_bits` choose the grid; the recipe's rtn int4 variants must
ship the same one (checked when the recipe loads).
"""
from __future__ import annotations

GRID_BLOCK_SIZE = 32
HEAD_MODULES = ("pre_classifier", "classifier", "score", "head", "pooler", "lm_head")  # never rounded to the body's 4 bits
GRID_BITS = {"int4": (4, 8)}  # base_quant -> (body bits, head bits), as the recipes' int4 variants ship


def grid_values(weights: dict, bits: int, block_size: int = GRID_BLOCK_SIZE) -> dict:
    """{name: W (K x N float32)} -> the same weights as onnxruntime's MatMulNBits holds them."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer, RTNWeightOnlyQuantConfig

    names = list(weights)
    dims = sorted({weights[n].shape[0] for n in names})
    nodes = [helper.make_node("MatMul", [f"x{weights[n].shape[0]}", f"w{i}"], [f"y{i}"], name=f"m{i}")
             for i, n in enumerate(names)]
    graph = helper.make_graph(
        nodes, "grid", [helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, [k, k]) for k in dims],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(len(names))],
        [numpy_helper.from_array(np.ascontiguousarray(weights[n], dtype=np.float32), f"w{i}") for i, n in enumerate(names)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # per-node bits: RTN's own default is 4 whatever the quantizer is told (the builder does the same)
    rtn = RTNWeightOnlyQuantConfig(customized_weight_config={f"m{i}": {"bits": bits} for i in range(len(names))})
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=True, accuracy_level=0,
                                     op_types_to_quantize=("MatMul",), algo_config=rtn)
    quantizer.process()
    quantized = quantizer.model.model
    if any(n.op_type != "MatMulNBits" for n in quantized.graph.node):
        raise ValueError("onnxruntime left some weights unquantized (shapes it cannot block)")
    session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {f"x{k}": np.eye(k, dtype=np.float32) for k in dims})
    return dict(zip(names, outputs))


def grid_linears(model) -> dict:
    """The Linear layers that the int4 variant rounds to 4 bits: all but the heads."""
    import torch

    return {name: m for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.split(".")[-1] not in HEAD_MODULES}


def put_on_grid(model, base_quant: str = "int4", block_size: int = GRID_BLOCK_SIZE, head_bits: int | None = None) -> dict:
    """Replace the frozen weights of `model` (fp32) by their values on the shipped grid; returns
    what was done, for the tune manifest."""
    import torch

    body_bits, default_head = GRID_BITS[base_quant]
    head_bits = head_bits or default_head
    linears = grid_linears(model)
    on_grid = grid_values({n: m.weight.detach().float().numpy().T for n, m in linears.items()}, body_bits, block_size)
    moved = 0.0
    with torch.no_grad():
        for name, module in linears.items():
            new = torch.from_numpy(on_grid[name].T.copy()).to(module.weight.dtype)
            moved = max(moved, float((new - module.weight).abs().max()))
            module.weight.copy_(new)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is not None:
            rounded = grid_values({"head": head.weight.detach().float().numpy().T}, head_bits, block_size)["head"]
            head.weight.copy_(torch.from_numpy(rounded.T.copy()).to(head.weight.dtype))
    return {"grid": f"onnxruntime MatMulNBits RTN symmetric, block {block_size}", "body_bits": body_bits,
            "head_bits": head_bits if head is not None else None, "grid_linears": len(linears),
            "max_weight_change": round(moved, 6)}
