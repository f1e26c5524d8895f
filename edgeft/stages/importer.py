"""Import stage: a GGUF file (llama.cpp's format) becomes a plain Hugging Face folder.

transformers dequantizes GGUF weights to fp32 when it loads them but refuses to save such a model,
so the weights are copied into a fresh model of the same config, then saved as safetensors with
the tokenizer (tokenizer.json only: the 100 MB GGUF copy transformers would add is not needed)
and the chat template.
"""
from __future__ import annotations

from pathlib import Path

from edgeft import EdgeftError
from edgeft.core.artifacts import is_up_to_date, sha256_file, stage_output, up_to_date, write_manifest
from edgeft.runtime.files import LABELS_FILE

GGUF_MAGIC = b"GGUF"


def gguf_architecture(path: Path) -> str:
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise EdgeftError(f"{path} is not a GGUF file (no GGUF magic number)")
    import struct

    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        field = reader.fields["general.architecture"]
    except (KeyError, ValueError, IndexError, EOFError, struct.error) as e:
        raise EdgeftError(f"{path}: cannot read the GGUF header ({type(e).__name__}: {e})") from None
    if not reader.tensors:
        raise EdgeftError(f"{path} holds no tensors: a GGUF without weights (a vocabulary-only file?) is not a model")
    return bytes(field.parts[field.data[0]]).decode()


def import_gguf(path: Path, out: Path, *, force: bool = True) -> dict:
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    path = Path(path)
    if not path.is_file():
        raise EdgeftError(f"GGUF file not found: {path}")
    arch = gguf_architecture(path)
    if arch not in GGUF_SUPPORTED_ARCHITECTURES or arch in ("general", "tokenizer"):
        raise EdgeftError(f"{path}: GGUF architecture '{arch}' cannot be loaded by transformers "
                          f"{transformers.__version__} (supported: {', '.join(GGUF_SUPPORTED_ARCHITECTURES[1:])})")
    digest = sha256_file(path)
    inputs = [{"role": "gguf", "path": str(path.resolve()), "stage": "external", "fingerprint": digest}]
    config = {"architecture": arch}
    if not force and is_up_to_date(out, inputs, config):
        return up_to_date(out)

    transformers.logging.set_verbosity_error()
    folder, name = str(path.parent), path.name
    hf_config = AutoConfig.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (hf_config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise EdgeftError(f"{path}: weights do not fit the {arch} config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    del loaded

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # GGUF tokenizer metadata names its own end token (general config eos) that transformers may map
    # wrongly, and transformers adds a BOS the GGUF does not ask for
    eos_id = hf_config.eos_token_id if isinstance(hf_config.eos_token_id, int) else hf_config.eos_token_id[0]
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    tokenizer.pad_token = tokenizer.eos_token
    if hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = False
        if hasattr(tokenizer, "update_post_processor"):
            tokenizer.update_post_processor()
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = eos_id
    model.config.pad_token_id = eos_id

    with stage_output(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "tokenizer.model").unlink(missing_ok=True)  # a copy of the whole GGUF; tokenizer.json suffices
        (tmp / LABELS_FILE).write_text('{"labels": []}\n')
        params = sum(p.numel() for p in model.parameters())
        manifest = write_manifest(tmp, stage="import", task="generation", inputs=inputs, config=config,
                                  metrics={"parameters": params}, architecture=arch, source_file=path.name,
                                  chat_template=bool(tokenizer.chat_template))
    return manifest
