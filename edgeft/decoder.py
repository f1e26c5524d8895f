"""Decoder-specific work: chat settings for the runtime, LM-head pruning and int4 quantization of
exported graphs, the export parity check, and the generation benchmark.

Timed in the benchmark: what a user waits for, model calls only. Time to first token is the
prefill call plus the argmax; tokenization and detokenization are excluded, sampling is greedy
(an argmax over the logits, included).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from edgeft import EdgeftError
from edgeft.runtime_gen import GENERATION_FILE, PREFILL_FILE

SENTINELS = {"system": "\u2063SYS\u2063", "user": "\u2063USR\u2063", "assistant": "\u2063AST\u2063"}


# --- chat settings ---------------------------------------------------------------------------
def chat_format(tokenizer) -> dict:
    """The chat template as plain prefix/suffix strings per role, so that the device needs no
    template engine. Checked by re-rendering a two-turn conversation both ways."""
    from edgeft.runtime_gen import format_chat

    if not tokenizer.chat_template:
        return {"roles": {r: ["", "\n"] for r in SENTINELS}, "generation_prompt": "", "default_system": ""}
    S, U, A = SENTINELS["system"], SENTINELS["user"], SENTINELS["assistant"]

    def render(messages, gen=False):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    sys_msg, user_msg, asst_msg = ({"role": "system", "content": S}, {"role": "user", "content": U},
                                   {"role": "assistant", "content": A})
    s, su, sua = render([sys_msg]), render([sys_msg, user_msg]), render([sys_msg, user_msg, asst_msg])
    su_gen, u_gen = render([sys_msg, user_msg], True), render([user_msg], True)
    if not (su.startswith(s) and sua.startswith(su) and su_gen.startswith(su)):
        raise EdgeftError("the chat template is not a plain sequence of turns: edgeft cannot flatten it")
    user_part, generation_prompt = su[len(s):], su_gen[len(su):]
    roles = {"system": s.split(S), "user": user_part.split(U), "assistant": sua[len(su):].split(A)}
    tail = user_part + generation_prompt  # what a lone user turn renders to, after any default system turn
    chat = {"roles": roles, "generation_prompt": generation_prompt,
            "default_system": u_gen[:-len(tail)] if u_gen.endswith(tail) else ""}
    probe = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
             {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Who?"}]
    if format_chat(probe, chat) != render(probe, True) or format_chat(probe[1:2], chat) != render(probe[1:2], True):
        raise EdgeftError("the chat template could not be flattened into per-role prefixes and suffixes")
    return chat


def write_generation_settings(tokenizer, folder: Path, config, system_prompt: str | None, head_dim: int) -> dict:
    eos = config.eos_token_id
    settings = {"eos_token_ids": sorted({*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id}),
                "chat": chat_format(tokenizer), "system_prompt": system_prompt, "max_new_tokens": 128,
                "head_dim": head_dim}
    (Path(folder) / GENERATION_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    return settings


# --- graph edits -----------------------------------------------------------------------------
def lm_head_node(model):
    producers = {o: n for n in model.graph.node for o in n.output}
    node = producers.get("logits")
    if node is None or node.op_type not in ("MatMul", "MatMulNBits", "Gemm"):
        raise EdgeftError("cannot find the LM head (a MatMul producing 'logits') in the exported graph")
    return node


def prune_lm_head(path: Path) -> None:
    """Compute logits for the last position only: the head over every prompt token is wasted work
    in generation (PyTorch's generate() does the same)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    head = lm_head_node(model)
    hidden = head.input[0]
    consts = [helper.make_tensor(f"edgeft_prune_{k}", TensorProto.INT64, [1], [v])
              for k, v in (("start", -1), ("end", 2**62), ("axis", 1))]
    model.graph.initializer.extend(consts)
    sliced = hidden + "_last"
    model.graph.node.insert(list(model.graph.node).index(head), helper.make_node(
        "Slice", [hidden, *(c.name for c in consts)], [sliced], name="/edgeft/prune_lm_head/Slice"))
    head.input[0] = sliced
    logits = next(o for o in model.graph.output if o.name == "logits")
    logits.type.tensor_type.shape.dim[1].dim_value = 1
    onnx.save(model, str(path), save_as_external_data=path.stat().st_size > 1.9e9)


def fold_tied_head(model) -> None:
    """optimum exports a tied head as MatMul(hidden, Transpose(embedding)); quantizers skip a
    non-constant B, so the transposed weight becomes an initializer of its own."""
    from onnx import numpy_helper

    head = lm_head_node(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    transpose = producers.get(head.input[1])
    if transpose is None or transpose.op_type != "Transpose":
        return
    inits = {i.name: i for i in model.graph.initializer}
    if transpose.input[0] not in inits:
        return
    weight = numpy_helper.to_array(inits[transpose.input[0]]).T.copy()
    model.graph.initializer.append(numpy_helper.from_array(weight, "lm_head.weight_folded"))
    head.input[1] = "lm_head.weight_folded"
    if not any(transpose.output[0] in n.input for n in model.graph.node if n is not head):
        model.graph.node.remove(transpose)


def quantize_decoder_int4(src: Path, dst: Path, variant) -> dict:
    """MatMulNBits int4 for the body; the LM head at int8 (or int4, or fp32) and, optionally,
    the embedding as GatherBlockQuantized."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(src))
    fold_tied_head(model)
    head = lm_head_node(model).name
    body_exclude = [head] if variant.head_bits != 4 else []
    ops = ("MatMul", "Gather") if variant.embedding_bits == 4 else ("MatMul",)
    q = MatMulNBitsQuantizer(model, bits=4, block_size=variant.block_size, is_symmetric=variant.symmetric,
                             accuracy_level=variant.accuracy_level, nodes_to_exclude=body_exclude,
                             op_types_to_quantize=ops)
    q.process()
    model = q.model.model
    if variant.head_bits == 8:  # the only float MatMul with a constant weight left is the head
        q8 = MatMulNBitsQuantizer(model, bits=8, block_size=variant.block_size, is_symmetric=variant.symmetric,
                                  accuracy_level=variant.accuracy_level, op_types_to_quantize=("MatMul",))
        q8.process()
        model = q8.model.model
    # weights in model.onnx.data: a prefill graph can then share them (write_prefill_graph)
    onnx.save(model, str(dst), save_as_external_data=True, location=dst.name + ".data")
    return {"lm_head_bits": variant.head_bits or 32, "embedding_bits": variant.embedding_bits or 32}


def write_prefill_graph(folder: Path, accuracy_level: int) -> bool:
    """A second graph over the same weights whose MatMulNBits use another accuracy level for the
    prompt; it references the same external data file, so it costs only the graph's bytes."""
    import onnx

    model = onnx.load(str(Path(folder) / "model.onnx"), load_external_data=False)
    changed = 0
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for attr in node.attribute:
                if attr.name == "accuracy_level" and attr.i != accuracy_level:
                    attr.i = accuracy_level
                    changed += 1
    if not changed or not any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer):
        return False
    onnx.save(model, str(Path(folder) / PREFILL_FILE))
    return True


# --- parity ------------------------------------------------------------------------------------
def torch_greedy(model, ids: list[int], new_tokens: int, timings: list | None = None):
    """Last-position logits of the prompt and `new_tokens` greedy tokens (end tokens not honoured);
    `timings` receives the seconds of each model call with its argmax (prefill first)."""
    import torch

    with torch.inference_mode():
        start = time.perf_counter()
        out = model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1)
        tokens = [int(out.logits[0, -1].argmax())]
        if timings is not None:
            timings.append(time.perf_counter() - start)
        first, past = out.logits[0, -1].float().numpy(), out.past_key_values
        while len(tokens) < new_tokens:
            start = time.perf_counter()
            out = model(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            tokens.append(int(out.logits[0, -1].argmax()))
            if timings is not None:
                timings.append(time.perf_counter() - start)
    return first, tokens


def generation_parity(torch_dir: Path, onnx_dir: Path, backend: str, rows: list[dict], new_tokens: int) -> dict:
    from edgeft.batches import encode_prompt
    from edgeft.models import load_model, load_tokenizer
    from edgeft.runtime_gen import Generator

    tokenizer = load_tokenizer(torch_dir, "generation")
    model = load_model(torch_dir, "generation").eval()
    generator = Generator(onnx_dir, verify=False)
    diffs, mismatches, compared = [], 0, 0
    for row in rows[:4]:
        ids = encode_prompt(tokenizer, row["messages"])
        if ids != generator.encode_chat(row["messages"][:-1]):
            raise EdgeftError(f"export ({backend}): the runtime's chat formatting differs from the tokenizer's template")
        reference, tokens = torch_greedy(model, ids, new_tokens)
        logits, _ = generator.prefill(ids)
        diffs.append(float(np.abs(reference - logits).max()))
        onnx_tokens = list(generator.generate_ids(ids, new_tokens, stop=False))
        mismatches += onnx_tokens != tokens
        compared += 1
    return {"max_abs_logit_diff": max(diffs), "prompts": compared, "greedy_tokens": new_tokens,
            "greedy_mismatches": mismatches, "greedy_identical": mismatches == 0}


# --- benchmark runners (one per worker process; see runners.py) -------------------------------
class TorchGenerator:
    """PyTorch fp32 eager: a greedy loop over the model with its KV cache (what generate() runs)."""

    def __init__(self, folder: Path, threads: int):
        import torch

        from edgeft.models import load_model, load_tokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = load_tokenizer(folder, "generation")
        self.model = load_model(folder, "generation").eval()
        self.stop_ids = {self.tokenizer.eos_token_id, *np.atleast_1d(self.model.generation_config.eos_token_id or [])}

    def speed(self, prompt: list[int], new_tokens: int) -> dict:
        times: list[float] = []
        torch_greedy(self.model, prompt, new_tokens, timings=times)
        return {"ttft": times[0], "steps": times[1:]}

    def evaluate(self, prompts: list[list[int]], answers: list[list[int]], max_new_tokens: int,
                 batch_size: int = 16) -> dict:
        """Answer NLL (teacher forced) for every chat; greedy generation only where the teacher-forced
        argmaxes show that greedy decoding would not reproduce the reference answer exactly."""
        torch = self.torch
        from edgeft.batches import answer_scores, chat_batch, left_padded

        pad = self.tokenizer.pad_token_id
        nll, exact = [], []
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                pairs = zip(prompts[start:start + batch_size], answers[start:start + batch_size])
                row_nll, row_exact = answer_scores(self.model, chat_batch([(p + a, len(p)) for p, a in pairs], pad))
                nll += row_nll
                exact += row_exact
            predictions = [strip_stop(a, self.stop_ids) if ok else None for a, ok in zip(answers, exact)]
            misses = [i for i, ok in enumerate(exact) if not ok]
            for start in range(0, len(misses), batch_size):
                chunk = misses[start:start + batch_size]
                ids, mask = left_padded([prompts[i] for i in chunk], pad)
                out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                          do_sample=False, pad_token_id=pad, eos_token_id=list(self.stop_ids))
                for i, row in zip(chunk, out[:, ids.shape[1]:].tolist()):
                    predictions[i] = strip_stop(row, self.stop_ids)
        return {"predictions": predictions, "nll": sum(nll), "tokens": sum(len(a) for a in answers)}


