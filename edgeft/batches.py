"""Turning examples into tensors: classification batches and chat batches with answer-only labels."""
from __future__ import annotations

import random
from typing import Sequence


def encode_chat(tokenizer, messages: list[dict], max_length: int) -> tuple[list[int], int]:
    """Token ids of a whole chat and how many of them are prompt (everything before the answer).

    The loss is taken on the answer tokens only (the last assistant turn and its end-of-turn token).
    """
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)
    if full[:len(prompt)] != prompt:  # templates that rewrite earlier turns: fall back to the prefix length
        prompt = full[:len(prompt)]
    # drop trailing white space tokens after the end-of-turn marker (ChatML ends with "\n")
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
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


def left_padded(sequences: Sequence[list[int]], pad_id: int):
    """Left-pad so that every sequence ends at the last position (answers line up at the end)."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids, mask


def _with_positions(batch: dict) -> dict:
    """Add the positions whose logits are needed: the one before each answer token."""
    import torch

    needed = batch["answer_mask"].any(0).nonzero().flatten() - 1
    batch["predict_positions"] = needed[needed >= 0].to(torch.long)
    batch["tokens"] = int(batch["attention_mask"].sum()) if batch.get("attention_mask") is not None \
        else int(batch["input_ids"].numel())
    return batch


def chat_batch(examples: list[tuple[list[int], int]], pad_id: int) -> dict:
    """Left-padded chat batch: every answer ends at the last position."""
    import torch

    ids, mask = left_padded([e[0] for e in examples], pad_id)
    width = ids.shape[1]
    answer_mask = torch.zeros_like(ids, dtype=torch.bool)
    for row, (full, n_prompt) in enumerate(examples):
        answer_mask[row, width - (len(full) - n_prompt):] = True
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return _with_positions({"input_ids": ids, "attention_mask": mask, "position_ids": position_ids,
                            "answer_mask": answer_mask})


def pack_rows(lengths: Sequence[int], max_length: int, seed: int) -> list[list[int]]:
    """Examples packed first-fit-decreasing into rows of at most max_length tokens, rows shuffled."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([i])
            room.append(max_length - lengths[i])
        else:
            rows[slot].append(i)
            room[slot] -= lengths[i]
    random.Random(seed).shuffle(rows)
    return rows


def packed_batch(rows: list[list[tuple[list[int], int]]], pad_id: int) -> dict:
    """Padding-free packing: the examples of a row follow each other and their position ids restart
    at 0, which transformers turns into a block-diagonal causal mask (no attention across examples)."""
    import torch

    width = max(sum(len(full) for full, _ in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros_like(ids)
    answer_mask = torch.zeros_like(ids, dtype=torch.bool)
    for r, row in enumerate(rows):
        at = 0
        for full, n_prompt in row:
            ids[r, at:at + len(full)] = torch.tensor(full)
            positions[r, at:at + len(full)] = torch.arange(len(full))
            answer_mask[r, at + n_prompt:at + len(full)] = True
            at += len(full)
        positions[r, at:] = torch.arange(width - at)  # padding: a sequence of its own, never scored
    return _with_positions({"input_ids": ids, "attention_mask": None, "position_ids": positions,
                            "answer_mask": answer_mask})


def _answer_logits(model, batch: dict):
    """Logits at the positions that predict answer tokens, the tokens they predict, and which count.

    Only those positions go through the LM head: with a vocabulary of ~50k and prompts far longer
    than answers, the head over every position would cost more than the rest of the model.
    """
    positions = batch["predict_positions"]
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], logits_to_keep=positions, use_cache=False)
    return out.logits.float(), batch["input_ids"][:, positions + 1], batch["answer_mask"][:, positions + 1]


def _answer_token_nll(logits, targets, mask):
    """NLL of every target token, zero where the mask says it is not an answer token."""
    import torch.nn.functional as F

    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return nll.view_as(targets) * mask


def answer_nll(model, batch: dict):
    """Summed negative log-likelihood of the answer tokens and their count."""
    logits, targets, mask = _answer_logits(model, batch)
    return _answer_token_nll(logits, targets, mask).sum(), mask.sum()


def answer_scores(model, batch: dict):
    """Per row: the answer's NLL, and whether greedy decoding would produce exactly the answer
    (the argmax after every reference prefix is the reference token)."""
    logits, targets, mask = _answer_logits(model, batch)
    nll = _answer_token_nll(logits, targets, mask).sum(-1)
    exact = ((logits.argmax(-1) == targets) | ~mask).all(-1)
    return nll.tolist(), exact.tolist()


def to_device(batch: dict, device) -> dict:
    """Tensors of a batch moved to `device`; other entries (counts) kept as they are."""
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}


def classification_batch(tokenizer, texts: list[str], max_length: int) -> dict:
    return dict(tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches of examples of similar length (less padding), the order fixed by the seed."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    group = batch_size * 16
    batches = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start:start + group], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


class Examples:
    """The training examples of either task as token ids, and how to batch them."""

    def __init__(self, rows: list[dict], tokenizer, task: str, max_length: int, labels: list[str],
                 packing: bool = False):
        self.task, self.tokenizer, self.max_length, self.packing = task, tokenizer, max_length, packing
        if self.task == "classification":
            index = {l: i for i, l in enumerate(labels)}
            self.texts = [r["text"] for r in rows]
            self.targets = [index[r["label"]] for r in rows]
            enc = tokenizer(self.texts, truncation=True, max_length=self.max_length)
            self.lengths = [len(ids) for ids in enc["input_ids"]]
        else:
            self.chats = [encode_chat(tokenizer, r["messages"], self.max_length) for r in rows]
            self.lengths = [len(full) for full, _ in self.chats]

    def __len__(self):
        return len(self.lengths)

    def batches(self, batch_size: int, seed: int) -> list[list]:
        """One epoch's batches in a seeded order: lists of example indices, or with packing, lists
        of rows (each a list of example indices)."""
        if self.packing:
            rows = pack_rows(self.lengths, self.max_length, seed)
            return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
        return length_grouped_batches(self.lengths, batch_size, seed)

    def batch(self, indices: list) -> dict:
        import torch

        if indices and isinstance(indices[0], list):
            return packed_batch([[self.chats[i] for i in row] for row in indices], self.tokenizer.pad_token_id)
        if self.task == "classification":
            batch = classification_batch(self.tokenizer, [self.texts[i] for i in indices], self.max_length)
            batch["labels"] = torch.tensor([self.targets[i] for i in indices])
            return batch
        return chat_batch([self.chats[i] for i in indices], self.tokenizer.pad_token_id)


def collect_logits(model, examples: Examples, batch_size: int, limit: int | None = None):
    """Logits a model gives on examples: per example for classification, per answer token (teacher
    forced) for generation. Used to compare two models that should agree."""
    import torch

    n = min(len(examples), limit or len(examples))
    chunks = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = to_device(examples.batch(list(range(start, min(n, start + batch_size)))), model.device)
            if examples.task == "classification":
                batch.pop("labels", None)
                chunks.append(model(**batch).logits.float().cpu())
            else:
                logits, _, mask = _answer_logits(model, batch)
                chunks.append(logits[mask].cpu())
    return torch.cat(chunks)
