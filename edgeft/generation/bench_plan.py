"""The generator bench: exact match and answer perplexity on held-out chats (the same token ids
for every model), then time to first token, prefill and decode speed at batch 1, against the
memory-bandwidth ceiling of decoding. The base model is scored too (quality only): what the
fine-tune bought."""
from __future__ import annotations

import json
from pathlib import Path

from edgeft.benchkit.ledger import build_ledger, trained_model
from edgeft.benchkit.plan import BenchPlan, BenchResults
from edgeft.core.artifacts import Manifest, find_in_lineage, model_bytes
from edgeft.core.metrics import exact_match, normalize_answer, perplexity
from edgeft.core.splits import load_split
from edgeft.generation.chat import encode_chat, speed_prompt
from edgeft.generation.runners import RUNNER_ORT, RUNNER_TORCH, RUNNER_TRAINED
from edgeft.runtime.files import GENERATION_FILE, GGUF_FILE, HF_CONFIG_FILE, ONNX_FILE, SAFETENSORS_SUFFIX
from edgeft.runtime.generator import choose_prompt_graph
from edgeft.runtime.report import Decode, Row, example_text, rows_of
from edgeft.runtime.stats import memory_bandwidth


def bench_plan(recipe, variants: list, data_dir: Path) -> BenchPlan:
    from edgeft.generation.models import load_tokenizer

    cfg = recipe.bench
    merged = next((v for v in variants if v[2].stage == "merge"), None)
    base_dir = find_in_lineage(variants[0][2], "base_model")
    trained = trained_model(variants)  # the ledger's first step: scored, not timed
    models = [("base-fp32", base_dir, Manifest(stage="base", format="pytorch"))] + ([trained] if trained else [])
    models += list(variants)
    # the very same token ids for every model: prompts and answers, and a real-text speed prompt
    tokenizer = load_tokenizer(merged[1] if merged else base_dir)
    test = load_split(data_dir, "test")[:cfg.max_test_samples]
    encoded = [encode_chat(tokenizer, r["messages"], recipe.data.max_length) for r in test]
    prompts, answers = [full[:n] for full, n in encoded], [full[n:] for full, n in encoded]
    prompt = speed_prompt(tokenizer, test, cfg.prompt_tokens)
    top = max(cfg.threads)
    specs = {f"{name}@{t}": {"runner": RUNNER_TRAINED if m.stage == "tune" else RUNNER_TORCH
                             if m.format == "pytorch" else RUNNER_ORT, "folder": str(p), "threads": t}
             for name, p, m in models for t in cfg.threads if m.stage not in ("base", "tune") or t == top}
    timed = [key for key in specs if not key.startswith(("base-", "trained@"))]
    bandwidth = {t: memory_bandwidth(t) for t in cfg.threads}

    def score(name: str, reply: dict) -> dict:
        said = [tokenizer.decode(p, skip_special_tokens=True).strip() for p in reply["predictions"]]
        answers = [r["answer"] for r in test]
        return {"exact_match": exact_match(answers, said),
                "correct": [normalize_answer(a) == normalize_answer(s) for a, s in zip(answers, said)],
                "answer_nll": reply["nll"] / max(reply["tokens"], 1),
                "answer_perplexity": perplexity(reply["nll"], reply["tokens"]), "said": said, "first": reply["first"]}

    def build(results: BenchResults) -> dict:
        context = len(prompt) + cfg.new_tokens // 2
        rows = [model_row(m, cfg, results, bandwidth, len(prompt), context, test) for m in models]
        add_retention(rows)
        return {
            "test_examples": len(test), "variants": [r.to_json() for r in rows], "quality_metric": "exact_match",
            "timed": (f"greedy decoding at batch 1: time to first token = prefill of a {len(prompt)}-token "
                      f"prompt + argmax; then {cfg.new_tokens - 1} decode steps, each a model call + argmax; "
                      "tokenization and detokenization excluded; each model in its own process, interleaved over "
                      f"{cfg.rounds} rounds"),
            "quality": f"exact match of the greedy answer (at most {cfg.max_new_tokens_eval} tokens) on {len(test)} "
                       "held-out chats; NLL/perplexity of the reference answer tokens (teacher forced)",
            "memory_bandwidth_gb_s": {str(t): b / 1e9 for t, b in bandwidth.items()},
            "ledger": build_ledger([m for m in models if m[2].stage != "base"], results.quality, "exact_match")}

    evaluate = ("evaluate", {"prompts": prompts, "answers": answers, "max_new_tokens": cfg.max_new_tokens_eval})
    return BenchPlan(models=models, specs=specs, score=score, build=build,
                     quality={name: (f"{name}@{top}", evaluate) for name, _, _ in models},
                     warmup={key: ("speed", {"prompt": prompt, "new_tokens": 2}) for key in timed},
                     speed={key: [("speed", {"prompt": prompt, "new_tokens": cfg.new_tokens})] for key in timed},
                     summary=f"{len(models)} models, threads {cfg.threads}, {len(test)} test chats, "
                             f"speed prompt {len(prompt)} + {cfg.new_tokens} tokens")


