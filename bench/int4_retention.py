"""How much of the fine-tune each 4-bit (and 8-bit) remedy keeps: the first measurement of the
int4-retention issue, on the assistant run's own fine-tuned model and all 500 held-out questions.

    python -m bench.int4_retention [RUN_DIR] [--grid-run DIR] [--only NAME ...]
    (RUN_DIR: the assistant recipe run with `--set tune.base_quant=nf4`, default runs/assistant-trec-smollm2;
    DIR: the recipe as shipped, tune.base_quant int4, default runs/assistant-grid)

Candidates, all from the run's folders: the fp32 genai export (the merged model in ONNX: the
reference), today's int4 (genai builder, RTN, block 32, accuracy level 4, int8 head), and, from the
optimum fp32 export with onnxruntime's MatMulNBitsQuantizer: RTN int4 (int8 head), HQQ int4 (int8
head), GPTQ int4 calibrated on 16 of the recipe's training chats (int8 head), RTN int4 with the
attention value and MLP down projections at int8 (llama.cpp's Q4_K_M rule, not a measured
sensitivity), weight-only int8 (MatMulNBits 8 bits) for everything, and the recipe's own int4
applied to the adapter merged into the dequantized NF4 weights it was trained against; then, through
the genai builder: k-quant, k-quant with llama.cpp's Q4_K_M layer rule at int8, weight-only int8, the
adapter kept unmerged (fp32 LoRA MatMuls beside the int4 base), and the adapter trained on the int4
grid (`tune.base_quant: int4`, the recipe's default now) at fp32, int4 and int8, and int4 with the
decoder layers whose rounding raises the validation loss most at int8 (as many as fit in 110% of
today's size). `--only NAME` measures one
candidate (and the reference) again and merges it into the JSON. Every model
answers the same 500 prompts (the same token ids) greedily through edgeft.runtime, at most 6 tokens;
exact match is paired with the reference (bootstrap interval, McNemar). Speed: a 128-token prompt,
64 greedy tokens, 2 threads, models interleaved over 3 rounds. Writes bench/results/int4_retention.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, ROOT, provenance, write_result
from edgeft.benchkit.paired import paired_drop
from edgeft.core.artifacts import model_bytes
from edgeft.core.metrics import exact_match, normalize_answer
from edgeft.core.splits import load_split
from edgeft.generation.chat import encode_chat, speed_prompt
from edgeft.generation.graph import fold_tied_head, lm_head_node
from edgeft.generation.models import load_tokenizer
from edgeft.generation.runners import OrtGenerator
from edgeft.quantizers.common import copy_sidecar_files
from edgeft.runtime.report import Decode

MAX_ANSWER = 6
BLOCK = 32


def calibration_reader(model, run: Path, samples: int = 16):
    """GPTQ's calibration: the recipe's training chats, whole, through the fp32 graph (empty KV cache)."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader

    tokenizer = load_tokenizer(run / "merge")
    inputs = {i.name: i for i in model.graph.input}
    pasts = [n for n in inputs if n.startswith("past_key_values")]
    dims = inputs[pasts[0]].type.tensor_type.shape.dim
    empty = np.zeros((1, dims[1].dim_value, 0, dims[3].dim_value), dtype=np.float32)
    feeds = []
    for row in load_split(run / "data", "train")[:samples]:
        ids, _ = encode_chat(tokenizer, row["messages"], 96)
        feed = {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
                "position_ids": np.arange(len(ids), dtype=np.int64)[None], **{p: empty for p in pasts}}
        feeds.append({k: v for k, v in feed.items() if k in inputs})

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rewind()

        def get_next(self):
            return next(self.items, None)

        def rewind(self):
            self.items = iter(feeds)

    return Reader()


