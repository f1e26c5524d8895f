"""Recipes: one YAML file that makes a run reproducible, validated by a pydantic schema.

Every field has a default, so a recipe states only what differs; a recipe can also `extends:`
another (a built-in recipe's name, or a file beside it) and state only what differs from that one.
Unknown keys are rejected with their dotted path; `--set section.key=value` overrides any field
(values are parsed as YAML). The sections every task shares are here; each task's recipe class adds
its own fields and rules (classification/recipe.py, generation/recipe.py), and its variants are the
kinds registered for it (core/variants.py).
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, Field, PositiveInt, ValidationError, model_validator

from edgeft import EdgeftError
from edgeft.core.chatshapes import ChatColumns
from edgeft.core.schema import Section
from edgeft.core.variants import config_of, kinds_for, tag
from edgeft.runtime.report import BENCH_DEFAULTS as BENCH

BUILTIN_RECIPES = Path(__file__).resolve().parent.parent / "recipes"  # shipped inside the package
DEFAULT_RECIPE = "sms-spam-minilm"
DEFAULT_TASK = "classification"


class ModelSection(Section):
    base: str = Field("minilm", description="model alias (minilm, smollm2), a local Hugging Face folder or a .gguf file")


class DataSection(Section):
    source: str = Field("sms-spam", description="dataset alias (sms-spam, trec), a local .csv, .tsv, .json, .jsonl or "
                                                "parquet file, or a datasets save_to_disk folder")
    encoding: str = Field("utf-8", description="text encoding of a csv / json source (e.g. latin-1)")
    format: Literal["auto", "labelled", "messages", "sharegpt", "alpaca"] = Field(
        "auto", description="labelled (text and label columns) or a chat shape (core/chatshapes.py); auto detects it")
    chat_columns: ChatColumns = ChatColumns()
    text_column: str = "text"
    label_column: str = "label"
    positive_label: Optional[str] = Field(None, description="label whose F1 is reported (classification)")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_size: Optional[int] = Field(None, gt=0, description="absolute test-set size; overrides test_fraction")
    max_train_samples: Optional[int] = Field(None, gt=0, description="train on a stratified subset (short CPU runs)")
    max_length: int = Field(128, gt=8, description="tokens per example; longer inputs are truncated")


class LoraSection(Section):
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Union[str, list[str]] = "all-linear"


class TuneSection(Section):
    method: Literal["lora", "qlora"] = "qlora"
    base_quant: Literal["nf4", "int4"] = Field(
        "nf4", description="qlora: the 4-bit grid the frozen base is held on while the adapter trains: nf4 "
                           "(bitsandbytes, QLoRA as published) or int4 (onnxruntime's MatMulNBits RTN in blocks of "
                           "grid_block_size, head at grid_head_bits: the grid the int4 variant ships; see "
                           "edgeft/training/grid.py)")
    grid_block_size: int = Field(32, ge=16, description="base_quant int4: the grid's block size; the recipe's "
                                                        "rtn int4 variants must use the same")
    grid_head_bits: Literal[4, 8] = Field(8, description="base_quant int4: the LM head's bits on the grid (a tied "
                                                         "embedding's too); the int4 variants' head_bits must match")
    qlora_mode: Literal["auto", "plain", "dequantized", "4bit"] = Field(
        "auto", description="how the NF4 base is held (see edgeft/training/qlora.py); auto picks from model size and free memory")
    gradient_checkpointing: Union[Literal["auto"], bool, int] = Field(
        "auto", description="true, false, or how many layers to checkpoint; auto: all on CUDA, none on CPU")
    lora: LoraSection = LoraSection()
    epochs: float = Field(2, gt=0)
    max_steps: Optional[int] = Field(None, gt=0, description="stop after this many optimizer steps")
    batch_size: Union[int, Literal["auto"]] = Field(32, description="examples (or packed rows) per step; auto: the "
                                                                   "largest power of two that fits (CUDA)")
    gradient_accumulation: int = Field(1, gt=0)
    learning_rate: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    packing: bool = Field(False, description="pack short examples into full rows (tasks that can: generation)")
    checkpoint_every: int = Field(50, gt=0, description="optimizer steps between resume checkpoints")
    eval_batch_size: int = Field(64, gt=0)
    threads: Optional[int] = Field(None, gt=0, description="CPU threads for torch (default: all cores)")

    @model_validator(mode="after")
    def _check_batch(self):
        _positive_or_auto(self.batch_size)
        return self


def _positive_or_auto(value):
    if value != "auto" and (not isinstance(value, int) or value <= 0):
        raise ValueError("must be a positive integer or 'auto'")
    return value


class MergeSection(Section):
    min_agreement: float = Field(0.98, ge=0, le=1, description="refuse the merge below this prediction agreement")
    samples: int = Field(256, gt=0, description="validation examples compared")


class ExportSection(Section):
    backends: list[Literal["optimum", "genai", "gguf"]] = Field(
        ["optimum"], description="optimum (optimum-onnx), genai (onnxruntime-genai's builder; decoders), gguf "
                                 "(llama.cpp's converter; decoders; needs `edgeft llamacpp-setup`)")
    opset: Optional[int] = None
    parity_atol: float = Field(1e-3, gt=0, description="max |ONNX - PyTorch| logit difference accepted")
    parity_samples: int = Field(32, gt=0)
    parity_new_tokens: int = Field(16, ge=0, description="generation: greedy tokens that must match PyTorch")


class QuantizeSection(Section):
    """Each task's recipe narrows `variants` to the union of its variant kinds (core/variants.py)."""
    variants: list[Any] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self):
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique: {', '.join(dupes)}")
        return self


