"""The pydantic base of every recipe section and variant config: unknown keys are refused (with
their dotted path and a suggestion, core/recipe.py), and assignments are validated too."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