def quantize(src: Path, dst: Path, algorithm: str, bits: int = 4, int8_nodes=lambda name: False, run=None) -> Path:
    """MatMulNBits weights for every MatMul with a constant weight; the head (and `int8_nodes`) at 8 bits."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer

    dst.mkdir(parents=True)
    copy_sidecar_files(src, dst)
    model = onnx.load(str(src / "model.onnx"))
    fold_tied_head(model)
    head = lm_head_node(model).name
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    eight = [n for n in matmuls if n == head or int8_nodes(n)] if bits == 4 else []
    from onnxruntime.quantization.matmul_nbits_quantizer import GPTQWeightOnlyQuantConfig

    algo = {"hqq": lambda: HQQWeightOnlyQuantConfig(block_size=BLOCK, bits=bits),
            "gptq": lambda: GPTQWeightOnlyQuantConfig(calibration_data_reader=calibration_reader(model, run),
                                                      block_size=BLOCK),
            "rtn": lambda: None}[algorithm]()
    q = MatMulNBitsQuantizer(model, bits=bits, block_size=BLOCK, is_symmetric=True, accuracy_level=4,
                             nodes_to_exclude=eight, op_types_to_quantize=("MatMul",), algo_config=algo)
    q.process()
    model = q.model.model
    if eight:
        q8 = MatMulNBitsQuantizer(model, bits=8, block_size=BLOCK, is_symmetric=True, accuracy_level=4,
                                  nodes_to_include=eight, op_types_to_quantize=("MatMul",))
        q8.process()
        model = q8.model.model
    onnx.save(model, str(dst / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    return dst


def merged_into_nf4(run: Path, out: Path, precision: str = "int4") -> Path:
    """The adapter merged into the dequantized NF4 weights it was trained against (not the original
    fp32 ones), then the recipe's own int4 (genai builder): the issue's first hypothesis."""
    import torch
    from peft import PeftModel

    from edgeft.core.artifacts import lineage_input, read_manifest
    from edgeft.core.recipe import load_recipe
    from edgeft.core.tasks import get_task
    from edgeft.generation.genai import build_genai
    from edgeft.training.qlora import dequantize_4bit_linears, nf4_config

    tuned = read_manifest(run / "tune", stage="tune", verify=False)
    model = get_task("generation").load_model(lineage_input(tuned, "base_model"), [],
                                              quantization_config=nf4_config(False), device_map={"": "cpu"})
    dequantize_4bit_linears(model, torch.float32)
    # now a plain fp32 model holding the NF4 values: let transformers save it as one
    model.is_quantized, model.hf_quantizer = False, None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    merged = PeftModel.from_pretrained(model, run / "tune").merge_and_unload().eval()
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    hf = out.parent / f"{out.name}-hf"
    merged.save_pretrained(hf, safe_serialization=True)
    load_tokenizer(run / "merge").save_pretrained(hf)
    out.mkdir(parents=True)
    variant = next(v for v in load_recipe("assistant-trec-smollm2").quantize.variants if v.name == "int4")
    build_genai(hf, out, precision=precision, variant=variant if precision == "int4" else None)
    shutil.copy(run / "quantize/int4/generation.json", out / "generation.json")
    return out


def builder_variant(src: Path, out: Path, run: Path, method: str = "int4", algorithm: str = "rtn", extra=()) -> Path:
    """A variant built by edgeft's genai path (the recipes' own), with `extra` builder options."""
    from edgeft.generation.genai import build_genai
    from edgeft.generation.weight_only import GenaiWeightOnly

    variant = GenaiWeightOnly(name=out.name, method=method, source="genai", algorithm=algorithm, accuracy_level=4)
    out.mkdir(parents=True)
    build_genai(src, out, precision=f"int{variant.bits}", variant=variant, extra=extra)
    shutil.copy(run / "quantize/int4/generation.json", out / "generation.json")
    return out


def unmerged(run: Path, out: Path) -> Path:
    """The base at int4 (rtn, int8 head) with the run's LoRA A/B kept in fp32 as MatMuls beside it."""
    from edgeft.generation.adapters import lora_node_names

    base = ROOT / json.loads((run / "tune/adapter_config.json").read_text())["base_model_name_or_path"]
    layers = json.loads((base / "config.json").read_text())["num_hidden_layers"]
    excluded = ",".join(lora_node_names(layers))
    return builder_variant(base, out, run, extra=(f"adapter_path={run / 'tune'}", f"nodes_to_exclude={excluded}"))


def grid_candidates(run: Path, grid: Path, tmp: Path) -> dict[str, Path]:
    """The issue's later candidates: k-quant, llama.cpp's layer rule, weight-only int8 through the
    genai builder, the adapter unmerged, and the adapter trained on the int4 grid (tune.base_quant)."""
    merged = run / "merge"
    return {
        "int4 k_quant (genai builder), int8 head": lambda: builder_variant(merged, tmp / "kq", run, algorithm="k_quant"),
        "int4 k_quant, Q4_K_M layer rule at int8 (genai mixed_layers)": lambda: builder_variant(
            merged, tmp / "kqm", run, algorithm="k_quant", extra=("matmul_mixed_precision=last_matmul:int8,mixed_layers:int8",)),
        "int8 weight-only (genai builder, int8 shared embedding)": lambda: builder_variant(
            merged, tmp / "i8", run, method="int8-weights"),
        "unmerged: int4 base + fp32 LoRA (NF4-trained adapter)": lambda: unmerged(run, tmp / "um"),
        "unmerged: int4 base + fp32 LoRA (int4-grid-trained adapter)": lambda: unmerged(grid, tmp / "umg"),
        "fp32 of the int4-grid-trained adapter (genai export)": lambda: grid / "export-genai",
        "int4 of the int4-grid-trained adapter (tune.base_quant: int4; shipped)": lambda: grid / "quantize/int4",
        "int8 weight-only of the int4-grid-trained adapter": lambda: grid / "quantize/int8",
        "int4, the most sensitive layers (measured on validation) at int8, within 110% of the size":
            lambda: sensitive_int8(run, tmp / "sens"),
    }


