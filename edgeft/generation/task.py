"""The generation task's hooks (see core/task.py for what each one is for)."""
from __future__ import annotations

from edgeft.core.tasks import Task, register
from edgeft.generation import models


class GenerationTask(Task):
    name = "generation"
    lora_task_type = "CAUSAL_LM"
    optimum_task = "text-generation-with-past"
    export_backends = ("optimum", "genai", "gguf")
    supports_packing = True
    # the embedding (Gather) stays: per-tensor int8 there hurts and, with a tied head, makes every
    # decode step dequantize the whole vocabulary matrix
    dynamic_int8_ops = ["MatMul", "Gemm"]
    large_model = True
    device_command = "chat"
    exported_lm_head = "last_token_only"
    recipe_module = "edgeft.generation.recipe"

    def shape_splits(self, splits, rows, cfg):
        from edgeft.generation.chat import to_chat

        labelled = "label" in rows[0]
        labels = sorted({r["label"] for r in rows}) if labelled else []
        info = {"labels": labels, "positive_label": cfg.positive_label,
                "label_words": {label: (cfg.label_words or {}).get(label, label) for label in labels}}
        return {k: [to_chat(r, cfg) for r in v] for k, v in splits.items()}, info

    def check_base(self, recipe, base):
        from edgeft.generation.families import check_family, model_type
        from edgeft.generation.templates import check_base

        check_family(base, model_type(base), list(recipe.export.backends))
        check_base(base, recipe.data.chat_template)

    def load_tokenizer(self, path):
        return models.load_tokenizer(path)

    def tokenizer_for(self, recipe, path):
        from edgeft.generation.templates import apply

        return apply(self.load_tokenizer(path), recipe.data.chat_template)

    def load_model(self, path, labels=None, **kwargs):
        return models.load_model(path, **kwargs)

    def examples(self, rows, tokenizer, max_length, labels, packing=False):
        from edgeft.generation.examples import ChatExamples
        return ChatExamples(rows, tokenizer, max_length, labels, packing=packing)

    def evaluate(self, model, examples, batch_size, label_info):
        from edgeft.generation.examples import evaluate
        return evaluate(model, examples, batch_size, label_info)

    def finish_export(self, merge_dir, folder, backend, data_dir):
        """Last-token logits (the genai builder does this itself) and the runtime's chat settings."""
        from transformers import AutoConfig

        from edgeft.core.artifacts import read_manifest
        from edgeft.generation.chat import write_generation_settings
        from edgeft.generation.graph import prune_lm_head
        from edgeft.runtime.files import ONNX_FILE

        if backend == "optimum":
            prune_lm_head(folder / ONNX_FILE)
        config = AutoConfig.from_pretrained(merge_dir)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        system_prompt = read_manifest(data_dir, verify=False).config.get("system_prompt")
        write_generation_settings(self.load_tokenizer(merge_dir), folder, config, system_prompt, head_dim)

    def export_parity(self, merge_dir, folder, backend, rows, cfg):
        from edgeft.generation.parity import generation_parity
        return generation_parity(merge_dir, folder, backend, rows, cfg.parity_new_tokens, cfg.parity_atol)

    def drift_logits(self, fp32_dir, quant_dir, rows):
        """The first answer token's logits of 16 validation chats."""
        import numpy as np

        from edgeft.generation.models import load_generator

        ref, new = load_generator(fp32_dir), load_generator(quant_dir)
        prompts = [ref.encode_chat(r["messages"][:-1]) for r in rows[:16]]
        return np.stack([ref.prefill(p)[0] for p in prompts]), np.stack([new.prefill(p)[0] for p in prompts])

    def bench_plan(self, recipe, variants, data_dir):
        from edgeft.generation.bench_plan import bench_plan
        return bench_plan(recipe, variants, data_dir)

    def report_view(self, report):
        from edgeft.generation.bench_plan import view
        return view(report)

    def device_usage(self, recipe):
        return (f"A text generator ({recipe.model.base}) with its KV cache",
                'for piece in model.stream("What does NASA stand for ?"):\n    print(piece, end="", flush=True)')


TASK = register(GenerationTask())
