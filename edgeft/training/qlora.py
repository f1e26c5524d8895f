"""How the frozen base model is held while the LoRA adapter trains.

- `plain`: the reference QLoRA recipe: bitsandbytes NF4 (double quantization) and peft's
  `prepare_model_for_kbit_training`, which upcasts every non-quantized weight (embedding and LM
  head included) to fp32.
- `dequantized`: the same NF4 weights, dequantized once into bf16 (fp32 on CPU) and held as plain
  Linear weights. The adapter trains against exactly the base the plain recipe sees (QLoRA's
  numerics) at 16-bit matmul speed, for 2 bytes per parameter of memory.
- `4bit`: weights stay NF4 (bitsandbytes' 4-bit matmul), without the fp32 upcasts: for models that
  do not fit otherwise.

`auto` picks `dequantized` when a 16-bit copy of the base takes under 40% of the free memory
(GPU memory, or RAM on CPU), `4bit` otherwise, and says why.

On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a 4-bit weight for a fused CPU kernel the
first time the layer runs in eval mode without gradients. The repacking assumes in_features is a
multiple of the 4-bit block size (64) and out_features a multiple of 32; any other Linear crashes
(`shape '[N, K/64]' is invalid`). `guard_packed_cpu_path` sends such layers down bitsandbytes'
generic path (the one every AVX2 CPU takes) and leaves the rest on the fast kernel.
"""
from __future__ import annotations

import math
from pathlib import Path

from edgeft.training.grid import HEAD_MODULES

MODES = ("plain", "dequantized", "4bit")
PACKED_BLOCK_N = 32  # bitsandbytes' packed CPU layout: rows per block


def nf4_config(on_cuda: bool):
    """QLoRA's quantization: NF4 with double quantization; heads stay in full precision."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16 if on_cuda else torch.float32,
                              llm_int8_skip_modules=list(HEAD_MODULES))


def load_nf4(task, path: Path, labels: list[str], on_cuda: bool, device_map: dict):
    """The task's model with its linears in NF4, and the names of the 4-bit layers kept off
    bitsandbytes' packed CPU kernel (`guard_packed_cpu_path`)."""
    model = task.load_model(path, labels, quantization_config=nf4_config(on_cuda), device_map=device_map)
    return model, guard_packed_cpu_path(model)


def packed_cpu_unfit(module) -> bool:
    """Whether bitsandbytes' packed CPU kernel would take this Linear4bit and cannot hold it."""
    if not getattr(module, "support_avx512bf16_for_cpu", False):
        return False
    state = getattr(module.weight, "quant_state", None)
    block = getattr(state, "blocksize", 64) or 64
    return module.in_features % block != 0 or module.out_features % PACKED_BLOCK_N != 0 or module.in_features % 2 != 0


def guard_packed_cpu_path(model) -> list[str]:
    """Keep the Linear4bit layers that the packed CPU kernel cannot hold on the generic path;
    returns their names (empty on CPUs without AVX512-BF16, and when every shape fits)."""
    import bitsandbytes as bnb

    guarded = []
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit) and packed_cpu_unfit(module):
            module.support_avx512bf16_for_cpu = False
            guarded.append(name)
    return guarded


def choose_mode(requested: str, params: int, device_type: str, free_bytes: int | None = None) -> tuple[str, str]:
    """The mode to train in and a sentence saying why."""
    if requested != "auto":
        return requested, f"qlora mode {requested} (set in the recipe)"
    if free_bytes is None:
        free_bytes = free_memory(device_type)
    bytes_per_param = 2 if device_type == "cuda" else 4
    copy = params * bytes_per_param
    where = "GPU memory" if device_type == "cuda" else "RAM"
    if copy < 0.4 * free_bytes:
        return "dequantized", (f"qlora mode dequantized: a {'bf16' if device_type == 'cuda' else 'fp32'} copy of the "
                               f"NF4 base takes {copy / 2**30:.2f} GiB of {free_bytes / 2**30:.1f} GiB free {where}")
    return "4bit", (f"qlora mode 4bit: a 16-bit copy of the base ({copy / 2**30:.1f} GiB) would not leave room in "
                    f"{free_bytes / 2**30:.1f} GiB free {where}")


def free_memory(device_type: str) -> int:
    if device_type == "cuda":
        import torch
        return torch.cuda.mem_get_info()[0]
    import psutil
    return psutil.virtual_memory().available


def count_parameters(base_dir) -> int:
    """Parameters of a Hugging Face folder, from its safetensors headers (nothing is loaded)."""
    from pathlib import Path

    from safetensors import safe_open

    total = 0
    for path in Path(base_dir).glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                total += math.prod(f.get_slice(name).get_shape())
    return total


