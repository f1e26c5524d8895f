"""Labelled texts as token ids, batches with labels, and validation metrics."""
from __future__ import annotations

from edgeft.training.batches import Examples, to_device

LENGTH_CHUNK = 4096


class ClassificationExamples(Examples):
    def __init__(self, rows, tokenizer, max_length: int, labels: list[str]):
        super().__init__(rows, tokenizer, max_length, labels)
        self.index = {label: i for i, label in enumerate(labels)}
        for start in range(0, len(rows), LENGTH_CHUNK):  # tokenized here for the lengths only
            texts = [r["text"] for r in self.rows_at(range(start, min(start + LENGTH_CHUNK, len(rows))))]
            self.lengths += [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]

    def batch(self, indices: list) -> dict:
        import torch

        rows = self.rows_at(indices)
        batch = dict(self.tokenizer([r["text"] for r in rows], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt"))
        batch["labels"] = torch.tensor([self.index[r["label"]] for r in rows])
        return batch

    def loss(self, model, batch: dict, fused: bool = False):
        return model(**batch).loss, batch["labels"].shape[0]

    def logits(self, model, batch: dict):
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def evaluate(model, examples: ClassificationExamples, batch_size: int, label_info: dict) -> dict:
    """Validation loss, accuracy and F1 (macro, and of the positive label)."""
    import torch

    from edgeft.core.metrics import classification_metrics

    model.eval()
    total, preds = 0.0, []
    order = sorted(range(len(examples)), key=lambda i: examples.lengths[i])
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            out = model(**to_device(examples.batch(idx), model.device))
            total += float(out.loss) * len(idx)
            preds += list(zip(idx, out.logits.argmax(-1).tolist()))
    model.train()
    labels = label_info["labels"]
    pred = [labels[p] for _, p in sorted(preds)]
    true = [r["label"] for r in examples.rows_at(range(len(examples)))]
    return {"loss": total / max(len(examples), 1),
            **classification_metrics(true, pred, labels, label_info.get("positive_label"))}
