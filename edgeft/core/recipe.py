"""Recipes: one YAML file that makes a run reproducible, validated by a pydantic schema.

Every field has a default, so a recipe states only what differs. Unknown keys are rejected with
their dotted path; `--set section.key=value` overrides any field (values are parsed as YAML).
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from edgeft import EdgeftError

BUILTIN_RECIPES = Path(__file__).resolve().parent.parent / "recipes"  # shipped inside the package
DEFAULT_RECIPE = "sms-spam-minilm"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    base: str = Field("minilm", description="model alias (minilm, smollm2), a local Hugging Face folder or a .gguf file")


class DataSection(Section):
    source: str = Field("sms-spam", description="dataset alias (sms-spam, trec) or a local .csv / .jsonl file")
    encoding: str = Field("utf-8", description="text encoding of a .csv / .jsonl source (e.g. latin-1)")
    text_column: str = "text"
    label_column: str = "label"
    positive_label: Optional[str] = Field(None, description="label whose F1 is reported (classification)")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_size: Optional[int] = Field(None, gt=0, description="absolute test-set size; overrides test_fraction")
    max_train_samples: Optional[int] = Field(None, gt=0, description="train on a stratified subset (short CPU runs)")
    max_length: int = Field(128, gt=8, description="tokens per example; longer inputs are truncated")
    # generation: how a labelled row becomes a chat (chat JSONL with `messages` is used as it is)
    system_prompt: Optional[str] = None
    prompt_template: str = "{text}"
    label_words: Optional[dict[str, str]] = Field(None, description="label -> answer text the model must produce")


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
    packing: bool = Field(False, description="generation: pack short examples into full rows")
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


class _Variant(Section):
    name: str
    source: Literal["optimum", "genai", "gguf"] = Field("optimum", description="which export the variant starts from")


class DynamicVariant(_Variant):
    """int8 weights, activations quantized at run time (quantize_dynamic)."""
    method: Literal["dynamic"]
    per_channel: bool = True
    reduce_range: bool = Field(False, description="7-bit weights: needed by u8s8 kernels on CPUs without VNNI")


class StaticVariant(_Variant):
    """int8 QDQ calibrated on training examples (classification)."""
    method: Literal["static"]
    per_channel: bool = True
    reduce_range: bool = False
    calibration_samples: int = Field(128, gt=0)
    calibrate_method: Literal["minmax", "percentile", "entropy"] = "minmax"


class Int4Variant(_Variant):
    """Weight-only MatMulNBits, block-wise: 4-bit weights (`int4`) or 8-bit ones (`int8-weights`)."""
    method: Literal["int4", "int8-weights"]
    algorithm: Literal["rtn", "k_quant", "hqq"] = Field(
        "rtn", description="how the weights are rounded: rtn (round to nearest), k_quant (scale and zero point "
                           "searched per block, as llama.cpp's k-quants), hqq (half-quadratic; source optimum)")
    lora: Literal["merged", "unmerged"] = Field(
        "merged", description="generation, source genai: unmerged keeps the LoRA A/B matrices in fp32 beside the "
                              "quantized base, as an onnxruntime adapter file (per-user adapters on one base)")
    block_size: int = Field(32, ge=16)
    symmetric: bool = True
    accuracy_level: Optional[Literal[0, 1, 2, 3, 4]] = None
    head_bits: Optional[Literal[4, 8]] = Field(8, description="generation: LM head at int8/int4; null keeps fp32")
    embedding_bits: Optional[Literal[4]] = Field(
        None, description="generation, source optimum: the embedding as 4-bit GatherBlockQuantized (the genai "
                          "builder shares it with the head)")
    prefill_accuracy_level: Optional[Literal[0, 1, 2, 3, 4]] = Field(
        None, description="generation: MatMulNBits accuracy level for the prompt (a second graph, same weights, "
                          "used on CPUs with AVX-512: 1, fp32 compute, prefilled 21% faster there and slower on AVX2)")
    head_shortlist: Optional[int] = Field(
        None, ge=2, le=1024, description="generation, int4 with head_bits 8: an int4 copy of the head picks this many "
                                         "tokens and their int8 rows rescore them (edgeft/generation/shortlist.py)")
    kv_cache: Optional[Literal["int8"]] = Field(
        None, description="generation, source genai: past keys and values at int8, per-channel scales calibrated on "
                          "training chats (edgeft/generation/kvquant.py): faster decoding; the prompt runs a second graph "
                          "with fp32 attention (more memory)")

    @property
    def bits(self) -> int:
        return 8 if self.method == "int8-weights" else 4

    @model_validator(mode="after")
    def _shortlist_of_an_int8_head(self):
        if self.head_shortlist is not None and (self.method != "int4" or self.head_bits != 8 or self.lora != "merged"
                                                or not self.symmetric):
            raise ValueError("head_shortlist needs method int4, head_bits 8, symmetric and lora merged (it rescores "
                             "the int8 head's rows)")
        return self

    @model_validator(mode="after")
    def _kv_cache_of_a_shared_cache(self):
        if self.kv_cache and (self.source != "genai" or self.lora != "merged"):
            raise ValueError("kv_cache: int8 needs source genai and lora merged (onnxruntime's GroupQueryAttention "
                             "with a shared cache)")
        return self


class GgufVariant(_Variant):
    """A llama.cpp type of the GGUF export (source gguf), made by llama.cpp's own quantizer."""
    method: Literal["gguf"]
    type: Literal["F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_0", "Q4_1", "Q3_K_M",
                  "Q2_K"] = Field("Q4_K_M", description="llama.cpp's file type (llama-quantize's names)")


