"""Chat data in the shapes users have, turned into OpenAI `messages`.

Fine-tuning data for a chat model comes in three shapes, and every tool writes one of them:
- `messages` (OpenAI's fine-tuning files, TRL): a list of {role, content} turns;
- `sharegpt` (ShareGPT dumps, Axolotl, LLaMA-Factory): `conversations`, a list of {from, value} turns
  where `from` is human, gpt or system;
- `alpaca` (Stanford Alpaca and its many copies): `instruction`, an optional `input`, and `output`.
The data stage detects the shape from a file's columns (or takes `data.format`), and the column names
map through `data.chat_columns`. Every row becomes {"messages": [...], "answer": <last turn>}, and a
row that does not fit says which row and which field.
"""
from __future__ import annotations

from typing import Callable

from edgeft import EdgeftError
from edgeft.core.schema import Section

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant"}


class ChatColumns(Section):
    """The columns a chat shape reads (rename them to match your file)."""
    messages: str = "messages"
    conversations: str = "conversations"
    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"


def _messages(value, where: str) -> list[dict]:
    if (not isinstance(value, list) or not value or
            not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in value)):
        raise EdgeftError(f"{where}: must be a list of {{role, content}} turns")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _sharegpt(value, where: str) -> list[dict]:
    if not isinstance(value, list) or not value or not all(isinstance(t, dict) for t in value):
        raise EdgeftError(f"{where}: must be a list of {{from, value}} turns")
    turns = []
    for i, turn in enumerate(value):
        role = SHAREGPT_ROLES.get(str(turn.get("from", "")).lower())
        if role is None or not isinstance(turn.get("value"), str):
            raise EdgeftError(f"{where}[{i}]: 'from' must be one of {', '.join(SHAREGPT_ROLES)} and 'value' a "
                              f"string (got from={turn.get('from')!r})")
        turns.append({"role": role, "content": turn["value"]})
    return turns


def _alpaca(row: dict, cols: ChatColumns, where: str) -> list[dict]:
    instruction, extra, output = row.get(cols.instruction), row.get(cols.input), row.get(cols.output)
    for name, value in ((cols.instruction, instruction), (cols.output, output)):
        if not isinstance(value, str) or not value.strip():
            raise EdgeftError(f"{where} '{name}': must be a non-empty string")
    prompt = f"{instruction.strip()}\n\n{extra.strip()}" if isinstance(extra, str) and extra.strip() else instruction.strip()
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": output.strip()}]


# shape -> (the columns that identify it, how one row becomes its turns)
SHAPES: dict[str, tuple[Callable[[ChatColumns], list[str]], Callable[[dict, ChatColumns, str], list[dict]]]] = {
    "messages": (lambda c: [c.messages], lambda r, c, w: _messages(r.get(c.messages), f"{w} '{c.messages}'")),
    "sharegpt": (lambda c: [c.conversations],
                 lambda r, c, w: _sharegpt(r.get(c.conversations), f"{w} '{c.conversations}'")),
    "alpaca": (lambda c: [c.instruction, c.output], _alpaca),
}


def detect(columns: list[str], fmt: str, cols: ChatColumns) -> str:
    """The file's shape: `data.format` when it names one (its columns checked), else the first
    shape whose columns the file has, else `labelled`."""
    if fmt == "labelled":
        return fmt
    if fmt != "auto":
        missing = [c for c in SHAPES[fmt][0](cols) if c not in columns]
        if missing:
            raise EdgeftError(f"data.format: {fmt} reads the column(s) {', '.join(missing)}, which the file lacks "
                              f"(columns: {', '.join(columns)}); name yours with --set data.chat_columns.<field>=NAME")
        return fmt
    return next((shape for shape, (needs, _) in SHAPES.items() if all(c in columns for c in needs(cols))), "labelled")


def to_chat_rows(shape: str, rows, cols: ChatColumns, where: Callable[[int], str]) -> list[dict]:
    """Rows of a chat shape as {"messages", "answer"}; `where(i)` names row i in an error."""
    convert = SHAPES[shape][1]
    out = []
    for i, row in enumerate(rows, start=1):
        messages = convert(row, cols, where(i))
        if messages[-1]["role"] != "assistant":
            raise EdgeftError(f"{where(i)}: the last turn must be the assistant's answer (it is {messages[-1]['role']}'s)")
        out.append({"messages": messages, "answer": messages[-1]["content"]})
    return out
