"""Tasks (classification, generation): what each supplies to the stages, and the registry that
hands the stages the task a recipe names, so that no stage branches on the name.

The stages are written once; wherever the work differs by task they call the hooks of the Task
object below. A task package (edgeft/classification, edgeft/generation) subclasses Task and
registers its object when it is imported; `get_task` imports the package of that name on first
use, so that nothing below the task layer imports a task. `KNOWN` is the one place that names them.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from edgeft import EdgeftError

KNOWN = ("classification", "generation")  # each is the package edgeft.<name>


class Task:
    name = ""
    lora_task_type = ""  # peft's TaskType
    optimum_task = ""  # optimum-onnx's export task
    export_backends: tuple[str, ...] = ("optimum",)
    supports_packing = False
    head_modules: tuple[str, ...] = ()  # trained whole (peft's modules_to_save), never given LoRA
    dynamic_int8_ops: list[str] | None = None  # None: every op type quantize_dynamic knows
    large_model = False  # weights in external data files
    preprocess_before_int8 = False  # quant_pre_process (shape inference, fusions) first
    device_command = ""  # the CLI command that tries a bundle
    exported_lm_head = "all"  # which positions the exported graph computes logits for
    recipe_module = ""  # the module whose `RECIPE` is this task's recipe class (its fields, rules and variant kinds)

    @property
    def recipe_class(self):
        """The task's recipe schema (core/recipe.py's Recipe with the task's own fields and variant kinds)."""
        return importlib.import_module(self.recipe_module).RECIPE

    # --- data -------------------------------------------------------------------------------
    def shape_splits(self, splits: dict[str, list[dict]], rows: list[dict], cfg) -> tuple[dict, dict]:
        """The splits as the task trains on them, and the label information (labels.json)."""
        raise NotImplementedError

    # --- models -----------------------------------------------------------------------------
    def check_base(self, recipe, base: Path) -> None:
        """Refuse, before any work starts, a base model the recipe cannot train (read from its files'
        metadata, not by loading it)."""

    def load_tokenizer(self, path: Path):
        raise NotImplementedError

    def tokenizer_for(self, recipe, path: Path):
        """The tokenizer the tune stage trains with and saves: the base's, with what the recipe adds."""
        return self.load_tokenizer(path)

    def load_model(self, path: Path, labels: list[str] | None = None, **kwargs):
        raise NotImplementedError

    def examples(self, rows: list[dict], tokenizer, max_length: int, labels: list[str], packing: bool = False):
        raise NotImplementedError

    def write_preprocess(self, tokenizer, folder: Path, max_length: int) -> None:
        """Record the preprocessing the runtime must repeat (max_length, truncation...)."""

    # --- tune -------------------------------------------------------------------------------
    def evaluate(self, model, examples, batch_size: int, label_info: dict) -> dict:
        raise NotImplementedError

    def is_better(self, new: dict, best: dict | None) -> bool:
        return best is None or new["loss"] < best["loss"]

    # --- export and quantize ----------------------------------------------------------------
    def finish_export(self, merge_dir: Path, folder: Path, backend: str, data_dir: Path) -> None:
        """Edits and settings files after the exporter ran."""

    def export_parity(self, merge_dir: Path, folder: Path, backend: str, rows: list[dict], cfg) -> dict:
        raise NotImplementedError

    def drift_logits(self, fp32_dir: Path, quant_dir: Path, rows: list[dict]):
        """Logits of the fp32 and the quantized model on validation inputs (the same rows)."""
        raise NotImplementedError

    # --- bench ------------------------------------------------------------------------------
    def bench_plan(self, recipe, variants: list, data_dir: Path):
        """A benchkit.BenchPlan: which workers to start, what to ask them, how to score it."""
        raise NotImplementedError

    def report_view(self, report: dict) -> tuple[dict, dict | None]:
        """A bench report's table ({"headers", "rows"}, for the screen, Markdown and HTML) and its plot
        spec (quality against speed), made from its rows whenever it is shown."""
        raise NotImplementedError

    def device_usage(self, recipe) -> tuple[str, str]:
        """What a bundle of this task is, and a Python snippet that uses it."""
        raise NotImplementedError


_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    _TASKS[task.name] = task
    return task


def get_task(name: str | None) -> Task:
    if name not in _TASKS and name in KNOWN:
        importlib.import_module(f"edgeft.{name}")
    if name not in _TASKS:
        raise EdgeftError(f"unknown task '{name}' (known: {', '.join(KNOWN)})")
    return _TASKS[name]
