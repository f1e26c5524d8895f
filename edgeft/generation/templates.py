"""Chat templates for base models that bring none.

An instruct model's GGUF or tokenizer carries its chat template, and edgeft trains and serves in
that format. A base model (Gemma 3 270M as Google publishes it for fine-tuning, any pretrained-only
checkpoint) has none: `tokenizer.apply_chat_template` then fails deep inside the tune stage. So a
generation recipe checks the base before any work starts (`check_base`), and a base without a
template needs `data.chat_template`: one of edgeft's named templates below, or a Jinja template of
the user's own. The recipe's template is set on the tokenizer the tune stage saves, so the merge,
the exports and the bundle (whose runtime flattens it into per-role prefixes: chat.py) all use it.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgeft import EdgeftError

# name -> a Jinja template in the shape chat.chat_format flattens: a prefix and suffix per role
TEMPLATES = {
    # ChatML (SmolLM2, Qwen): works with any vocabulary, the markers are plain text where they are not tokens
    "chatml": ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    # Gemma's turn markers (single tokens in every Gemma vocabulary, base models included), BOS first
    "gemma": ("{{ bos_token }}{% for message in messages %}<start_of_turn>"
              "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
              "{{ message['content'] }}<end_of_turn>\n{% endfor %}"
              "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"),
}
# the end-of-turn markers of the templates edgeft knows: the answer's last token, and a stop token
END_OF_TURN = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")


def resolve(value: str) -> str:
    """`data.chat_template` as a Jinja template: a name from TEMPLATES, or the template itself."""
    if value in TEMPLATES:
        return TEMPLATES[value]
    if "{%" in value or "{{" in value:
        return value
    raise EdgeftError(f"data.chat_template: '{value[:40]}' is neither a template edgeft names "
                      f"({', '.join(TEMPLATES)}) nor a Jinja template (no {{% or {{{{ in it)")


def has_chat_template(base: Path) -> bool:
    """Whether a GGUF file or a Hugging Face folder brings its own chat template (read from its
    metadata, without loading the model)."""
    base = Path(base)
    if base.is_file():
        import gguf

        return "tokenizer.chat_template" in gguf.GGUFReader(str(base)).fields
    if (base / "chat_template.jinja").exists() or (base / "chat_template.json").exists():
        return True
    config = base / "tokenizer_config.json"
    return config.exists() and bool(json.loads(config.read_text()).get("chat_template"))


def check_base(base: Path, chat_template: str | None, field: str = "model.base") -> None:
    """Refuse, before any work, a base that has no chat template when the recipe gives none."""
    if chat_template:
        resolve(chat_template)
    elif not has_chat_template(base):
        raise EdgeftError(f"{field}: {base} has no chat template (a base model, not an instruct one), and a chat "
                          f"model is trained and served in one: give one with --set data.chat_template=NAME, where "
                          f"NAME is one of edgeft's ({', '.join(TEMPLATES)}; gemma for Gemma models), or a Jinja "
                          "template of your own in the recipe")


def apply(tokenizer, chat_template: str | None):
    """The tokenizer with the recipe's template, if it gives one."""
    if chat_template:
        tokenizer.chat_template = resolve(chat_template)
    return tokenizer


def end_of_turn_id(tokenizer) -> int | None:
    """The token that ends an assistant turn in this tokenizer's template, when it is one token."""
    template, vocab = tokenizer.chat_template or "", tokenizer.get_vocab()
    return next((vocab[m] for m in END_OF_TURN if m in template and m in vocab), None)
