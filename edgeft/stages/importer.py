"""Import stage: a GGUF file (llama.cpp's format) becomes a plain Hugging Face folder.

transformers dequantizes GGUF weights to fp32 when it loads them but refuses to save such a model,
so the weights are copied into a fresh model of the same config, then saved as safetensors with
the tokenizer (tokenizer.json only: the 100 MB GGUF copy transformers would add is not needed; a
SentencePiece vocabulary's tokenizer.model rebuilt from the GGUF, generation/spm.py) and the chat
template. The tokenizer must split text as the GGUF's own does (checked with llama.cpp).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from edgeft import EdgeftError
from edgeft.core.artifacts import is_up_to_date, sha256_file, stage_output, up_to_date, write_manifest
from edgeft.core.models import gguf_architecture
from edgeft.generation.spm import sentencepiece_tokenizer
from edgeft.runtime.files import LABELS_FILE

PROBES = ("Where is the Eiffel Tower ?", "How many people live in Tokyo? About 14 million, naïve café.\n\nYes!")


def check_tokenizer(path: Path, tokenizer) -> None:
    """transformers rebuilds a GGUF's vocabulary as a Hugging Face tokenizer, and the whole pipeline
    (tune, exports, the bundle) tokenizes with it. It must split text as the GGUF's own tokenizer
    (llama.cpp's) does, or the model is tuned on text cut into pieces it was never trained on: with
    transformers 4.57, Gemma 3's SentencePiece vocabulary comes out cutting "Where is the Eiffel Tower ?"
    into 12 tokens where Gemma's own tokenizer makes 6. Checked with llama.cpp when the gguf extra is
    installed (`edgeft llamacpp-setup`); without it the GGUF export's own check is the first to run."""
    from edgeft.generation.gguf import llama_cpp

    try:
        lib = llama_cpp()
    except EdgeftError:
        return
    llm = lib.Llama(str(path), vocab_only=True, verbose=False)
    for probe in PROBES:
        own = llm.tokenize(probe.encode(), add_bos=False, special=True)
        ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
        if own != ids:
            raise EdgeftError(f"{path}: the tokenizer transformers rebuilds from this GGUF splits text differently "
                              f"from the GGUF's own ({len(ids)} tokens against llama.cpp's {len(own)} for {probe!r}); "
                              "a model tuned through it would read text cut as it never was in training. Give the "
                              "model as a Hugging Face folder with its original tokenizer instead (model.base)")


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
    spm_dir = tempfile.TemporaryDirectory()  # the rebuilt tokenizer.model, until save_pretrained copies it
    read = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer = sentencepiece_tokenizer(path, arch, read, Path(spm_dir.name)) or read
    check_tokenizer(path, tokenizer)  # before the weights: a minute or more for larger models
    hf_config = AutoConfig.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (hf_config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise EdgeftError(f"{path}: weights do not fit the {arch} config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    del loaded

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
        if tokenizer is read:  # transformers' tokenizer.model is a copy of the whole GGUF; tokenizer.json suffices
            (tmp / "tokenizer.model").unlink(missing_ok=True)
        (tmp / LABELS_FILE).write_text('{"labels": []}\n')
        params = sum(p.numel() for p in model.parameters())
        manifest = write_manifest(tmp, stage="import", task="generation", inputs=inputs, config=config,
                                  metrics={"parameters": params}, architecture=arch, source_file=path.name,
                                  chat_template=bool(tokenizer.chat_template))
    return manifest
