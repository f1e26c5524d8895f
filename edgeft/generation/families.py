"""The model families a generation recipe takes, and what each stage can do with each.

A user arrives with a Qwen, a Gemma, a Phi or a Llama. Every stage goes through a library that knows
families by name (peft's target modules, optimum's exporter, onnxruntime-genai's builder, llama.cpp's
converter), and edgeft's graph edits (8-bit head and its shortlist, int8 KV cache, prompt graphs,
unmerged LoRA) work on the builder's graph, whose layout is the same for all of them. So the table
below is what tests/test_families.py runs through every stage on a tiny model of each family, and a
family or option outside it is refused before any work starts, naming what is supported.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgeft import EdgeftError
from edgeft.core.models import model_type as read_model_type


@dataclass(frozen=True)
class Family:
    examples: str  # the models users bring
    gguf: str = ""  # when llama.cpp's converter cannot take it ("" = it can)
    genai: str = ""  # why onnxruntime-genai's builder cannot ("" = it can)


# config.json's model_type (or the GGUF's general.architecture) -> the family
FAMILIES = {
    "llama": Family("Llama 3.x, SmolLM2"),
    "smollm3": Family("SmolLM3", genai="onnxruntime-genai 0.15.2's builder fails on its NoPE layers (it asks for a "
                                       "position_ids input it did not make)"),
    "qwen2": Family("Qwen2.5"),
    "qwen3": Family("Qwen3"),
    "gemma3": Family("Gemma 3 (text), 270M and up"),
    "phi3": Family("Phi-3.5-mini, Phi-4-mini",
                   gguf="llama.cpp converts a phi3 model only with a SentencePiece tokenizer.model or a "
                        "GPT2Tokenizer (Phi-4-mini's)"),
}
ALIASES = {"gemma3_text": "gemma3"}  # transformers' name for Gemma 3's text-only model


def model_type(base: Path) -> str:
    """The family name of a base (transformers' or llama.cpp's name, Gemma 3's text model as gemma3)."""
    kind = read_model_type(base)
    return ALIASES.get(kind, kind)


def check_family(base: Path, kind: str, backends: list[str]) -> None:
    """Refuse a family outside the table, or an export backend the family cannot take."""
    family = FAMILIES.get(kind)
    if family is None:
        raise EdgeftError(f"model.base: {base} is a '{kind}' model; generation recipes take "
                          f"{', '.join(FAMILIES)} (edgeft/generation/families.py)")
    if "genai" in backends and family.genai:
        raise EdgeftError(f"export.backends: genai: {family.genai}: drop genai from export.backends and take the "
                          "int4 variants from the optimum export (source: optimum)")
    if "gguf" in backends and family.gguf and not converts_phi3_vocab(Path(base)):
        raise EdgeftError(f"export.backends: gguf: {family.gguf}, and {base} has neither: drop gguf from "
                          "export.backends (the genai and optimum exports take it)")


def converts_phi3_vocab(base: Path) -> bool:
    """What llama.cpp's Phi3 converter reads a vocabulary from (conversion/phi.py's set_vocab)."""
    if not base.is_dir():
        return True  # a GGUF base: the converter reads the imported folder, whose tokenizer.json is checked then
    config = base / "tokenizer_config.json"
    return (base / "tokenizer.model").exists() or (
        config.exists() and json.loads(config.read_text()).get("tokenizer_class") == "GPT2Tokenizer")