class BenchSection(Section):
    """The defaults are the device bench's too (edgeft/runtime/report.py, BenchSettings)."""
    threads: list[PositiveInt] = Field(list(BENCH.threads), min_length=1, description="CPU thread counts to measure at")
    batch_size: int = Field(BENCH.batch_size, gt=0, description="batch for the throughput measurement")
    warmup: int = Field(BENCH.warmup, ge=0)
    iterations: int = Field(BENCH.iterations, gt=0, description="timed batch-1 runs per thread count and round")
    rounds: int = Field(BENCH.rounds, gt=0, description="variants are interleaved this many times (noisy machines)")
    max_test_samples: Optional[int] = Field(None, gt=0)
    include_pytorch: bool = True
    # generation
    prompt_tokens: int = Field(BENCH.prompt_tokens, gt=0)
    new_tokens: int = Field(BENCH.new_tokens, gt=0)
    max_new_tokens_eval: int = Field(BENCH.max_new_tokens_eval, gt=0, description="greedy tokens generated per test "
                                                                                  "question")


class SelectSection(Section):
    """A budget: the variant to ship is the one the objective prefers among those that fit every limit
    set (edgeft/benchkit/select.py). Quality is judged paired, against the fine-tuned fp32 model."""
    max_quality_drop: Optional[float] = Field(None, ge=0, description="points of the task metric (accuracy, exact "
                                              "match) the variant may lose against the fine-tuned fp32 model: the "
                                              "worse end of the drop's interval must be within it")
    max_size_mib: Optional[float] = Field(None, gt=0)
    max_peak_rss_mib: Optional[float] = Field(None, gt=0)
    max_p90_ms: Optional[float] = Field(None, gt=0, description="classification: batch-1 p90 latency (median over rounds)")
    max_ttft_ms: Optional[float] = Field(None, gt=0, description="generation: time to first token")
    min_decode_tokens_per_s: Optional[float] = Field(None, gt=0, description="generation: decode speed")
    threads: Optional[PositiveInt] = Field(None, description="thread count the budget is read at (default: the most "
                                                             "the bench measured)")
    objective: Literal["fastest", "smallest", "most_accurate"] = "fastest"
    confidence: float = Field(0.95, gt=0.5, lt=1, description="of the quality drop's interval")

    def active(self) -> bool:
        return any(getattr(self, f) is not None for f in ("max_quality_drop", "max_size_mib", "max_peak_rss_mib",
                                                           "max_p90_ms", "max_ttft_ms", "min_decode_tokens_per_s"))


class PackageSection(Section):
    variant: Optional[str] = Field(None, description="variant to ship; 'auto': the one `select` picks (the default "
                                                     "when select sets a limit; otherwise the first quantized variant)")
    zip: bool = Field(False, description="also write <run>/package.zip")
    with_runtime: bool = Field(True, description="put the edgeft-runtime wheel in the bundle, so that an offline "
                                                 "device installs it with `pip install bundle/*.whl`")
    eval_samples: int = Field(200, ge=0, description="held-out test examples shipped in the bundle (eval.jsonl), so "
                                                      "that the device can measure accuracy on the user's own task")


