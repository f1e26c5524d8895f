"""Chats: labelled rows as chats, chat ids with the answer split off, and the chat template
flattened into plain per-role prefixes and suffixes so that the device needs no template engine."""
from __future__ import annotations

import json
from pathlib import Path

from edgeft import EdgeftError
from edgeft.core.recipe import DataSection
from edgeft.generation.templates import end_of_turn_id
from edgeft.runtime.files import GENERATION_FILE
from edgeft.runtime.greedy import format_chat
from edgeft.runtime.report import example_text

SENTINELS = {"system": "\u2063SYS\u2063", "user": "\u2063USR\u2063", "assistant": "\u2063AST\u2063"}


# --- chat settings ---------------------------------------------------------------------------
def chat_format(tokenizer) -> dict:
    """The chat template as plain prefix/suffix strings per role, so that the device needs no
    template engine. Checked by re-rendering a two-turn conversation both ways."""
    if not tokenizer.chat_template:
        return {"roles": {r: ["", "\n"] for r in SENTINELS}, "generation_prompt": "", "default_system": ""}
    S, U, A = SENTINELS["system"], SENTINELS["user"], SENTINELS["assistant"]

    def render(messages, gen=False):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    sys_msg, user_msg, asst_msg = ({"role": "system", "content": S}, {"role": "user", "content": U},
                                   {"role": "assistant", "content": A})
    s, su, sua = render([sys_msg]), render([sys_msg, user_msg]), render([sys_msg, user_msg, asst_msg])
    su_gen, u_gen = render([sys_msg, user_msg], True), render([user_msg], True)
    if not (su.startswith(s) and sua.startswith(su) and su_gen.startswith(su)):
        raise EdgeftError("the chat template is not a plain sequence of turns: edgeft cannot flatten it")
    user_part, generation_prompt = su[len(s):], su_gen[len(su):]
    roles = {"system": s.split(S), "user": user_part.split(U), "assistant": sua[len(su):].split(A)}
    tail = user_part + generation_prompt  # what a lone user turn renders to, after any default system turn
    chat = {"roles": roles, "generation_prompt": generation_prompt,
            "default_system": u_gen[:-len(tail)] if u_gen.endswith(tail) else ""}
    probe = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
             {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Who?"}]
    if format_chat(probe, chat) != render(probe, True) or format_chat(probe[1:2], chat) != render(probe[1:2], True):
        raise EdgeftError("the chat template could not be flattened into per-role prefixes and suffixes")
    return chat


def write_generation_settings(tokenizer, folder: Path, config, system_prompt: str | None, head_dim: int) -> dict:
    eos = config.eos_token_id
    stops = {*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id, end_of_turn_id(tokenizer)} - {None}
    settings = {"eos_token_ids": sorted(stops),
                "chat": chat_format(tokenizer), "system_prompt": system_prompt, "max_new_tokens": 128,
                "head_dim": head_dim}
    (Path(folder) / GENERATION_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    return settings



def to_chat(row: dict, cfg: DataSection) -> dict:
    """A labelled row as a chat whose assistant turn is the label's answer word."""
    if "messages" in row:
        return row
    answer = (cfg.label_words or {}).get(row["label"], row["label"])
    try:
        prompt = cfg.prompt_template.format(text=row["text"])
    except (KeyError, IndexError) as e:
        raise EdgeftError(f"data.prompt_template: unknown placeholder {e} (use {{text}})") from None
    messages = ([{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else [])
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return {"messages": messages, "answer": answer, "label": row["label"], "text": row["text"]}



def encode_chat(tokenizer, messages: list[dict], max_length: int) -> tuple[list[int], int]:
    """Token ids of a whole chat and how many of them are prompt (everything before the answer).

    The loss is taken on the answer tokens only (the last assistant turn and its end-of-turn token).
    """
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)
    if full[:len(prompt)] != prompt:  # templates that rewrite earlier turns: fall back to the prefix length
        prompt = full[:len(prompt)]
    # drop trailing white space tokens after the end-of-turn marker (ChatML ends with "\n")
    end_id = end_of_turn_id(tokenizer)
    if end_id is not None and end_id in full[len(prompt):]:
        full = full[:len(prompt) + full[len(prompt):].index(end_id) + 1]
    if len(full) > max_length:  # keep the answer, cut the prompt from the left
        cut = len(full) - max_length
        full, prompt = full[cut:], prompt[cut:]
    return full, len(prompt)


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """The prompt a model is given at inference: every turn but the answer, then the assistant header."""
    turns = messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages
    return tokenizer.apply_chat_template(turns, tokenize=True, add_generation_prompt=True)


def speed_prompt(tokenizer, rows: list[dict], tokens: int, field: str = "bench.prompt_tokens") -> list[int]:
    """The timing prompt: the first `tokens` token ids of the held-out examples' texts run together
    (real text, the same ids for every model)."""
    ids = tokenizer(" ".join(example_text(r) for r in rows), add_special_tokens=False)["input_ids"][:tokens]
    if len(ids) < tokens:
        raise EdgeftError(f"{field} {tokens}: the test texts hold only {len(ids)} tokens")
    return ids