def model_row(model: tuple, cfg, results: BenchResults, bandwidth: dict, prompt_tokens: int, context: int,
              test: list[dict]) -> Row:
    name, path, manifest = model
    row = Row(name, manifest.format or "onnx", manifest.stage, model_bytes(path), path=str(path))
    if row.format == "onnx":  # the graph this CPU's prompts ran (model.prefill.avx512.onnx needs AVX-512)
        row.prompt_graph_file = choose_prompt_graph(path).name
    if name in results.failed:
        row.error = results.failed[name]
        return row
    metrics = dict(results.quality[name])
    said, row.correct, _ = metrics.pop("said"), metrics.pop("correct"), metrics.pop("first")
    row.metrics, row.predictions = metrics, said
    row.examples = [{"question": example_text(r), "expected": r["answer"], "said": s} for r, s in list(zip(test, said))[:5]]
    for t in cfg.threads:
        key = f"{name}@{t}"
        row.peak_rss_bytes[str(t)] = results.peaks.get(key, 0)
        runs = [replies[0] for replies in results.timings.get(key, [])]
        if runs:
            row.decode.append(Decode.of(runs, t, prompt_tokens, cfg.new_tokens, bandwidth[t],
                                        bytes_per_token(path, row.format, context)))
    return row


def add_retention(rows: list[Row]) -> None:
    """How much of the fine-tune's gain over the base model each model keeps."""
    by_name = {r.name: r for r in rows if r.error is None}
    if "base-fp32" not in by_name or "pytorch-fp32" not in by_name:
        return
    base_em, merged_em = (by_name[n].metrics["exact_match"] for n in ("base-fp32", "pytorch-fp32"))
    if merged_em != base_em:
        for row in by_name.values():
            row.metrics["fine_tune_retention"] = (row.metrics["exact_match"] - base_em) / (merged_em - base_em)


def view(report: dict) -> tuple[dict, dict]:
    """The report's table (for the screen, Markdown and HTML) and its plot: exact match against decode ms/token."""
    rows, top = rows_of(report), max(report["threads"])
    points = [{"name": r.name, "x": r.speed_at(top).ms_per_token_p50, "y": r.metrics["exact_match"]}
              for r in rows if r.speed_at(top)]
    return table(rows, top), {"xlabel": f"decode ms/token (p50), {top} threads", "ylabel": "exact match",
                              "points": points}