class TrackingSection(Section):
    mlflow: bool = Field(False, description="log every stage to MLflow (needs `pip install 'edgeft[track]'`)")
    uri: Optional[str] = Field(None, description="MLflow tracking URI (default: mlruns/ in the run folder)")
    experiment: Optional[str] = Field(None, description="MLflow experiment (default: the recipe's name)")


class Recipe(Section):
    """What every recipe has. Each task's recipe class (its `recipe_class`: classification/recipe.py,
    generation/recipe.py) adds its own fields and rules and narrows `quantize.variants` to its kinds."""
    name: str = "run"
    task: str = DEFAULT_TASK
    seed: int = 42
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    tune: TuneSection = TuneSection()
    merge: MergeSection = MergeSection()
    export: ExportSection = ExportSection()
    quantize: QuantizeSection = QuantizeSection()
    bench: BenchSection = BenchSection()
    select: SelectSection = SelectSection()
    package: PackageSection = PackageSection()
    tracking: TrackingSection = TrackingSection()

    @model_validator(mode="before")
    @classmethod
    def _known_variant_kinds(cls, data: Any) -> Any:
        """A variant whose (source, method) no kind of this task registers, named with the kinds there are."""
        task = cls.model_fields["task"].default
        items = ((data or {}).get("quantize") or {}).get("variants") if isinstance(data, dict) else None
        for i, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, dict) and config_of(task, tag(item)) is None:
                known = ", ".join(f"{k.source}:{m}" for k in kinds_for(task) for m in k.methods)
                raise ValueError(f"quantize.variants.{i} ({item.get('name')}): no variant kind '{tag(item)}' "
                                 f"(source:method) for task {task} (known: {known})")
        return data

    @model_validator(mode="after")
    def _check_across_sections(self):
        """What no single field can say: checked before any data is read, not after tuning."""
        from edgeft.core.tasks import get_task

        problems = []
        backends, allowed = self.export.backends, get_task(self.task).export_backends
        problems += [f"export.backends: '{b}' does not export {self.task} models (use {', '.join(allowed)})"
                     for b in backends if b not in allowed]
        for i, v in enumerate(self.quantize.variants):
            if v.source not in backends:
                problems.append(f"quantize.variants.{i} ({v.name}): source '{v.source}' is not in export.backends "
                                f"{backends}")
        problems += self.task_problems()
        shippable = [v.name for v in self.quantize.variants] + backends
        if self.select.threads and self.select.threads not in self.bench.threads:
            problems.append(f"select.threads: {self.select.threads} is not among bench.threads {self.bench.threads}")
        if self.package.variant not in (None, "auto") and self.package.variant not in shippable:
            problems.append(f"package.variant: '{self.package.variant}' names no variant of this recipe "
                            f"(variants: {', '.join(shippable)}, or auto)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def task_problems(self) -> list[str]:
        """The task's own rules across sections (a task's recipe class overrides this)."""
        return []


def _is_tag(loc: tuple, i: int, task: str) -> bool:
    """pydantic puts a variant's kind ("genai:int4") after its list index in error locations."""
    return i > 0 and isinstance(loc[i - 1], int) and config_of(task, loc[i]) is not None


def _format_errors(err: ValidationError, source: str, cls: type[Recipe]) -> str:
    task = cls.model_fields["task"].default
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for i, p in enumerate(e["loc"]) if not _is_tag(e["loc"], i, task))
        if e["type"] == "extra_forbidden":
            known = _known_keys(cls, e["loc"][:-1])
            near = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else (f" (known: {', '.join(known)})" if known else "")
            lines.append(f"  {loc}: unknown key{hint}")
        elif not loc:  # checks across sections say where themselves
            lines += [f"  {part}" for part in e["msg"].removeprefix("Value error, ").split("; ")]
        else:
            lines.append(f"  {loc}: {e['msg']}")
    return f"invalid recipe {source}:\n" + "\n".join(lines)


