"""The fine-tuning recipe, top to bottom: LoRA / QLoRA on the data artifact's examples.

Read in order, as a torchtune recipe reads:
1. `setup`: the examples (the task's), the base model wrapped with a fresh LoRA adapter (model.py:
   an NF4 base for QLoRA, held as qlora.py chooses, or the shipped int4 grid, grid.py), the
   optimizer and schedule, all under accelerate, so that `accelerate launch` trains data-parallel.
2. `restore`: a fresh TrainState, or the last checkpoint's (adapter, optimizer, RNG, position).
3. `train_epoch`: one epoch's optimizer steps, checkpointing every `checkpoint_every`.
4. `end_epoch`: validate, keep the best adapter, checkpoint at the boundary.
`finetune` runs them; the tune stage (stages/tune.py) turns its work folder into the artifact.
Everything a resume needs is in TrainState, saved with every checkpoint.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeft import EdgeftError
from edgeft.core.console import progress as console_progress
from edgeft.core.console import say, terminal
from edgeft.core.recipe import Recipe
from edgeft.core.splits import load_labels, open_split
from edgeft.core.tasks import get_task
from edgeft.runtime.files import ADAPTER_DIR, CHECKPOINT_DIR, CHECKPOINT_PROGRESS, CHECKPOINT_STATE, split_file
from edgeft.training.batches import epoch_batches, to_device
from edgeft.training.model import build_model, make_optimizer, pick_batch_size


@dataclass
class TrainState:
    """Where training stands; saved with every checkpoint, so a resume continues exactly here."""
    run_key: str
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    train_seconds: float = 0.0
    tokens: int = 0
    losses: list[float] = field(default_factory=list)
    last_loss: float | None = None


@dataclass
class Run:
    """What setup() builds and the training loop uses."""
    recipe: Recipe
    task: Any
    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    train: Any
    val: Any
    tokenizer: Any
    label_info: dict
    mode: dict
    batch_size: int
    total_steps: int
    work: Path
    trainable: int

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)


def finetune(recipe: Recipe, data_dir: Path, base: Path, work: Path, run_key: str,
             progress: bool = True) -> tuple[Run, TrainState]:
    """Train in `work` until the recipe's steps are done; the best adapter is in work/adapter."""
    run = setup(recipe, Path(data_dir), base, work)
    state = restore(run, run_key)
    bar = progress_bar(run, state, progress)
    run.model.train()
    while state.step < run.total_steps:
        train_epoch(run, state, bar)
        end_epoch(run, state, bar)
    bar.close()
    return run, state


