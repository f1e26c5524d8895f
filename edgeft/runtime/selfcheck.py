"""A bundle that checks itself on the device: the token ids its tokenizer gave for a few sample
texts when it was packaged, compared with what the device's tokenizer gives now.

A tokenizer that behaves differently on the device (another `tokenizers` version, an edited or
half-copied tokenizer.json that still hashes right because the manifest was rewritten with it)
would silently feed the model other ids; here it is refused, naming the text that changed.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.files import TOKENIZER_CHECK_FILE, TOKENIZER_FILE
from edgeft.runtime.onnx import load_tokenizer

# besides the task's own texts: what normalizers and pre-tokenizers disagree on first
PROBES = ("Ünïcödé — naïve café, 10°C ½ 🙂", "  leading,\ttabs  and   spaces  ", "WINNER!! Call 0800-123-456 now :)")


def record(folder: Path, texts: list[str]) -> dict:
    """Write the ids of `texts` (and the probes) into the folder; returns what was written."""
    import tokenizers

    tokenizer = load_tokenizer(folder)
    samples = [{"text": t, "ids": tokenizer.encode(t).ids} for t in [*texts, *PROBES]]
    check = {"tokenizers": tokenizers.__version__, "samples": samples}
    (Path(folder) / TOKENIZER_CHECK_FILE).write_text(json.dumps(check, ensure_ascii=False, indent=1) + "\n")
    return check


def verify_tokenizer(folder: Path, tokenizer=None) -> int:
    """Raise EdgeftError naming the first sample whose ids changed; returns how many were checked
    (0 when the folder carries no self-test, as export and quantize artifacts do not). `tokenizer`:
    the folder's tokenizer already loaded, without truncation (saves loading it twice)."""
    import tokenizers

    path = Path(folder) / TOKENIZER_CHECK_FILE
    if not path.exists():
        return 0
    check = json.loads(path.read_text())
    tokenizer = tokenizer or load_tokenizer(folder)
    for sample in check["samples"]:
        ids = tokenizer.encode(sample["text"]).ids
        if ids != sample["ids"]:
            first = next((i for i, (a, b) in enumerate(zip(ids, sample["ids"])) if a != b), min(len(ids), len(sample["ids"])))
            raise EdgeftError(f"{Path(folder) / TOKENIZER_FILE} tokenizes {sample['text']!r} differently than when the "
                              f"bundle was made (ids differ from position {first}: {ids[first:first + 4]} instead of "
                              f"{sample['ids'][first:first + 4]}; tokenizers {tokenizers.__version__} here, "
                              f"{check['tokenizers']} then): the model would see other tokens")
    return len(check["samples"])
