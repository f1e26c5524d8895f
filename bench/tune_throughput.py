"""QLoRA training throughput and peak memory: the plain peft + bitsandbytes recipe against edgeft's
tune modes, on realistic shapes built from configs (random weights: speed does not depend on them).

    python -m bench.tune_throughput            # GPU: Qwen2.5-0.5B and Llama-3.2-1B shapes, batch 8 x 1024
                                               # CPU: the SmolLM2-135M shape, batch 2 x 256
    python -m bench.tune_throughput --shapes qwen2.5-0.5b --modes plain dequantized

Every (shape, mode) runs in a fresh process, from the same NF4 weights (quantized once from the
same random init), on the same token batches with the same seed: tokens/s after warm-up, peak
memory (GPU: torch.cuda.max_memory_allocated; CPU: the process's VmHWM), and the loss of every
step, which must match the plain recipe's. Writes bench/results/tune_throughput_<device>.json.

plain: NF4 + prepare_model_for_kbit_training (fp32 upcasts) + gradient checkpointing (GPU) +
sdpa + paged 8-bit AdamW (GPU). edgeft modes: see edgeft/training/qlora.py (dequantized: NF4 weights
dequantized once to bf16; 4bit: weights stay NF4; both without the fp32 upcasts, with fused
linear cross-entropy where liger-kernel is installed, reentrant checkpointing on GPU).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, ROOT, write_result


def shapes():
    from transformers import LlamaConfig, Qwen2Config

    return {
        "qwen2.5-0.5b": lambda: Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                            num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                            tie_word_embeddings=True, max_position_embeddings=4096),
        "llama3.2-1b": lambda: LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                           num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                           tie_word_embeddings=True, max_position_embeddings=4096),
        "smollm2-135m": lambda: LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                            num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                            tie_word_embeddings=True, max_position_embeddings=2048),
        "tiny": lambda: LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True,
                                    max_position_embeddings=256),  # the smoke test's
    }


def peak_memory(device: str) -> float:
    import torch
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    from edgeft.benchkit.workers import peak_rss_bytes
    return peak_rss_bytes() / 2**30


def run_one(shape: str, mode: str, folder: str, batch: int, seq: int, steps: int, warmup: int) -> dict:
    """One measurement, in this (fresh) process."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from edgeft.training.qlora import fused_cross_entropy, nf4_config, prepare_base

    device = "cuda" if torch.cuda.is_available() else "cpu"
    compute = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=nf4_config(device == "cuda"),
                                                 dtype=compute,
                                                 attn_implementation="sdpa",
                                                 device_map={"": 0} if device == "cuda" else {"": "cpu"})
    checkpointing = device == "cuda"
    info = prepare_base(model, mode, device, checkpointing)
    fused = mode != "plain" and fused_cross_entropy(model)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    if device == "cuda":
        import bitsandbytes as bnb
        optimizer = bnb.optim.PagedAdamW8bit(params, lr=2e-4)
        torch.cuda.reset_peak_memory_stats()
    else:
        optimizer = torch.optim.AdamW(params, lr=2e-4)
    generator = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    batches = [torch.randint(0, vocab, (batch, seq), generator=generator) for _ in range(4)]
    torch.manual_seed(0)
    model.train()
    losses, start = [], None
    for i in range(warmup + steps):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        ids = batches[i % len(batches)].to(device)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"shape": shape, "mode": mode, "device": device, "batch": batch, "seq": seq, "steps": steps,
            "tokens_per_s": steps * batch * seq / seconds, "step_s": seconds / steps, "peak_gib": peak_memory(device),
            "losses": losses, "fused_cross_entropy": fused, "checkpointing": checkpointing, **info,
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None}


def measure(plan_shapes: list[str], modes: list[str], batch: int, seq: int, steps: int, warmup: int) -> list[dict]:
    """Every (shape, mode) in a fresh process, from the same random init."""
    import torch
    from transformers import AutoModelForCausalLM

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in plan_shapes:
            folder = Path(tmp) / shape
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(shapes()[shape](), dtype=torch.bfloat16).save_pretrained(folder)
            for mode in modes:
                done = subprocess.run([sys.executable, "-m", "bench.tune_throughput", "--one", shape, mode, str(folder),
                                       str(batch), str(seq), str(steps), str(warmup)], capture_output=True, text=True,
                                      cwd=ROOT)
                if done.returncode != 0:
                    results.append({"shape": shape, "mode": mode, "error": done.stderr.strip().splitlines()[-1][:300]})
                else:
                    results.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps({k: v for k, v in results[-1].items() if k != "losses"}), flush=True)
    return results


def against_plain(results: list[dict], plan_shapes: list[str]) -> dict:
    ratios = {}
    for shape in plan_shapes:
        plain = next((r for r in results if r["shape"] == shape and r["mode"] == "plain" and "error" not in r), None)
        for r in results:
            if r["shape"] != shape or "error" in r or plain is None or r is plain:
                continue
            drift = max(abs(a - b) / abs(a) for a, b in zip(plain["losses"], r["losses"]))
            ratios[f"{shape}/{r['mode']}"] = {"speedup": r["tokens_per_s"] / plain["tokens_per_s"],
                                              "memory_fraction": r["peak_gib"] / plain["peak_gib"],
                                              "max_relative_loss_difference": drift}
    return ratios


def main(argv: list[str] | None = None) -> dict | None:
    import torch

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one"]:
        print(json.dumps(run_one(*argv[1:4], *map(int, argv[4:8]))))
        return None
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(prog="python -m bench.tune_throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["qwen2.5-0.5b", "llama3.2-1b"] if cuda else ["smollm2-135m"],
                        choices=list(shapes()))
    parser.add_argument("--modes", nargs="+", default=["plain", "dequantized", "4bit"])
    parser.add_argument("--batch", type=int, default=8 if cuda else 2)
    parser.add_argument("--seq", type=int, default=1024 if cuda else 256)
    parser.add_argument("--steps", type=int, default=8 if cuda else 4)
    parser.add_argument("--warmup", type=int, default=3 if cuda else 1)
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/tune_throughput_<device>.json")
    args = parser.parse_args(argv)
    device = "cuda" if cuda else "cpu"
    results = measure(args.shapes, args.modes, args.batch, args.seq, args.steps, args.warmup)
    ratios = against_plain(results, args.shapes)
    for r in results:
        ratio = ratios.get(f"{r['shape']}/{r['mode']}")
        shown = "ERROR " + r["error"] if "error" in r else f"{r['tokens_per_s']:9.0f} tok/s {r['peak_gib']:6.2f} GiB"
        print(f"{r['shape']:14} {r['mode']:12} {shown}" + (f"  {ratio['speedup']:.2f}x plain" if ratio else ""))
    return write_result(args.out or RESULTS / f"tune_throughput_{device}.json", "tune_throughput", argv, {
        "device": device, "batch": args.batch, "seq": args.seq, "steps": args.steps, "warmup": args.warmup,
        "results": results, "ratios": ratios})


if __name__ == "__main__":
    main()