def table(rows: list[Row], top: int) -> dict:
    headers = ["variant", "format", "size MiB", "exact match", "retention", "answer ppl", f"TTFT ms @{top}t",
               "prefill tok/s", "decode tok/s (min-max)", "ms/token p50/p90", "% of ceiling", "peak RSS MiB"]
    lines = []
    for r in rows:
        if r.error is not None:
            lines.append([r.name, r.format, f"{r.size_bytes / 2**20:.1f}", f"failed: {r.error}"])
            continue
        m = r.metrics
        retention = m.get("fine_tune_retention")
        line = [r.name, r.format, f"{r.size_bytes / 2**20:.1f}", f"{m['exact_match']:.3f}",
                f"{retention:.2f}" if retention is not None else "-", f"{m['answer_perplexity']:.2f}"]
        d = r.speed_at(top)
        if d:
            line += [f"{d.ttft_ms.median:.0f}", f"{d.prefill_tokens_per_s.median:.0f}",
                     f"{d.decode_tokens_per_s.median:.1f} ({d.decode_tokens_per_s.min:.1f}-{d.decode_tokens_per_s.max:.1f})",
                     f"{d.ms_per_token_p50:.1f}/{d.ms_per_token_p90:.1f}",
                     f"{100 * d.fraction_of_ceiling:.0f}%" if d.fraction_of_ceiling else "-"]
        else:
            line += ["-"] * 5
        peak = max(r.peak_rss_bytes.values()) if r.peak_rss_bytes else 0
        line.append(f"{peak / 2**20:.0f}" if peak else "-")
        lines.append(line)
    return {"headers": headers, "rows": lines}


def hf_kv_shape(config: dict) -> tuple[int, int, int]:
    """Layers, KV heads and head size from a Hugging Face config."""
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return config["num_hidden_layers"], config.get("num_key_value_heads", config["num_attention_heads"]), head_dim


def bytes_per_token(folder: Path, fmt: str, context: int) -> int:
    """Bytes a decode step must read: every weight (an embedding table only when the LM head reads
    it too; a lookup touches one row) plus the KV cache at `context` tokens (fp32 or int8; llama.cpp's f16)."""
    folder = Path(folder)
    if fmt in ("pytorch", "gguf"):
        config = json.loads((folder / HF_CONFIG_FILE).read_text())
        layers, kv_heads, head_dim = hf_kv_shape(config)
        if fmt == "gguf":  # the whole file (an untied embedding too: a small overestimate)
            return int((folder / GGUF_FILE).stat().st_size + 2 * layers * kv_heads * head_dim * 2 * context)
        weights = sum(p.stat().st_size for p in folder.glob("*" + SAFETENSORS_SUFFIX))
        if not config.get("tie_word_embeddings", False):
            weights -= config["vocab_size"] * config["hidden_size"] * 4
        return int(weights + 2 * layers * kv_heads * head_dim * 4 * context)
    import onnx
    model = onnx.load(str(folder / ONNX_FILE), load_external_data=False)
    sizes = {}
    for init in model.graph.initializer:
        external = {e.key: e.value for e in init.external_data}
        sizes[init.name] = int(external["length"]) if "length" in external else len(init.raw_data)
    users: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def gathered(name: str) -> bool:  # rows looked up (an embedding, a head shortlist), maybe through a Reshape
        return bool(users.get(name)) and all(n.op_type in ("Gather", "GatherBlockQuantized") or
                                             (n.op_type == "Reshape" and gathered(n.output[0])) for n in users[name])

    # tensors only gathered from are not streamed per token
    weights = sum(size for name, size in sizes.items() if not gathered(name))
    pasts = [i for i in model.graph.input if i.name.startswith("past_key_values")]
    layers = len(pasts) // 2
    dims = pasts[0].type.tensor_type.shape.dim
    kv_heads = dims[1].dim_value
    head_dim = dims[3].dim_value or json.loads((folder / GENERATION_FILE).read_text())["head_dim"]
    itemsize = {onnx.TensorProto.INT8: 1, onnx.TensorProto.FLOAT16: 2}.get(pasts[0].type.tensor_type.elem_type, 4)
    return int(weights + 2 * layers * kv_heads * head_dim * itemsize * context)