VariantSection = Annotated[Union[DynamicVariant, StaticVariant, Int4Variant, GgufVariant],
                           Field(discriminator="method")]
VARIANT_CLASSES = {"dynamic": DynamicVariant, "static": StaticVariant, "int4": Int4Variant, "int8-weights": Int4Variant,
                   "gguf": GgufVariant}


def _default_variants() -> list:
    return [DynamicVariant(name="int8-dynamic", method="dynamic"),
            StaticVariant(name="int8-static", method="static"),
            Int4Variant(name="int4", method="int4")]


class QuantizeSection(Section):
    variants: list[VariantSection] = Field(default_factory=_default_variants)

    @model_validator(mode="after")
    def _unique_names(self):
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique: {', '.join(dupes)}")
        return self


class BenchSection(Section):
    threads: list[PositiveInt] = Field([1, 2], min_length=1, description="CPU thread counts to measure at")
    batch_size: int = Field(32, gt=0, description="batch for the throughput measurement")
    warmup: int = Field(5, ge=0)
    iterations: int = Field(60, gt=0, description="timed batch-1 runs per thread count and round")
    rounds: int = Field(3, gt=0, description="variants are interleaved this many times (noisy machines)")
    max_test_samples: Optional[int] = Field(None, gt=0)
    include_pytorch: bool = True
    # generation
    prompt_tokens: int = Field(128, gt=0)
    new_tokens: int = Field(64, gt=0)
    max_new_tokens_eval: int = Field(8, gt=0, description="greedy tokens generated per test question")


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
    name: str = "run"
    task: Literal["classification", "generation"] = "classification"
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

    @model_validator(mode="after")
    def _check_across_sections(self):
        """What no single field can say: checked before any data is read, not after tuning."""
        problems = []
        backends = self.export.backends
        for backend in ("genai", "gguf"):
            if self.task != "generation" and backend in backends:
                problems.append(f"export.backends: '{backend}' exports decoders (task generation) only")
        for i, v in enumerate(self.quantize.variants):
            where = f"quantize.variants.{i} ({v.name})"
            if v.source not in backends:
                problems.append(f"{where}: source '{v.source}' is not in export.backends {backends}")
            if v.method == "static" and self.task == "generation":
                problems.append(f"{where}: static int8 is implemented for classification only")
            if (v.source == "gguf") != isinstance(v, GgufVariant):
                problems.append(f"{where}: llama.cpp types (method gguf) are made from source 'gguf', and only they")
            elif v.source == "genai" and not isinstance(v, Int4Variant):
                problems.append(f"{where}: source 'genai' builds weight-only variants only (int4, int8-weights)")
            elif getattr(v, "lora", None) == "unmerged" and (v.source != "genai" or self.task != "generation"):
                problems.append(f"{where}: lora 'unmerged' is built by the genai builder (source genai, generation)")
            elif getattr(v, "algorithm", None) == "hqq" and v.source == "genai":
                problems.append(f"{where}: algorithm 'hqq' needs source 'optimum' (the genai builder offers rtn, k_quant)")
            if (self.tune.method == "qlora" and self.tune.base_quant == "int4" and getattr(v, "method", None) == "int4"
                    and v.algorithm == "rtn" and (v.block_size, v.head_bits) != (self.tune.grid_block_size,
                                                                                 self.tune.grid_head_bits)):
                problems.append(f"{where}: block_size {v.block_size}, head_bits {v.head_bits} is not the grid the adapter "
                                f"trains against (tune.grid_block_size {self.tune.grid_block_size}, "
                                f"grid_head_bits {self.tune.grid_head_bits})")
        shippable = [v.name for v in self.quantize.variants] + backends
        if self.select.threads and self.select.threads not in self.bench.threads:
            problems.append(f"select.threads: {self.select.threads} is not among bench.threads {self.bench.threads}")
        if self.package.variant not in (None, "auto") and self.package.variant not in shippable:
            problems.append(f"package.variant: '{self.package.variant}' names no variant of this recipe "
                            f"(variants: {', '.join(shippable)}, or auto)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _is_tag(loc: tuple, i: int) -> bool:
    """pydantic puts a variant's `method` after its list index in error locations."""
    return i > 0 and isinstance(loc[i - 1], int) and loc[i] in VARIANT_CLASSES


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for i, p in enumerate(e["loc"]) if not _is_tag(e["loc"], i))
        if e["type"] == "extra_forbidden":
            known = _known_keys(e["loc"][:-1])
            near = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else (f" (known: {', '.join(known)})" if known else "")
            lines.append(f"  {loc}: unknown key{hint}")
        elif not loc:  # checks across sections say where themselves
            lines += [f"  {part}" for part in e["msg"].removeprefix("Value error, ").split("; ")]
        else:
            lines.append(f"  {loc}: {e['msg']}")
    return f"invalid recipe {source}:\n" + "\n".join(lines)


def _known_keys(loc: tuple) -> list[str]:
    model: Any = Recipe
    for i, part in enumerate(loc):
        if _is_tag(loc, i):
            model = VARIANT_CLASSES[part]
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


def resolve_recipe_path(ref: str | Path | None) -> Path:
    """A path, or the name of a built-in recipe (the default when None)."""
    ref = str(ref or DEFAULT_RECIPE)
    builtin = builtin_recipes()
    for path in (Path(ref).expanduser(), builtin.get(ref)):
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


def load_recipe(ref: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    path = resolve_recipe_path(ref)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise EdgeftError(f"recipe {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise EdgeftError(f"recipe {path} must be a mapping of sections")
    data.setdefault("name", path.stem)
    if overrides:
        # overrides into list sections start from the defaults when the recipe does not list them
        if any(o.startswith("quantize.variants.") for o in overrides):
            data.setdefault("quantize", {}).setdefault(
                "variants", [v.model_dump() for v in QuantizeSection().variants])
        data = apply_overrides(data, list(overrides))
    return recipe_from_dict(data, source=str(path))


def recipe_from_dict(data: dict, source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise EdgeftError(_format_errors(e, source)) from None


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
