"""Examples as token ids and how to batch them: what both tasks share.

Each task's `Examples` subclass (classification/examples.py, generation/examples.py) says how a row
becomes ids, how ids become a batch, the loss of a batch, and the logits two models are compared on.
"""
from __future__ import annotations

import random
from typing import Sequence


def to_device(batch: dict, device) -> dict:
    """Tensors of a batch moved to `device`; other entries (counts) kept as they are."""
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}


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
    """A split's examples, read as they are batched. Subclasses set `lengths` and implement `batch`,
    `loss` and `logits`; `packing` is offered by tasks whose batches can hold several examples a row."""

    packing = False

    def __init__(self, rows: Sequence[dict], tokenizer, max_length: int, labels: list[str]):
        # rows: a list, or the split memory-mapped by `datasets` (core/splits.open_split); only the
        # lengths are held, and a batch tokenizes its own rows
        self.rows, self.tokenizer, self.max_length, self.labels = rows, tokenizer, max_length, labels
        self.lengths: list[int] = []

    def rows_at(self, indices) -> list[dict]:
        return [self.rows[int(i)] for i in indices]

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
        raise NotImplementedError

    def loss(self, model, batch: dict, fused: bool = False):
        """Mean loss of a batch and the number of tokens (or examples) it covers."""
        raise NotImplementedError

    def logits(self, model, batch: dict):
        """The logits a comparison of two models looks at (rows: examples or answer tokens)."""
        raise NotImplementedError

    def collect_logits(self, model, batch_size: int, limit: int | None = None):
        """`logits` over the first `limit` examples, concatenated."""
        import torch

        n = min(len(self), limit or len(self))
        chunks = []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                batch = to_device(self.batch(list(range(start, min(n, start + batch_size)))), model.device)
                chunks.append(self.logits(model, batch).float().cpu())
        return torch.cat(chunks)


def epoch_batches(examples: Examples, batch_size: int, seed: int, world: int) -> list[list]:
    batches = examples.batches(batch_size, seed)
    full = [b for b in batches if len(b) == batch_size] or batches  # equal shapes across ranks
    return full[:len(full) - len(full) % world] if len(full) >= world else full