def _known_keys(cls: type[Recipe], loc: tuple) -> list[str]:
    task, model = cls.model_fields["task"].default, cls
    for i, part in enumerate(loc):
        if _is_tag(loc, i, task):
            model = config_of(task, part)
            continue
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return list(model.model_fields) if model is not None else []


def builtin_recipes() -> dict[str, Path]:
    """The recipes that ship inside the package, by name."""
    return {p.stem: p for p in sorted(BUILTIN_RECIPES.glob("*.yaml"))}


def recipe_summary(path: Path) -> str:
    """The first comment line of a recipe file: what it is for."""
    for line in Path(path).read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def resolve_recipe_path(ref: str | Path | None, beside: Path | None = None) -> Path:
    """A path (relative to `beside`'s folder first, for `extends`), or the name of a built-in recipe
    (the default when None)."""
    ref = str(ref or DEFAULT_RECIPE)
    builtin = builtin_recipes()
    candidates = [Path(beside).parent / ref] if beside else []
    for path in (*candidates, Path(ref).expanduser(), builtin.get(ref)):
        if path is not None and path.is_file():
            return path
    raise EdgeftError(f"recipe not found: {ref}" + (f" (built-in: {', '.join(builtin)})" if builtin else ""))


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides to a nested dict (list items by index: quantize.variants.0.name=x)."""
    for item in overrides:
        if "=" not in item:
            raise EdgeftError(f"--set expects key=value, got '{item}'")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise EdgeftError(f"--set {dotted}: cannot parse value '{raw}': {e}") from None
        node: Any = data
        for i, key in enumerate(keys[:-1]):
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise EdgeftError(f"--set {dotted}: no item {key} in {'.'.join(keys[:i]) or 'recipe'}")
                node = node[int(key)]
            else:
                node = node.setdefault(key, {})
            if not isinstance(node, (dict, list)):
                raise EdgeftError(f"--set {dotted}: {'.'.join(keys[:i + 1])} is a value ({node!r}), "
                                  "not a section or a list: it has no fields to set")
        last = keys[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise EdgeftError(f"--set {dotted}: no item {last}")
            node[int(last)] = value
        else:
            node[last] = value
    return data


def merged(base: dict, child: dict) -> dict:
    """`extends`: the child's fields over the base's; sections merge field by field, a list (such as
    quantize.variants) or a value in the child replaces the base's whole."""
    out = dict(base)
    for key, value in child.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def read_recipe_file(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A recipe file as a dict, with what it `extends` (a built-in recipe's name or a path beside it)
    merged under it. Its name, unless it says one, is its file's stem."""
    if path.resolve() in chain:
        raise EdgeftError(f"recipe {path}: 'extends' loops back to it ({' -> '.join(p.name for p in (*chain, path))})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise EdgeftError(f"recipe {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise EdgeftError(f"recipe {path} must be a mapping of sections")
    parent = data.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise EdgeftError(f"recipe {path}: extends: give one recipe, by name or path (got {parent!r})")
        base = read_recipe_file(resolve_recipe_path(parent, beside=path), (*chain, path.resolve()))
        base.pop("name", None)
        data = merged(base, data)
    data.setdefault("name", path.stem)
    return data


def recipe_class(task: Any) -> type[Recipe]:
    from edgeft.core.tasks import KNOWN, get_task

    if task not in KNOWN:
        raise EdgeftError(f"task: unknown task '{task}' (known: {', '.join(KNOWN)})")
    return get_task(task).recipe_class


def load_recipe(ref: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    path = resolve_recipe_path(ref)
    data = read_recipe_file(path)
    if overrides:
        task = next((o.split("=", 1)[1].strip() for o in overrides if o.startswith("task=")), data.get("task", DEFAULT_TASK))
        # overrides into list sections start from the defaults when the recipe does not list them
        if any(o.startswith("quantize.variants.") for o in overrides):
            defaults = recipe_class(task)().quantize.variants
            data.setdefault("quantize", {}).setdefault("variants", [v.model_dump() for v in defaults])
        data = apply_overrides(data, list(overrides))
    return recipe_from_dict(data, source=str(path))


def recipe_from_dict(data: dict, source: str = "recipe") -> Recipe:
    cls = recipe_class(data.get("task", DEFAULT_TASK))
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise EdgeftError(_format_errors(e, source, cls)) from None


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
