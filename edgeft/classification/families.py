"""The encoder families a classification recipe takes (config.json's model_type -> what they are).

Each goes through every stage on a tiny model in tests/test_families.py: QLoRA (NF4) and LoRA, the merge
gate, optimum's export with its parity check, dynamic and static int8 and int4, the bench, the bundle
and `edgeft-runtime predict`. A base outside the table is refused before any work starts."""
from __future__ import annotations

from pathlib import Path

from edgeft import EdgeftError
from edgeft.core.models import model_type

FAMILIES = {
    "bert": "BERT, MiniLM (the default base)",
    "distilbert": "DistilBERT",
    "roberta": "RoBERTa",
    "xlm-roberta": "XLM-RoBERTa",
    "modernbert": "ModernBERT",
}


def check_family(base: Path) -> None:
    kind = model_type(base) if Path(base).is_dir() else "a GGUF"
    if kind not in FAMILIES:
        raise EdgeftError(f"model.base: {base} is a '{kind}' model; classification recipes take "
                          f"{', '.join(FAMILIES)} (edgeft/classification/families.py)")
