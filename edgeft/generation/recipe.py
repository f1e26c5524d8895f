"""The generation task's recipe: the shared sections; how labelled rows become chats (`data`); the
decoder's variant kinds (`dynamic` and weight-only on optimum's graph, weight-only by the genai
builder, llama.cpp types of the GGUF export); and the rule that ties the int4 grid an adapter trains
against to the int4 variants that ship it."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

import edgeft.generation.gguf  # noqa: F401  (registers gguf)
import edgeft.generation.weight_only  # noqa: F401  (registers weight-only on optimum and genai)
import edgeft.quantizers.dynamic  # noqa: F401  (registers dynamic)
from edgeft.core.recipe import DataSection, QuantizeSection, Recipe
from edgeft.core.variants import variant_union

Variant = variant_union("generation")


class GenerationData(DataSection):
    """How a labelled row becomes a chat (chat JSONL with `messages` is used as it is)."""
    system_prompt: Optional[str] = None
    prompt_template: str = "{text}"
    label_words: Optional[dict[str, str]] = Field(None, description="label -> answer text the model must produce")
    chat_template: Optional[str] = Field(None, description="for a base model without one: chatml or gemma "
                                                           "(edgeft's, generation/templates.py) or a Jinja template")


def default_variants() -> list:
    return [{"name": "int8-dynamic", "method": "dynamic"}, {"name": "int4", "method": "int4"}]


class GenerationQuantize(QuantizeSection):
    variants: list[Variant] = Field(default_factory=default_variants, validate_default=True)


class GenerationRecipe(Recipe):
    task: Literal["generation"] = "generation"
    data: GenerationData = GenerationData()
    quantize: GenerationQuantize = GenerationQuantize()

    def task_problems(self) -> list[str]:
        """An adapter trained against the int4 grid (tune.base_quant int4) is shipped by round-to-nearest
        int4 variants on that very grid: the same block size and head bits."""
        tune = self.tune
        if tune.method != "qlora" or tune.base_quant != "int4":
            return []
        grid = (tune.grid_block_size, tune.grid_head_bits)
        return [f"quantize.variants.{i} ({v.name}): block_size {v.block_size}, head_bits {v.head_bits} is not the grid "
                f"the adapter trains against (tune.grid_block_size {grid[0]}, grid_head_bits {grid[1]})"
                for i, v in enumerate(self.quantize.variants)
                if v.method == "int4" and v.algorithm == "rtn" and (v.block_size, v.head_bits) != grid]
RECIPE = GenerationRecipe
