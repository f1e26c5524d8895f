"""Tune stage: LoRA / QLoRA fine-tuning of a base model on the data artifact.

Read top to bottom: load data and base model, wrap it with LoRA (on a 4-bit NF4 base for QLoRA),
train with a plain loop under accelerate (so `accelerate launch` gives data-parallel training),
validate each epoch, keep the best adapter, checkpoint for --resume.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path

from edgeft import EdgeftError
from edgeft.artifacts import (
    folder_ref,
    input_ref,
    is_up_to_date,
    partial_path,
    read_manifest,
    sha256_json,
    stage_output,
    up_to_date,
    write_manifest,
)
from edgeft.batches import Examples, to_device
from edgeft.data import load_labels, load_split
from edgeft.models import is_gguf, load_model, load_tokenizer, resolve_model
from edgeft.recipe import Recipe

CHECKPOINT = "checkpoint"
HEAD_MODULES = ["classifier", "score", "pooler", "lm_head"]  # never quantized to 4 bits


def resolve_base(recipe: Recipe, base_dir: Path | None) -> Path:
    base = Path(base_dir) if base_dir else resolve_model(recipe.model.base)
    if is_gguf(base):
        raise EdgeftError(f"model.base {base} is a GGUF file: convert it first with `edgeft import {base}` "
                          "(edgeft run does this for you)")
    return base


def tune_config(recipe: Recipe) -> dict:
    return {"task": recipe.task, "seed": recipe.seed, "max_length": recipe.data.max_length,
            **recipe.tune.model_dump(mode="json", exclude={"threads", "eval_batch_size", "checkpoint_every"})}


def quantization_config(method: str, on_cuda: bool):
    if method != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16 if on_cuda else torch.float32,
                              llm_int8_skip_modules=HEAD_MODULES)


def build_model(base: Path, recipe: Recipe, labels: list[str], device):
    """Base model (for QLoRA: NF4, held as the chosen mode) wrapped with a fresh LoRA adapter.
    Returns the model and what was chosen, with the reason."""
    import torch
    from peft import LoraConfig, get_peft_model

    from edgeft.qlora import choose_mode, count_parameters, fused_cross_entropy, prepare_base, set_checkpointing

    cfg = recipe.tune
    on_cuda = device.type == "cuda"
    checkpointing = on_cuda if cfg.gradient_checkpointing == "auto" else cfg.gradient_checkpointing
    if cfg.method == "qlora":
        mode, reason = choose_mode(cfg.qlora_mode, count_parameters(base), device.type)
        model = load_model(base, recipe.task, labels, quantization_config=quantization_config("qlora", on_cuda),
                           device_map={"": device.index or 0} if on_cuda else {"": "cpu"})
        info = prepare_base(model, mode, device.type, checkpointing)
    else:
        reason = "lora on a 16-bit base" if on_cuda else "lora on an fp32 base"
        model = load_model(base, recipe.task, labels, dtype=torch.bfloat16 if on_cuda else torch.float32)
        for p in model.parameters():
            p.requires_grad_(False)
        info = {"mode": "lora", "checkpointed_layers": set_checkpointing(model, checkpointing)}
    info["fused_cross_entropy"] = recipe.task == "generation" and fused_cross_entropy(model)
    info["reason"] = reason
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules,
                      task_type="SEQ_CLS" if recipe.task == "classification" else "CAUSAL_LM")
    return get_peft_model(model, lora), info


def make_optimizer(model, cfg, on_cuda: bool):
    """Paged 8-bit AdamW for QLoRA on CUDA (bitsandbytes), AdamW otherwise."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if on_cuda and cfg.method == "qlora":
        import bitsandbytes as bnb
        return bnb.optim.PagedAdamW8bit(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def batch_loss(model, batch: dict, fused: bool = False):
    """Mean loss of a batch and the number of tokens (or examples) it covers.

    Chats: the loss of the answer tokens only. With fused cross-entropy (liger-kernel on CUDA) the
    model computes it from `labels` without materialising logits; otherwise only the positions
    that predict answer tokens go through the LM head.
    """
    if "labels" in batch:
        return model(**batch).loss, batch["labels"].shape[0]
    if fused:
        labels = batch["input_ids"].masked_fill(~batch["answer_mask"], -100)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"], labels=labels, use_cache=False)
        return out.loss, int(batch["answer_mask"].sum())
    from edgeft.batches import answer_nll

    nll, count = answer_nll(model, batch)
    return nll / count.clamp(min=1), int(count)


def evaluate(model, examples: Examples, batch_size: int, labels: list[str], positive: str | None) -> dict:
    """Validation loss, and accuracy / F1 for classification."""
    import torch

    from edgeft.batches import answer_nll
    from edgeft.metrics import classification_metrics

    model.eval()
    total, count, preds = 0.0, 0, []
    order = sorted(range(len(examples)), key=lambda i: examples.lengths[i])
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = to_device(examples.batch(idx), model.device)
            if examples.task == "classification":
                out = model(**batch)
                total += float(out.loss) * len(idx)
                count += len(idx)
                preds += list(zip(idx, out.logits.argmax(-1).tolist()))
            else:
                nll, n = answer_nll(model, batch)
                total, count = total + float(nll), count + int(n)
    model.train()
    result = {"loss": total / max(count, 1)}
    if examples.task == "classification":
        pred = [labels[p] for _, p in sorted(preds)]
        true = [labels[examples.targets[i]] for i in range(len(examples))]
        result.update(classification_metrics(true, pred, labels, positive))
    return result


def is_better(new: dict, best: dict | None, task: str) -> bool:
    if best is None:
        return True
    if task == "classification":
        return (new["macro_f1"], -new["loss"]) > (best["macro_f1"], -best["loss"])
    return new["loss"] < best["loss"]


def save_checkpoint(path: Path, model, optimizer, scheduler, state: dict) -> None:
    import torch
    from peft import get_peft_model_state_dict

    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save({"adapter": get_peft_model_state_dict(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state()}, tmp / "state.pt")
    (tmp / "progress.json").write_text(json.dumps(state, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)  # a checkpoint is either complete or absent


def tune(recipe: Recipe, data_dir: Path, out: Path, *, base_dir: Path | None = None, resume: bool = False,
         force: bool = True, progress: bool = True) -> dict:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from peft import set_peft_model_state_dict
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    out = Path(out)
    cfg = recipe.tune
    data_manifest = read_manifest(data_dir, stage="data", what="data")
    if data_manifest["task"] != recipe.task:
        raise EdgeftError(f"data {data_dir} was prepared for task '{data_manifest['task']}', recipe says '{recipe.task}'")
    base = resolve_base(recipe, base_dir)
    inputs = [input_ref("data", data_dir, data_manifest), folder_ref("base_model", base)]
    config = tune_config(recipe)
    if not force and is_up_to_date(out, inputs, config):
        return up_to_date(out)

    work = partial_path(out)
    checkpoint = work / CHECKPOINT
    run_key = sha256_json({"inputs": inputs, "config": config})
    if checkpoint.exists():
        saved = json.loads((checkpoint / "progress.json").read_text())
        if not resume:
            raise EdgeftError(f"an interrupted tune is in {work} (step {saved['step']}): pass --resume to continue it, "
                              f"or delete that folder to start over")
        if saved.get("run_key") != run_key:
            raise EdgeftError(f"the interrupted tune in {work} used other data, base model or settings: "
                              "delete that folder to start over")
    elif work.exists():
        shutil.rmtree(work)  # a partial output without a checkpoint holds nothing worth keeping

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    on_cuda = torch.cuda.is_available()
    # cpu=True lets `torchrun`/`accelerate launch` run data-parallel on CPUs (gloo) where no GPU is
    accelerator = Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation, cpu=not on_cuda,
                              mixed_precision="bf16" if on_cuda else "no")
    set_seed(recipe.seed)
    labels_info = load_labels(data_dir)
    labels = labels_info["labels"]
    tokenizer = load_tokenizer(base, recipe.task)
    if cfg.packing and recipe.task != "generation":
        raise EdgeftError("tune.packing applies to generation (chat) data only")
    train = Examples(load_split(data_dir, "train"), tokenizer, recipe.task, recipe.data.max_length, labels,
                     packing=cfg.packing)
    val = Examples(load_split(data_dir, "validation"), tokenizer, recipe.task, recipe.data.max_length, labels)
    if len(train) == 0:
        raise EdgeftError(f"{data_dir}/train.jsonl is empty")

    model, mode = build_model(base, recipe, labels, accelerator.device)
    if accelerator.is_main_process:
        print(f"tune: {mode['reason']}", file=sys.stderr)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = make_optimizer(model, cfg, on_cuda)
    batch_size = pick_batch_size(cfg.batch_size, model, train, accelerator, mode["fused_cross_entropy"])

    # every rank builds the same batch order and takes its share of it
    world, rank = accelerator.num_processes, accelerator.process_index
    per_epoch = len(epoch_batches(train, batch_size, recipe.seed, world)) // world
    steps_per_epoch = max(1, per_epoch // cfg.gradient_accumulation)
    total_steps = cfg.max_steps or math.ceil(steps_per_epoch * cfg.epochs)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)

    state = {"run_key": run_key, "step": 0, "epoch": 0, "batch_in_epoch": 0, "history": [], "best": None,
             "train_seconds": 0.0, "tokens": 0}
    if checkpoint.exists():
        saved = torch.load(checkpoint / "state.pt", weights_only=False)
        set_peft_model_state_dict(accelerator.unwrap_model(model), saved["adapter"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        state = json.loads((checkpoint / "progress.json").read_text())
        if accelerator.is_main_process:
            print(f"resuming from step {state['step']} of {total_steps} ({checkpoint})", file=sys.stderr)
    work.mkdir(parents=True, exist_ok=True)
    main = accelerator.is_main_process

    bar = tqdm(total=total_steps, initial=state["step"], desc=f"tune {cfg.method}", unit="step",
               disable=not (progress and main), dynamic_ncols=True)
    model.train()
    started = time.perf_counter()
    while state["step"] < total_steps:
        batches = epoch_batches(train, batch_size, recipe.seed + state["epoch"], world)[rank::world]
        for position in range(state["batch_in_epoch"], len(batches)):
            batch = to_device(train.batch(batches[position]), accelerator.device)
            with accelerator.accumulate(model):
                loss, _ = batch_loss(model, batch, mode["fused_cross_entropy"])
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()  # a no-op while gradients accumulate
                optimizer.zero_grad(set_to_none=True)
            state["tokens"] += batch["tokens"] * world if "tokens" in batch else \
                int(batch["attention_mask"].sum()) * world
            state["batch_in_epoch"] = position + 1
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state["step"] += 1
            state["last_loss"] = loss.item()
            state.setdefault("losses", []).append(round(state["last_loss"], 6))
            bar.update(1)
            bar.set_postfix(loss=f"{state['last_loss']:.4f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
            if state["step"] >= total_steps:
                break
            if state["step"] % cfg.checkpoint_every == 0:
                state["train_seconds"] += time.perf_counter() - started
                started = time.perf_counter()
                if main:
                    save_checkpoint(checkpoint, accelerator.unwrap_model(model), optimizer, scheduler, state)
                accelerator.wait_for_everyone()
        # end of an epoch (or of training): validate, keep the best adapter, checkpoint
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        state["train_seconds"] += time.perf_counter() - started
        metrics = evaluate(accelerator.unwrap_model(model), val, cfg.eval_batch_size, labels,
                           labels_info.get("positive_label"))
        metrics.update(epoch=state["epoch"], step=state["step"], train_loss=state.get("last_loss"))
        state["history"].append(metrics)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k not in ("epoch", "step", "train_loss"))
        if main:
            bar.write(f"epoch {state['epoch']}: validation {shown}")
        if is_better(metrics, state["best"], recipe.task):
            state["best"] = metrics
            if main:
                save_adapter(accelerator.unwrap_model(model), work / "adapter")
        if main and state["step"] < total_steps:
            save_checkpoint(checkpoint, accelerator.unwrap_model(model), optimizer, scheduler, state)
        accelerator.wait_for_everyone()
        started = time.perf_counter()
    bar.close()
    ranks = rank_checksums(accelerator, accelerator.unwrap_model(model))
    if not main:
        return {}

    with stage_output(out, keep_partial=True) as tmp:  # tmp is `work`: the best adapter is already there
        shutil.rmtree(checkpoint, ignore_errors=True)
        for f in (tmp / "adapter").iterdir():
            f.rename(tmp / f.name)
        (tmp / "adapter").rmdir()
        tokenizer.save_pretrained(tmp)
        (tmp / "labels.json").write_text(json.dumps(labels_info, indent=2) + "\n")
        seconds = state["train_seconds"]
        metrics = {"best_validation": state["best"], "history": state["history"], "steps": state["step"],
                   "loss_curve": state.get("losses", []),
                   "train_seconds": round(seconds, 1),
                   "train_tokens_per_s": round(state["tokens"] / max(seconds, 1e-9), 1),
                   "trainable_params": trainable, "processes": world, "device": accelerator.device.type,
                   "mode": mode, "batch_size": batch_size, "rank_adapter_sha256": ranks,
                   "ranks_identical": len(set(ranks)) == 1}
        manifest = write_manifest(tmp, stage="tune", task=recipe.task, inputs=inputs, config=config,
                                  metrics=metrics, base_model=str(base.resolve()), labels=labels)
    return manifest


def rank_checksums(accelerator, model) -> list[str]:
    """sha256 of the adapter weights on every rank: data-parallel training must leave them identical."""
    import hashlib

    import torch
    from peft import get_peft_model_state_dict

    digest = hashlib.sha256()
    for name, tensor in sorted(get_peft_model_state_dict(model).items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    if accelerator.num_processes == 1:
        return [digest.hexdigest()]
    gathered = [None] * accelerator.num_processes
    torch.distributed.all_gather_object(gathered, digest.hexdigest())
    return gathered


def pick_batch_size(requested, model, train: Examples, accelerator, fused: bool) -> int:
    """The recipe's batch size, or with `auto` on CUDA the largest power of two (up to 64) whose
    step on the longest examples fits in memory."""
    if requested != "auto":
        return requested
    if accelerator.device.type != "cuda":
        print("tune: batch_size auto needs CUDA; using 16 on CPU", file=sys.stderr)
        return 16
    import torch
    from accelerate.utils import find_executable_batch_size

    longest = sorted(range(len(train)), key=lambda i: -train.lengths[i])

    @find_executable_batch_size(starting_batch_size=64)
    def probe(batch_size):
        batch = to_device(train.batch(train.batches(batch_size, 0)[0] if train.packing else longest[:batch_size]),
                          accelerator.device)
        loss, _ = batch_loss(model, batch, fused)
        loss.backward()
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return batch_size

    chosen = probe()
    print(f"tune: batch_size auto: {chosen} fits", file=sys.stderr)
    return chosen


def save_adapter(model, folder: Path) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def epoch_batches(examples: Examples, batch_size: int, seed: int, world: int) -> list[list]:
    batches = examples.batches(batch_size, seed)
    full = [b for b in batches if len(b) == batch_size] or batches  # equal shapes across ranks
    return full[:len(full) - len(full) % world] if len(full) >= world else full