def strip_stop(tokens: list[int], stop_ids) -> list[int]:
    """Tokens up to (without) the first end-of-turn token."""
    cut = next((i for i, t in enumerate(tokens) if t in stop_ids), len(tokens))
    return list(tokens[:cut])


class OrtGenerator:
    """ONNX variants through edgeft.runtime_gen: what the device runs."""

    def __init__(self, folder: Path, threads: int):
        from edgeft.runtime_gen import Generator

        self.generator = Generator(folder, threads, verify=False)

    def speed(self, prompt: list[int], new_tokens: int) -> dict:
        times: list[float] = []
        for _ in self.generator.generate_ids(prompt, new_tokens, stop=False, timings=times):
            pass
        return {"ttft": times[0], "steps": times[1:]}

    def evaluate(self, prompts: list[list[int]], answers: list[list[int]], max_new_tokens: int, **_) -> dict:
        """As TorchGenerator.evaluate, one chat at a time; one prompt pass serves scoring and generation."""
        predictions, nll = [], 0.0
        stop = self.generator.stop_ids
        for prompt, answer in zip(prompts, answers):
            prefilled = self.generator.prefill(prompt)
            loss, exact = self.generator.score_answer(prompt, answer, prefilled=prefilled)
            nll += loss
            predictions.append(strip_stop(answer, stop) if exact else
                               list(self.generator.generate_ids(prompt, max_new_tokens, prefilled=prefilled)))
        return {"predictions": predictions, "nll": nll, "tokens": sum(len(a) for a in answers)}