def setup(recipe: Recipe, data_dir: Path, base: Path, work: Path) -> Run:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    cfg, task = recipe.tune, get_task(recipe.task)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    on_cuda = torch.cuda.is_available()
    # cpu=True lets `torchrun`/`accelerate launch` run data-parallel on CPUs (gloo) where no GPU is
    accelerator = Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation, cpu=not on_cuda,
                              mixed_precision="bf16" if on_cuda else "no")
    set_seed(recipe.seed)
    label_info = load_labels(data_dir)
    labels = label_info["labels"]
    tokenizer = task.tokenizer_for(recipe, base)
    if cfg.packing and not task.supports_packing:
        raise EdgeftError(f"tune.packing: task {task.name} does not pack examples (generation chats do)")
    if not (data_dir / split_file("train")).stat().st_size:
        raise EdgeftError(f"{data_dir}/{split_file('train')} is empty")
    train = task.examples(open_split(data_dir, "train"), tokenizer, recipe.data.max_length, labels, packing=cfg.packing)
    val = task.examples(open_split(data_dir, "validation"), tokenizer, recipe.data.max_length, labels)
    model, mode = build_model(base, recipe, task, labels, accelerator.device)
    if accelerator.is_main_process:
        say(f"tune: {mode['reason']}")
    optimizer = make_optimizer(model, cfg, on_cuda)
    batch_size = pick_batch_size(cfg.batch_size, model, train, accelerator, mode["fused_cross_entropy"])
    # every rank builds the same batch order and takes its share of it
    per_epoch = len(epoch_batches(train, batch_size, recipe.seed, accelerator.num_processes)) // accelerator.num_processes
    total_steps = cfg.max_steps or math.ceil(max(1, per_epoch // cfg.gradient_accumulation) * cfg.epochs)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model, optimizer = accelerator.prepare(model, optimizer)
    work.mkdir(parents=True, exist_ok=True)
    return Run(recipe, task, accelerator, model, optimizer, scheduler, train, val, tokenizer, label_info, mode,
               batch_size, total_steps, work, trainable)


def restore(run: Run, run_key: str) -> TrainState:
    """A fresh state, or the one of the last checkpoint with the adapter, optimizer and RNG."""
    import torch
    from peft import set_peft_model_state_dict

    checkpoint = run.work / CHECKPOINT_DIR
    if not checkpoint.exists():
        return TrainState(run_key=run_key)
    saved = torch.load(checkpoint / CHECKPOINT_STATE, weights_only=False)
    set_peft_model_state_dict(run.unwrapped(), saved["adapter"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])
    state = TrainState(**json.loads((checkpoint / CHECKPOINT_PROGRESS).read_text()))
    if run.main:
        say(f"resuming from step {state.step} of {run.total_steps} ({checkpoint})")
    return state


def progress_bar(run: Run, state: TrainState, progress: bool):
    return console_progress(run.total_steps, f"tune {run.recipe.tune.method}", "step", progress and run.main,
                            initial=state.step)


def train_epoch(run: Run, state: TrainState, bar) -> None:
    """The rest of the current epoch's batches: one optimizer step per `gradient_accumulation`."""
    accelerator, world = run.accelerator, run.accelerator.num_processes
    batches = epoch_batches(run.train, run.batch_size, run.recipe.seed + state.epoch, world)[accelerator.process_index::world]
    # whole optimizer steps only: a half-accumulated gradient would carry into the next epoch, and a
    # resume from the epoch boundary could not restore it
    batches = batches[:len(batches) - len(batches) % run.recipe.tune.gradient_accumulation] or batches
    started = time.perf_counter()
    for position in range(state.batch_in_epoch, len(batches)):
        batch = to_device(run.train.batch(batches[position]), accelerator.device)
        with accelerator.accumulate(run.model):
            loss, _ = run.train.loss(run.model, batch, run.mode["fused_cross_entropy"])
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(run.model.parameters(), run.recipe.tune.max_grad_norm)
            run.optimizer.step()  # a no-op while gradients accumulate
            run.optimizer.zero_grad(set_to_none=True)
        state.tokens += (batch["tokens"] if "tokens" in batch else int(batch["attention_mask"].sum())) * world
        state.batch_in_epoch = position + 1
        if not accelerator.sync_gradients:
            continue
        run.scheduler.step()
        state.step += 1
        state.last_loss = loss.item()
        state.losses.append(round(state.last_loss, 6))
        bar.update(1)
        bar.set_postfix(loss=f"{state.last_loss:.4f}", lr=f"{run.scheduler.get_last_lr()[0]:.1e}", refresh=False)
        if state.step >= run.total_steps:
            break
        if state.step % run.recipe.tune.checkpoint_every == 0:
            state.train_seconds += time.perf_counter() - started
            started = time.perf_counter()
            checkpoint(run, state)
    state.train_seconds += time.perf_counter() - started


def end_epoch(run: Run, state: TrainState, bar) -> None:
    """Validate, keep the adapter when it is the best so far, checkpoint at the epoch boundary."""
    state.epoch += 1
    state.batch_in_epoch = 0
    metrics = run.task.evaluate(run.unwrapped(), run.val, run.recipe.tune.eval_batch_size, run.label_info)
    metrics.update(epoch=state.epoch, step=state.step, train_loss=state.last_loss)
    state.history.append(metrics)
    if run.main:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k not in ("epoch", "step", "train_loss"))
        bar.write(f"epoch {state.epoch}: validation {shown}", file=terminal())
    if run.task.is_better(metrics, state.best):
        state.best = metrics
        if run.main:
            save_adapter(run.unwrapped(), run.work / ADAPTER_DIR)
    if state.step < run.total_steps:
        checkpoint(run, state)


def checkpoint(run: Run, state: TrainState) -> None:
    """Adapter, optimizer, scheduler, RNG and state, written whole or not at all (main rank)."""
    import torch
    from peft import get_peft_model_state_dict

    if run.main:
        path = run.work / CHECKPOINT_DIR
        tmp = path.with_name(path.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        torch.save({"adapter": get_peft_model_state_dict(run.unwrapped()), "optimizer": run.optimizer.state_dict(),
                    "scheduler": run.scheduler.state_dict(), "rng": torch.get_rng_state()}, tmp / CHECKPOINT_STATE)
        (tmp / CHECKPOINT_PROGRESS).write_text(json.dumps(asdict(state), indent=1))
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    run.accelerator.wait_for_everyone()


def save_adapter(model, folder: Path) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


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