def sensitive_layers(run: Path, extra_mib: float) -> list[int]:
    """Measured sensitivity: each decoder layer of the merged fp32 model alone put on the int4 grid,
    the answers' NLL on 64 validation chats against fp32; the most sensitive layers whose move from int4 to
    int8 (half a byte per weight more) fits `extra_mib`."""
    import torch

    from edgeft.core.splits import load_labels
    from edgeft.core.tasks import get_task
    from edgeft.training.grid import grid_linears, put_on_grid

    task = get_task("generation")
    model = task.load_model(run / "merge", []).eval()
    examples = task.examples(load_split(run / "data", "validation")[:64], load_tokenizer(run / "merge"), 96, [])
    label_info = load_labels(run / "data")
    reference = task.evaluate(model, examples, 16, label_info)["loss"]
    scores = {}
    for i, layer in enumerate(model.model.layers):
        saved = {n: m.weight.detach().clone() for n, m in grid_linears(layer).items()}
        put_on_grid(layer)  # a decoder layer has no output embedding: its linears only
        scores[i] = task.evaluate(model, examples, 16, label_info)["loss"] - reference
        with torch.no_grad():
            for n, m in grid_linears(layer).items():
                m.weight.copy_(saved[n])
    per_layer = sum(m.weight.numel() for m in grid_linears(model.model.layers[0]).values()) * 0.5 / 2**20
    ranked = sorted(scores, key=scores.get, reverse=True)
    chosen = ranked[:int(extra_mib // per_layer)]
    print(f"sensitivity (validation NLL increase, layer: value): {', '.join(f'{i}: {scores[i]:.4f}' for i in ranked[:8])}; "
          f"int8 for layers {sorted(chosen)} ({len(chosen)} x {per_layer:.1f} MiB)", flush=True)
    return sorted(chosen)


def sensitive_int8(run: Path, out: Path, extra_mib: float = 9.6) -> Path:
    """The recipe's int4 with the measured most sensitive layers at int8 instead, within the size
    budget (110% of today's 96 MiB): the builder leaves those layers float, a second pass makes them int8."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    layers = sensitive_layers(run, extra_mib)
    keep = [f"/model/layers.{i}/{p}/MatMul" for i in layers
            for p in ("attn/qkv_proj", "attn/o_proj", "mlp/gate_proj", "mlp/up_proj", "mlp/down_proj")]
    builder_variant(run / "merge", out, run, extra=(f"nodes_to_exclude={','.join(keep)}",))
    model = onnx.load(str(out / "model.onnx"))
    q8 = MatMulNBitsQuantizer(model, bits=8, block_size=BLOCK, is_symmetric=True, accuracy_level=4,
                              nodes_to_include=keep, op_types_to_quantize=("MatMul",))
    q8.process()
    for f in ("model.onnx", "model.onnx.data"):
        (out / f).unlink()
    onnx.save(q8.model.model, str(out / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    return out


def candidates(run: Path, tmp: Path, only: list[str], grid: Path | None = None) -> dict[str, Path]:
    optimum = run / "export-optimum"
    q4km_rule = lambda name: "v_proj" in name or "down_proj" in name  # noqa: E731
    made = {"fp32 (genai export; reference)": run / "export-genai"}
    today = "int4 today (genai builder RTN, acc 4, int8 head)"
    if not only or today in only:
        made[today] = run / "quantize/int4"
    recipes = {"int4 RTN (optimum graph, int8 head)": dict(algorithm="rtn"),
               "int4 HQQ (int8 head)": dict(algorithm="hqq"),
               "int4 RTN, v_proj+down_proj int8 (Q4_K_M rule)": dict(algorithm="rtn", int8_nodes=q4km_rule),
               "int8 weight-only (MatMulNBits 8 bits)": dict(algorithm="rtn", bits=8),
               "int4 GPTQ (16 training chats), int8 head": dict(algorithm="gptq", run=run)}
    for precision, nf4 in (("fp32", "fp32 of the adapter merged into dequantized NF4 (genai export)"),
                           ("int4", "int4 today's recipe on the adapter merged into dequantized NF4")):
        if not only or nf4 in only:
            made[nf4] = merged_into_nf4(run, tmp / f"nf4-{precision}", precision)
    for name, build in (grid_candidates(run, grid, tmp) if grid else {}).items():
        if not only or name in only:
            made[name] = build()
    for i, (name, kwargs) in enumerate(recipes.items()):
        if only and name not in only:
            continue
        start = time.perf_counter()
        made[name] = quantize(optimum, tmp / f"c{i}", **kwargs)
        print(f"quantized {name} in {time.perf_counter() - start:.0f} s", flush=True)
    return made


def evaluate(models: dict[str, Path], run: Path, args) -> dict:
    """Every candidate's answers to the same prompts (token ids), then speed rounds, interleaved."""
    tokenizer = load_tokenizer(run / "merge")
    test = load_split(run / "data", "test")[:args.questions]
    encoded = [encode_chat(tokenizer, r["messages"], 96) for r in test]  # the assistant recipe's max_length
    prompts, answers = [f[:n] for f, n in encoded], [f[n:] for f, n in encoded]
    prompt = speed_prompt(tokenizer, load_split(run / "data", "test"), args.prompt_tokens, "--prompt-tokens")
    results = {}
    for name, folder in models.items():
        start = time.perf_counter()
        reply = OrtGenerator(folder, args.threads).evaluate(prompts, answers, MAX_ANSWER)
        said = [tokenizer.decode(p, skip_special_tokens=True).strip() for p in reply["predictions"]]
        results[name] = {"size_mib": model_bytes(folder) / 2**20, "exact_match": exact_match([r["answer"] for r in test], said),
                         "correct": [normalize_answer(r["answer"]) == normalize_answer(s) for r, s in zip(test, said)],
                         "eval_seconds": time.perf_counter() - start, "runs": []}
        print(f"{name}: exact match {results[name]['exact_match']:.3f}", flush=True)
    runners = {name: OrtGenerator(folder, args.threads) for name, folder in models.items()}
    for runner in runners.values():
        runner.speed(prompt, 2)
    for _ in range(args.rounds):
        for name, runner in runners.items():
            results[name]["runs"].append(runner.speed(prompt, args.new_tokens))
    return results


def summarize(results: dict, args) -> dict:
    ref_name = next(iter(results))
    ref = results[ref_name]
    rows = {}
    for name, r in results.items():
        speed = dataclasses.asdict(Decode.of(r.pop("runs"), args.threads, args.prompt_tokens, args.new_tokens))
        drop = paired_drop(ref["correct"], r["correct"]).to_dict()
        kept = r["exact_match"] / ref["exact_match"] if ref["exact_match"] else None  # a tiny model may score 0
        rows[name] = {**{k: v for k, v in r.items() if k != "correct"}, "retention": kept,
                      "drop_vs_reference_pts": drop, "decode_tokens_per_s": speed["decode_tokens_per_s"],
                      "prefill_tokens_per_s": speed["prefill_tokens_per_s"], "ttft_ms": speed["ttft_ms"]}
        d, kept = speed["decode_tokens_per_s"], "-" if kept is None else f"{kept:.3f}"
        print(f"{name:52} EM {r['exact_match']:.3f} (retention {kept}; {-drop['points']:+.1f} pts, "
              f"{-drop['high']:+.1f} to {-drop['low']:+.1f}) {r['size_mib']:.0f} MiB, decode {d['median']:.1f} "
              f"({d['min']:.1f}-{d['max']:.1f}) tok/s, prefill {speed['prefill_tokens_per_s']['median']:.0f} tok/s")
    return {"run": str(args.run), "questions": len(ref["correct"]), "reference": ref_name, "threads": args.threads,
            "rounds": args.rounds, "max_answer_tokens": MAX_ANSWER, "block_size": BLOCK, "candidates": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.int4_retention", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, default=ROOT / "runs/assistant-trec-smollm2")
    parser.add_argument("--only", action="append", default=[],
                        help="measure only this candidate (and the reference), adding it to the JSON")
    parser.add_argument("--grid-run", type=Path, default=ROOT / "runs/assistant-grid",
                        help="the same recipe run with tune.base_quant: int4 (edgeft run -o runs/assistant-grid)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--questions", type=int, default=None, help="only the first N held-out questions (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS / "int4_retention.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgeft-retention-") as tmp:
        models = candidates(args.run, Path(tmp), args.only, args.grid_run if args.grid_run.exists() else None)
        out = summarize(evaluate(models, args.run, args), args)
    if args.only and args.out.exists():  # --only: the other candidates stay as they were measured
        earlier = json.loads(args.out.read_text())
        out["candidates"] = {**earlier["candidates"], **out["candidates"]}
        out["commands"] = [*earlier.get("commands", [earlier["command"]]), provenance("int4_retention", argv)["command"]]
    return write_result(args.out, "int4_retention", argv, out)


if __name__ == "__main__":
    main()