def memory_bandwidth(threads: int, megabytes: int = 512, repeats: int = 9) -> float:
    """Read bandwidth (bytes/s): `threads` threads each stream a share of a large array through a
    BLAS dot product (no GIL held, one pass over memory); the best of several repeats, as STREAM
    reports, since the ceiling is what the memory can do when nothing else gets in the way."""
    import threading

    data = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    chunks = np.array_split(data, threads)
    rates = []
    for _ in range(repeats):
        workers = [threading.Thread(target=np.dot, args=(c, c)) for c in chunks]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        rates.append(data.nbytes / (time.perf_counter() - start))
    return max(rates)


def bytes_per_token(folder: Path, fmt: str, context: int) -> int:
    """Bytes a decode step must read: every weight (an embedding table only when the LM head reads
    it too; a lookup touches one row) plus the KV cache at `context` tokens."""
    folder = Path(folder)
    if fmt == "pytorch":
        config = json.loads((folder / "config.json").read_text())
        weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        if not config.get("tie_word_embeddings", False):
            weights -= config["vocab_size"] * config["hidden_size"] * 4
        layers, kv_heads = config["num_hidden_layers"], config.get("num_key_value_heads", config["num_attention_heads"])
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    else:
        import onnx
        model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        sizes = {}
        for init in model.graph.initializer:
            external = {e.key: e.value for e in init.external_data}
            sizes[init.name] = int(external["length"]) if "length" in external else len(init.raw_data)
        users: dict[str, set] = {}
        for node in model.graph.node:
            for name in node.input:
                users.setdefault(name, set()).add(node.op_type)
        # tensors only gathered from (embedding rows) are not streamed per token
        weights = sum(size for name, size in sizes.items()
                      if not users.get(name) or not users[name] <= {"Gather", "GatherBlockQuantized"})
        pasts = [i for i in model.graph.input if i.name.startswith("past_key_values")]
        layers = len(pasts) // 2
        dims = pasts[0].type.tensor_type.shape.dim
        kv_heads = dims[1].dim_value
        head_dim = dims[3].dim_value or json.loads((folder / GENERATION_FILE).read_text())["head_dim"]
    return int(weights + 2 * layers * kv_heads * head_dim * 4 * context)


