"""Chats as token ids: left-padded or packed batches, the loss on answer tokens only, and the
answer-token logits that merge and bench compare."""
from __future__ import annotations

from edgeft.generation.chat import encode_chat
from edgeft.training.batches import Examples, left_padded

FIRST_TOP_K = 32  # first-answer-token log-probabilities kept per example for the ledger's KL


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


def answer_scores(model, batch: dict, top_k: int = FIRST_TOP_K):
    """Per row: the answer's NLL, whether greedy decoding would produce exactly the answer (the
    argmax after every reference prefix is the reference token), and the top-k of the first answer
    token's log-probabilities (for the accuracy ledger)."""
    import torch

    logits, targets, mask = _answer_logits(model, batch)
    nll = _answer_token_nll(logits, targets, mask).sum(-1)
    exact = ((logits.argmax(-1) == targets) | ~mask).all(-1)
    first = logits[torch.arange(len(logits)), mask.int().argmax(-1)].log_softmax(-1).topk(top_k)
    return nll.tolist(), exact.tolist(), [{"ids": i, "logp": v} for i, v in zip(first.indices.tolist(),
                                                                               first.values.tolist())]


def top_logprobs(logits, top_k: int = FIRST_TOP_K) -> dict:
    """The top-k log-probabilities of one position's logits (numpy), as answer_scores gives them."""
    import numpy as np

    shifted = logits.astype(np.float64) - logits.max()
    logp = shifted - np.log(np.exp(shifted).sum())
    ids = np.argsort(-logp)[:top_k]
    return {"ids": ids.tolist(), "logp": logp[ids].tolist()}


class ChatExamples(Examples):
    def __init__(self, rows, tokenizer, max_length: int, labels: list[str], packing: bool = False):
        super().__init__(rows, tokenizer, max_length, labels)
        self.packing = packing
        self.lengths = [len(self.encode(r)[0]) for r in rows]  # tokenized here for the lengths only

    def encode(self, row: dict) -> tuple[list[int], int]:
        return encode_chat(self.tokenizer, row["messages"], self.max_length)

    def batch(self, indices: list) -> dict:
        pad = self.tokenizer.pad_token_id
        if indices and isinstance(indices[0], list):
            return packed_batch([[self.encode(r) for r in self.rows_at(row)] for row in indices], pad)
        return chat_batch([self.encode(r) for r in self.rows_at(indices)], pad)

    def loss(self, model, batch: dict, fused: bool = False):
        """The mean loss of the answer tokens. With fused cross-entropy (liger-kernel on CUDA) the
        model computes it from `labels` without materialising logits; otherwise only the positions
        that predict answer tokens go through the LM head."""
        if fused:
            labels = batch["input_ids"].masked_fill(~batch["answer_mask"], -100)
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        position_ids=batch["position_ids"], labels=labels, use_cache=False)
            return out.loss, int(batch["answer_mask"].sum())
        nll, count = answer_nll(model, batch)
        return nll / count.clamp(min=1), int(count)

    def logits(self, model, batch: dict):
        logits, _, mask = _answer_logits(model, batch)
        return logits[mask]


def evaluate(model, examples: ChatExamples, batch_size: int, label_info: dict) -> dict:
    """Validation loss: the mean NLL of the answer tokens."""
    import torch

    from edgeft.training.batches import to_device

    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: examples.lengths[i])
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            nll, n = answer_nll(model, to_device(examples.batch(order[start:start + batch_size]), model.device))
            total, count = total + float(nll), count + int(n)
    model.train()
    return {"loss": total / max(count, 1)}
