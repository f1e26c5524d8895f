"""The registry of quantization variant kinds: what a recipe's `quantize.variants[]` item can be.

A kind is a (source, method) pair: the export it starts from (optimum, genai, gguf) and how it
quantizes (dynamic, static, int4, int8-weights, gguf). Each kind registers, in the module that
builds it, its config class (the fields a recipe item of that kind takes, validated by pydantic)
and its builder; the quantize stage looks the builder up here, and each task's recipe schema
takes its variants' config classes from here. So "where does kind X get built?" has one answer:
`edgeft variants` prints every kind with the module that registers it, as Olive registers passes.

    optimum  dynamic        edgeft/quantizers/dynamic.py         int8 weights, activations at run time
    optimum  static         edgeft/classification/quantize.py    int8 QDQ, calibrated (classifiers)
    optimum  int4, int8-w.  edgeft/classification/quantize.py    MatMulNBits (classifiers)
                            edgeft/generation/weight_only.py     MatMulNBits with the decoder's head rules
    genai    int4, int8-w.  edgeft/generation/weight_only.py     onnxruntime-genai's builder, graph edits
    gguf     gguf           edgeft/generation/gguf.py            llama.cpp's types, by its quantizer
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Union

from pydantic import Discriminator, Field, Tag

from edgeft import EdgeftError
from edgeft.core.schema import Section


class Variant(Section):
    """What every variant kind's config has: a name (its folder and row), and its (source, method)."""
    name: str = Field(description="the variant's name: its folder under quantize/ and its row in the report")
    source: str = Field("optimum", description="which export the variant starts from")
    method: str


@dataclass
class BuildContext:
    """What a builder gets: the task, the variant's config, the fp32 export it starts from (folder and
    manifest), the run's data split folder, the recipe, and `out`, the variant's folder being written."""
    task: Any
    variant: Variant
    export_dir: Path
    exported: Any  # the export's Manifest
    data_dir: Path
    recipe: Any
    out: Path


@dataclass(frozen=True)
class VariantKind:
    source: str
    methods: tuple[str, ...]
    config: type[Variant]
    build: Callable[[BuildContext], dict]  # writes the model files into ctx.out; returns the manifest's details
    tasks: tuple[str, ...]
    summary: str

    @property
    def module(self) -> str:
        return self.build.__module__


_KINDS: dict[tuple[str, str, str], VariantKind] = {}  # (task, source, method) -> kind


def register_variant(kind: VariantKind) -> VariantKind:
    for task in kind.tasks:
        for method in kind.methods:
            _KINDS[(task, kind.source, method)] = kind
    return kind


def kinds_for(task: str) -> list[VariantKind]:
    """The kinds a task's recipes can use (each once), by source and method."""
    return list(dict.fromkeys(k for (t, _, _), k in sorted(_KINDS.items(), key=lambda item: item[0]) if t == task))


def kind_of(task: str, source: str, method: str) -> VariantKind:
    kind = _KINDS.get((task, source, method))
    if kind is None:
        known = ", ".join(f"{k.source}:{'|'.join(k.methods)}" for k in kinds_for(task))
        raise EdgeftError(f"no variant kind '{source}:{method}' for task {task} (known: {known})")
    return kind


def tag(value: Any) -> str:
    """A recipe item's kind, "source:method", as the union below tells its members apart."""
    if isinstance(value, dict):
        return f"{value.get('source', 'optimum')}:{value.get('method')}"
    return f"{value.source}:{value.method}"


def variant_union(task: str):
    """The type of one `quantize.variants[]` item of this task's recipes: the union of its kinds'
    config classes, told apart by "source:method"."""
    members = {f"{k.source}:{m}": k.config for k in kinds_for(task) for m in k.methods}
    known = ", ".join(members)
    return Annotated[Union[tuple(Annotated[c, Tag(t)] for t, c in members.items())],
                     Discriminator(tag, custom_error_type="variant_kind",
                                   custom_error_message=f"no such variant kind (source:method) for task {task}; "
                                                        f"known: {known}")]


def config_of(task: str, value: Any) -> type[Variant] | None:
    """The config class a pydantic error location part names, when it is a kind's tag ("genai:int4")."""
    if not isinstance(value, str):
        return None
    source, _, method = value.partition(":")
    kind = _KINDS.get((task, source, method))
    return kind.config if kind else None
