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


def chat_batch(examples: list[tuple[list[int], int]], pad_id: int) -> dict:
    """Left-padded chat batch; `keep` is how many final positions hold every answer token."""
    import torch

    ids, mask = left_padded([e[0] for e in examples], pad_id)
    answer_lengths = [len(full) - n_prompt for full, n_prompt in examples]
    keep = max(answer_lengths) + 1  # logits at the last prompt token predict the first answer token
    width = ids.shape[1]
    answer_mask = torch.zeros_like(ids, dtype=torch.bool)
    for row, n in enumerate(answer_lengths):
        answer_mask[row, width - n:] = True
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids, "answer_mask": answer_mask,
            "keep": keep}


def answer_nll(model, batch: dict):
    """Summed negative log-likelihood of the answer tokens and their count.

    Only the last `keep` positions go through the LM head: with a vocabulary of ~50k and prompts
    far longer than answers, the head over every position would cost more than the rest.
    """
    import torch
    import torch.nn.functional as F

    keep = batch["keep"]
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], logits_to_keep=keep, use_cache=False)
    logits = out.logits[:, :-1].float()                     # predicts positions -keep+1 .. end
    targets = batch["input_ids"][:, -keep + 1:]
    mask = batch["answer_mask"][:, -keep + 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    nll = nll.view_as(targets) * mask
    return nll.sum(), mask.sum()


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

    def __init__(self, rows: list[dict], tokenizer, task: str, max_length: int, labels: list[str]):
        self.task, self.tokenizer, self.max_length = task, tokenizer, max_length
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

    def batch(self, indices: list[int]) -> dict:
        import torch

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
            batch = {k: (v.to(model.device) if hasattr(v, "to") else v)
                     for k, v in examples.batch(list(range(start, min(n, start + batch_size)))).items()}
            if examples.task == "classification":
                batch.pop("labels", None)
                chunks.append(model(**batch).logits.float().cpu())
            else:
                keep = batch["keep"]
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            position_ids=batch["position_ids"], logits_to_keep=keep, use_cache=False)
                mask = batch["answer_mask"][:, -keep + 1:]
                chunks.append(out.logits[:, :-1].float()[mask].cpu())
    return torch.cat(chunks)