# --- the generation benchmark -------------------------------------------------------------------
def bench_generation(recipe, variants: list, out: Path, *, force: bool = True, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from edgeft.artifacts import (
        find_in_lineage,
        input_ref,
        is_up_to_date,
        library_versions,
        machine_info,
        stage_output,
        write_manifest,
    )
    from edgeft.batches import encode_chat
    from edgeft.bench import model_bytes, percentiles_ms, spread
    from edgeft.data import load_split
    from edgeft.metrics import exact_match, perplexity
    from edgeft.models import load_tokenizer
    from edgeft.report import write_reports
    from edgeft.runners import WorkerPool

    cfg = recipe.bench
    merged = next((v for v in variants if v[2]["stage"] == "merge"), None)
    first = variants[0][2]
    data_dir = find_in_lineage(first, "data")
    base_dir = find_in_lineage(first, "base_model")
    rows = [("base-fp32", base_dir, {"stage": "base", "format": "pytorch"})] + list(variants)
    inputs = [input_ref(name, path, manifest) for name, path, manifest in variants]
    if not force and is_up_to_date(out, inputs, cfg.model_dump(mode="json")):
        return {**json.loads((Path(out) / "report.json").read_text()), "_up_to_date": True}

    # the very same token ids for every variant: prompts and answers, and a real-text speed prompt
    tokenizer = load_tokenizer(merged[1] if merged else base_dir, "generation")
    test = load_split(data_dir, "test")[:cfg.max_test_samples]
    encoded = [encode_chat(tokenizer, r["messages"], recipe.data.max_length) for r in test]
    prompts = [full[:n] for full, n in encoded]
    answers = [full[n:] for full, n in encoded]
    text = " ".join(r["text"] if "text" in r else r["messages"][-2]["content"] for r in test)
    speed_prompt = tokenizer(text, add_special_tokens=False)["input_ids"][:cfg.prompt_tokens]
    if len(speed_prompt) < cfg.prompt_tokens:
        raise EdgeftError(f"bench.prompt_tokens {cfg.prompt_tokens}: the test texts hold only {len(speed_prompt)} tokens")

    top = max(cfg.threads)
    specs = {f"{name}@{t}": {"task": "generation", "format": m.get("format", "onnx"), "folder": str(p), "threads": t}
             for name, p, m in rows for t in cfg.threads if name != "base-fp32" or t == top}
    print(f"bench: {len(rows)} models, threads {cfg.threads}, {len(test)} test chats, "
          f"speed prompt {len(speed_prompt)} + {cfg.new_tokens} tokens", file=sys.stderr)
    bandwidth = {t: memory_bandwidth(t) for t in cfg.threads}
    pool = WorkerPool(specs)
    try:
        quality = {}
        bar = tqdm(total=len(rows) + cfg.rounds * (len(specs) - 1), desc="bench", unit="run", disable=not progress)
        for name, _, _ in rows:
            result = pool.call(f"{name}@{top}", "evaluate", prompts=prompts, answers=answers,
                               max_new_tokens=cfg.max_new_tokens_eval)
            said = [tokenizer.decode(p, skip_special_tokens=True).strip() for p in result["predictions"]]
            quality[name] = {"exact_match": exact_match([r["answer"] for r in test], said),
                             "answer_nll": result["nll"] / max(result["tokens"], 1),
                             "answer_perplexity": perplexity(result["nll"], result["tokens"]),
                             "examples": [{"question": r["messages"][-2]["content"], "expected": r["answer"], "said": s}
                                          for r, s in list(zip(test, said))[:5]]}
            bar.update(1)
        timings = {key: {"ttft": [], "steps": [], "decode_tok_s": []} for key in specs if not key.startswith("base-")}
        for key in timings:  # an untimed warm-up: first calls pay for allocations and lazy setup
            pool.call(key, "speed", prompt=speed_prompt, new_tokens=2)
        for _ in range(cfg.rounds):
            for key in timings:
                run = pool.call(key, "speed", prompt=speed_prompt, new_tokens=cfg.new_tokens)
                timings[key]["ttft"].append(run["ttft"])
                timings[key]["steps"] += run["steps"]
                timings[key]["decode_tok_s"].append(1 / statistics.median(run["steps"]))
                bar.update(1)
                time.sleep(0.05)
        bar.close()
    finally:
        peaks = pool.close()

    base_em = quality["base-fp32"]["exact_match"]
    merged_em = quality["pytorch-fp32"]["exact_match"] if "pytorch-fp32" in quality else None
    report_rows = []
    for name, path, manifest in rows:
        metrics = {k: v for k, v in quality[name].items() if k != "examples"}
        if merged_em is not None and merged_em != base_em:
            metrics["fine_tune_retention"] = (metrics["exact_match"] - base_em) / (merged_em - base_em)
        entry = {"name": name, "format": manifest.get("format", "onnx"), "stage": manifest["stage"], "path": str(path),
                 "size_bytes": model_bytes(path), "metrics": metrics, "examples": quality[name]["examples"],
                 "latency_ms": [], "throughput": [], "peak_rss_bytes": {}}
        context = len(speed_prompt) + cfg.new_tokens // 2
        for t in cfg.threads:
            key = f"{name}@{t}"
            entry["peak_rss_bytes"][str(t)] = peaks.get(key, 0)
            if key not in timings:
                continue
            tm = timings[key]
            per_token = percentiles_ms(tm["steps"])
            decode = spread(tm["decode_tok_s"])
            ceiling = bandwidth[t] / bytes_per_token(path, entry["format"], context)
            entry["latency_ms"].append({
                "threads": t, "batch_size": 1, "prompt_tokens": len(speed_prompt), "new_tokens": cfg.new_tokens,
                "ttft_ms": spread([x * 1000 for x in tm["ttft"]]),
                "prefill_tokens_per_s": spread([len(speed_prompt) / x for x in tm["ttft"]]),
                "decode_tokens_per_s": decode, "ms_per_token_p50": per_token["p50"],
                "ms_per_token_p90": per_token["p90"], "p50": per_token["p50"], "p90": per_token["p90"],
                "p99": per_token["p99"], "decode_ceiling_tokens_per_s": ceiling,
                "decode_fraction_of_ceiling": decode["median"] / ceiling,
                "bandwidth_gb_s": bandwidth[t] / 1e9})
        report_rows.append(entry)
    report = {
        "task": "generation", "recipe": recipe.name, "test_examples": len(test), "threads": cfg.threads,
        "timed": (f"greedy decoding at batch 1: time to first token = prefill of a {len(speed_prompt)}-token prompt "
                  f"+ argmax; then {cfg.new_tokens - 1} decode steps, each a model call + argmax; tokenization and "
                  f"detokenization excluded; each model in its own process, interleaved over {cfg.rounds} rounds"),
        "quality": f"exact match of the greedy answer (at most {cfg.max_new_tokens_eval} tokens) on {len(test)} held-out "
                   "chats; NLL/perplexity of the reference answer tokens (teacher forced)",
        "memory_bandwidth_gb_s": {str(t): b / 1e9 for t, b in bandwidth.items()},
        "machine": machine_info(), "versions": library_versions(), "command": " ".join(sys.argv),
        "variants": report_rows,
    }
    with stage_output(out) as tmp:
        write_reports(report, tmp)
        write_manifest(tmp, stage="bench", task="generation", inputs=inputs, config=cfg.model_dump(mode="json"),
                       metrics={v["name"]: v["metrics"] for v in report_rows})
    return report


def generation_rows(report: dict) -> tuple[list[str], list[list]]:
    top = max(report["threads"])
    headers = ["variant", "format", "size MiB", "exact match", "retention", "answer ppl", f"TTFT ms @{top}t",
               "prefill tok/s", "decode tok/s (min-max)", "ms/token p50/p90", "% of ceiling", "peak RSS MiB"]
    rows = []
    for v in report["variants"]:
        m = v["metrics"]
        lat = {l["threads"]: l for l in v["latency_ms"]}.get(top)
        retention = m.get("fine_tune_retention")
        row = [v["name"], v["format"], f"{v['size_bytes'] / 2**20:.1f}", f"{m['exact_match']:.3f}",
               f"{retention:.2f}" if retention is not None else "-", f"{m['answer_perplexity']:.2f}"]
        if lat:
            d = lat["decode_tokens_per_s"]
            row += [f"{lat['ttft_ms']['median']:.0f}", f"{lat['prefill_tokens_per_s']['median']:.0f}",
                    f"{d['median']:.1f} ({d['min']:.1f}-{d['max']:.1f})",
                    f"{lat['ms_per_token_p50']:.1f}/{lat['ms_per_token_p90']:.1f}",
                    f"{100 * lat['decode_fraction_of_ceiling']:.0f}%"]
        else:
            row += ["-"] * 5
        peak = max(v["peak_rss_bytes"].values()) if v["peak_rss_bytes"] else 0
        row.append(f"{peak / 2**20:.0f}" if peak else "-")
        rows.append(row)
    return headers, rows


class TorchChat:
    """The same interface as runtime_gen.Generator.stream, for a PyTorch folder (merged or imported)."""

    def __init__(self, folder: Path, threads: int | None = None):
        import torch

        from edgeft.models import load_model, load_tokenizer

        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = load_tokenizer(folder, "generation")
        self.model = load_model(folder, "generation").eval()

    def stream(self, messages: list[dict], max_new_tokens: int | None = None):
        import threading

        from transformers import TextIteratorStreamer

        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(input_ids=ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=max_new_tokens or 128,
                      do_sample=False, streamer=streamer, pad_token_id=self.tokenizer.pad_token_id)
        thread = threading.Thread(target=self.model.generate, kwargs=kwargs)
        thread.start()
        yield from streamer
        thread.join()
