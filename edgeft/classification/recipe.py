"""The classification task's recipe: the shared sections, with the classifier's variant kinds
(`dynamic`, `static`, `int4`/`int8-weights` on the optimum export) and its defaults."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

import edgeft.classification.quantize  # noqa: F401  (registers static and weight-only)
import edgeft.quantizers.dynamic  # noqa: F401  (registers dynamic)
from edgeft.core.recipe import QuantizeSection, Recipe
from edgeft.core.variants import variant_union

Variant = variant_union("classification")


def default_variants() -> list:
    return [{"name": "int8-dynamic", "method": "dynamic"}, {"name": "int8-static", "method": "static"},
            {"name": "int4", "method": "int4"}]


class ClassificationQuantize(QuantizeSection):
    variants: list[Variant] = Field(default_factory=default_variants, validate_default=True)


class ClassificationRecipe(Recipe):
    task: Literal["classification"] = "classification"
    quantize: ClassificationQuantize = ClassificationQuantize()
RECIPE = ClassificationRecipe