def dequantize_4bit_linears(model, dtype) -> int:
    """Replace every bitsandbytes Linear4bit by a plain Linear holding its dequantized NF4 weight."""
    import bitsandbytes as bnb
    import torch

    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, bnb.nn.Linear4bit):
                weight = bnb.functional.dequantize_4bit(child.weight.data, child.weight.quant_state).to(dtype)
                # skip_init: a Linear's own random init would draw from the RNG and shift the LoRA init
                linear = torch.nn.utils.skip_init(torch.nn.Linear, child.in_features, child.out_features,
                                                  bias=child.bias is not None, device=weight.device, dtype=dtype)
                linear.weight.data = weight
                if child.bias is not None:
                    linear.bias.data = child.bias.data.to(dtype)
                linear.requires_grad_(False)
                setattr(parent, name, linear)
                replaced += 1
    if hasattr(model, "is_loaded_in_4bit"):
        model.is_loaded_in_4bit = False
    model.hf_quantizer = None  # a plain model now: saved and merged like one
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    return replaced


def set_checkpointing(model, layers) -> int:
    """Gradient checkpointing on the first `layers` decoder layers (True: all, False/0: none).
    Checkpointing every layer costs about a third of the speed; checkpointing only as many as the
    memory needs keeps the rest."""
    if not layers or not getattr(model, "supports_gradient_checkpointing", False):
        return 0
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.enable_input_require_grads()  # reentrant checkpointing needs an input that requires grad
    blocks = [m for m in model.modules() if hasattr(m, "gradient_checkpointing") and m is not model
              and type(m).__name__.endswith(("Layer", "Block"))]
    keep = len(blocks) if layers is True else int(layers)
    for i, block in enumerate(blocks):
        block.gradient_checkpointing = i < keep
    return min(keep, len(blocks))


def prepare_base(model, mode: str, device_type: str, checkpointing) -> dict:
    """Turn a bitsandbytes-4-bit model into the chosen mode; returns what was done."""
    import torch

    compute = torch.bfloat16 if device_type == "cuda" else torch.float32
    info = {"mode": mode}
    if mode == "plain":
        from peft import prepare_model_for_kbit_training
        prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(checkpointing),
                                        gradient_checkpointing_kwargs={"use_reentrant": False})
        info["checkpointed_layers"] = "all" if checkpointing else 0
        return info
    if mode == "dequantized":
        info["dequantized_linears"] = dequantize_4bit_linears(model, compute)
    for p in model.parameters():
        p.requires_grad_(False)
    # no fp32 upcast of the embedding and head: they stay in the compute dtype
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if p.dtype in (torch.float16, torch.bfloat16, torch.float32) and p.dtype != compute:
                p.data = p.data.to(compute)
    info["checkpointed_layers"] = set_checkpointing(model, checkpointing)
    return info


def fused_cross_entropy(model) -> bool:
    """On CUDA with liger-kernel installed, patch the model so that a loss from `labels` never
    materialises the logits (fused linear cross-entropy); returns whether it did."""
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        import liger_kernel.transformers as lk
    except ImportError:
        return False
    patch = getattr(lk, f"apply_liger_kernel_to_{model.config.model_type}", None)
    if patch is None:
        return False
    patch(rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=True,
          model=model)
    return True


def load_trained(task, tune_dir: Path, labels: list[str]):
    """What was trained, as it was trained: the adapter on the NF4 base (QLoRA), on the base held on
    the int4 grid (QLoRA with `tune.base_quant: int4`) or on the fp32 base (LoRA), read from the tune
    folder's manifest. The merge gate and the bench's accuracy ledger both start from it."""
    from peft import PeftModel

    from edgeft.core.artifacts import lineage_input, read_manifest

    tuned = read_manifest(tune_dir, stage="tune", what="tune output", verify=False)
    grid = trained_grid(tuned.config)
    nf4 = tuned.config["method"] == "qlora" and not grid
    base = lineage_input(tuned, "base_model")
    model = load_nf4(task, base, labels, False, {"": "cpu"})[0] if nf4 else task.load_model(base, labels)
    if grid:
        from edgeft.training.grid import put_on_grid
        put_on_grid(model, grid, **grid_options(tuned.config))
    return PeftModel.from_pretrained(model, tune_dir).eval()


def grid_options(tune_config: dict) -> dict:
    """The grid's block size and head bits as the tune used them (folders from before the fields: 32, 8)."""
    from edgeft.training.grid import GRID_BLOCK_SIZE
    return {"block_size": tune_config.get("grid_block_size", GRID_BLOCK_SIZE),
            "head_bits": tune_config.get("grid_head_bits", 8)}


def trained_grid(tune_config: dict) -> str | None:
    """The int grid a QLoRA adapter was trained against (`tune.base_quant`), or None (NF4, LoRA)."""
    quant = tune_config.get("base_quant", "nf4")
    return quant if tune_config["method"] == "qlora" and quant != "nf4" else None
