"""The model a training run trains (the base with a fresh LoRA adapter, on the grid or NF4 base
QLoRA asks for), its optimizer and its batch size: the pieces finetune.py's `setup` puts together."""
from __future__ import annotations

from pathlib import Path

from edgeft.core.console import say
from edgeft.core.recipe import Recipe
from edgeft.training.batches import Examples, to_device


def build_model(base: Path, recipe: Recipe, task, labels: list[str], device):
    """Base model (for QLoRA: NF4, held as the chosen mode) wrapped with a fresh LoRA adapter.
    Returns the model and what was chosen, with the reason."""
    import torch
    from peft import LoraConfig, get_peft_model

    from edgeft.training.qlora import (
        choose_mode,
        count_parameters,
        fused_cross_entropy,
        load_nf4,
        prepare_base,
        set_checkpointing,
    )

    cfg = recipe.tune
    on_cuda = device.type == "cuda"
    checkpointing = on_cuda if cfg.gradient_checkpointing == "auto" else cfg.gradient_checkpointing
    if cfg.method == "qlora" and cfg.base_quant != "nf4":
        model, info, reason = grid_base(base, task, labels, cfg, checkpointing)
    elif cfg.method == "qlora":
        mode, reason = choose_mode(cfg.qlora_mode, count_parameters(base), device.type)
        model, generic = load_nf4(task, base, labels, on_cuda, {"": device.index or 0} if on_cuda else {"": "cpu"})
        info = prepare_base(model, mode, device.type, checkpointing)
        if generic and mode != "dequantized":
            info["generic_4bit_layers"] = len(generic)
            reason += (f"; {len(generic)} 4-bit layers whose shapes bitsandbytes' packed AVX512-BF16 kernel cannot "
                       "hold run on its generic CPU path")
    else:
        reason = "lora on a 16-bit base" if on_cuda else "lora on an fp32 base"
        model = task.load_model(base, labels, dtype=torch.bfloat16 if on_cuda else torch.float32)
        for p in model.parameters():
            p.requires_grad_(False)
        info = {"mode": "lora", "checkpointed_layers": set_checkpointing(model, checkpointing)}
    info["fused_cross_entropy"] = task.supports_packing and fused_cross_entropy(model)
    info["reason"] = reason
    heads = [name for name, _ in model.named_modules() if set(name.split(".")) & set(task.head_modules)]
    whole = sorted({part for name in heads for part in name.split(".") if part in task.head_modules})
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, exclude_modules=heads or None,
                      modules_to_save=whole or None, task_type=task.lora_task_type)
    return get_peft_model(model, lora), info


def grid_base(base: Path, task, labels: list[str], cfg, checkpointing):
    """The fp32 base with its weights on the shipped int4 grid (training/grid.py), frozen."""
    import torch

    from edgeft.training.grid import put_on_grid
    from edgeft.training.qlora import set_checkpointing

    model = task.load_model(base, labels, dtype=torch.float32)
    base_quant = cfg.base_quant
    info = {"mode": f"{base_quant} grid", **put_on_grid(model, base_quant, cfg.grid_block_size, cfg.grid_head_bits)}
    for p in model.parameters():
        p.requires_grad_(False)
    info["checkpointed_layers"] = set_checkpointing(model, checkpointing)
    reason = (f"qlora on the {base_quant} grid the shipped model uses ({info['grid']}; "
              f"{info['grid_linears']} linears at {info['body_bits']} bits, head at {info['head_bits']})")
    return model, info, reason


def make_optimizer(model, cfg, on_cuda: bool):
    """Paged 8-bit AdamW for QLoRA on CUDA (bitsandbytes), AdamW otherwise."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if on_cuda and cfg.method == "qlora":
        import bitsandbytes as bnb
        return bnb.optim.PagedAdamW8bit(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def pick_batch_size(requested, model, train: Examples, accelerator, fused: bool) -> int:
    """The recipe's batch size, or with `auto` on CUDA the largest power of two (up to 64) whose
    step on the longest examples fits in memory."""
    if requested != "auto":
        return requested
    if accelerator.device.type != "cuda":
        say("tune: batch_size auto needs CUDA; using 16 on CPU")
        return 16
    import torch
    from accelerate.utils import find_executable_batch_size

    longest = sorted(range(len(train)), key=lambda i: -train.lengths[i])

    @find_executable_batch_size(starting_batch_size=64)
    def probe(batch_size):
        batch = to_device(train.batch(train.batches(batch_size, 0)[0] if train.packing else longest[:batch_size]),
                          accelerator.device)
        loss, _ = train.loss(model, batch, fused)
        loss.backward()
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return batch_size

    chosen = probe()
    say(f"tune: batch_size auto: {chosen} fits")
    return chosen
