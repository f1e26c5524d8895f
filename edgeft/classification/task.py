"""The classification task's hooks (see core/task.py for what each one is for)."""
from __future__ import annotations

import json
from pathlib import Path

from edgeft import EdgeftError
from edgeft.classification import models
from edgeft.core.tasks import Task, register
from edgeft.runtime.files import PREPROCESS_FILE


class ClassificationTask(Task):
    name = "classification"
    lora_task_type = "SEQ_CLS"
    optimum_task = "text-classification"
    preprocess_before_int8 = True
    # newly initialised on top of the encoder: DistilBERT's pre_classifier ("all-linear" would give it LoRA
    # while peft also saves it whole, its name ending in "classifier", which peft refuses), ModernBERT's head
    head_modules = ("pre_classifier", "classifier", "score", "head")
    device_command = "predict"
    recipe_module = "edgeft.classification.recipe"

    def check_base(self, recipe, base):
        from edgeft.classification.families import check_family

        check_family(base)

    def shape_splits(self, splits, rows, cfg):
        if "label" not in rows[0]:
            raise EdgeftError("task classification needs labelled data (text and label columns), not chats")
        labels = sorted({r["label"] for r in rows})
        if len(labels) < 2:
            raise EdgeftError(f"data.label_column: only one label ({labels[0]}) in {cfg.source}")
        if cfg.positive_label and cfg.positive_label not in labels:
            raise EdgeftError(f"data.positive_label: '{cfg.positive_label}' is not a label (labels: {', '.join(labels)})")
        return splits, {"labels": labels, "positive_label": cfg.positive_label}

    def load_tokenizer(self, path):
        return models.load_tokenizer(path)

    def load_model(self, path, labels=None, **kwargs):
        return models.load_model(path, labels, **kwargs)

    def examples(self, rows, tokenizer, max_length, labels, packing=False):
        from edgeft.classification.examples import ClassificationExamples
        return ClassificationExamples(rows, tokenizer, max_length, labels)

    def write_preprocess(self, tokenizer, folder, max_length):
        settings = {"max_length": max_length, "truncation_side": tokenizer.truncation_side,
                    "padding_side": tokenizer.padding_side, "pad_token": tokenizer.pad_token,
                    "pad_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
                    "model_input_names": list(tokenizer.model_input_names)}
        (Path(folder) / PREPROCESS_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    def evaluate(self, model, examples, batch_size, label_info):
        from edgeft.classification.examples import evaluate
        return evaluate(model, examples, batch_size, label_info)

    def is_better(self, new, best):
        return best is None or (new["macro_f1"], -new["loss"]) > (best["macro_f1"], -best["loss"])

    def export_parity(self, merge_dir, folder, backend, rows, cfg):
        """PyTorch and ONNX logits on the same real texts, tokenized as the device runtime does."""
        import torch

        from edgeft.core.parity import compare_logits
        from edgeft.runtime import Classifier

        classifier = Classifier(folder, verify=False)
        encoded = classifier.encode([r["text"] for r in rows])
        model = self.load_model(merge_dir, classifier.labels).eval()
        with torch.no_grad():
            reference = model(**{k: torch.from_numpy(v) for k, v in encoded.items()}).logits
        return compare_logits(reference, classifier.logits(encoded))

    def drift_logits(self, fp32_dir, quant_dir, rows):
        import numpy as np

        from edgeft.runtime import Classifier

        texts = [r["text"] for r in rows]

        def logits(model):
            return np.concatenate([model.logits(model.encode(texts[i:i + 32])) for i in range(0, len(texts), 32)])

        return logits(Classifier(fp32_dir, verify=False)), logits(Classifier(quant_dir, verify=False))

    def bench_plan(self, recipe, variants, data_dir):
        from edgeft.classification.bench_plan import bench_plan
        return bench_plan(recipe, variants, data_dir)

    def report_view(self, report):
        from edgeft.classification.bench_plan import view
        return view(report)

    def device_usage(self, recipe):
        return (f"A text classifier ({recipe.model.base}, labels from labels.json)",
                'print(model.predict(["WINNER!! Claim your prize now", "see you at lunch"]))')


TASK = register(ClassificationTask())
