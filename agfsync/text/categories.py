"""Prompt categories: what the prompt-writing LLM is asked to write about."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError

from agfsync.errors import ConfigurationError

AGFSYNC_CATEGORIES_PATH = Path(__file__).parents[1] / "data" / "agfsync_categories.yaml"
"""The 12 AGFSync categories with descriptions (from the official code) and 5 examples each."""


class CategorySpec(BaseModel):
    """One category: its name, what it covers and in-context example prompts."""

    name: str = Field(min_length=1)
    description: str = Field(min_length=1, description="What the category covers, one line.")
    examples: list[str] = Field(
        min_length=1, description="Example prompts shown to the LLM (it must not repeat them)."
    )


def load_categories(path: str | Path | None = None) -> list[CategorySpec]:
    """Categories from a YAML or JSON list (`None`: the 12 AGFSync categories)."""
    source = Path(path) if path is not None else AGFSYNC_CATEGORIES_PATH
    if not source.is_file():
        raise ConfigurationError(
            f"Category file {source} does not exist; pass a YAML/JSON list of "
            "{name, description, examples}."
        )
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))  # JSON is YAML too
    if not isinstance(raw, list) or not raw:
        raise ConfigurationError(f"{source} must hold a non-empty list of categories.")
    try:
        categories = [CategorySpec.model_validate(item) for item in raw]
    except ValidationError as error:
        first = error.errors()[0]
        raise ConfigurationError(
            f"{source}: category {first['loc']} is invalid ({first['msg']}); each needs a "
            "name, a description and a non-empty list of examples."
        ) from error
    names = [category.name for category in categories]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{source} names a category twice; names must be unique.")
    return categories


IMAGE_PREFERENCES_STYLES_PATH = Path(__file__).parents[1] / "data" / "image_preferences_styles.yaml"
"""The open image-preferences scheme: 12 styles with sub-styles and two complexities."""


class StyleSpec(BaseModel):
    """A visual style a seed prompt is rewritten into."""

    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    substyles: list[str] = Field(default_factory=list)


class ComplexitySpec(BaseModel):
    """How detailed the rewritten prompt is, with the instruction that says so."""

    name: str = Field(min_length=1)
    instruction: str = Field(min_length=1)


class StyleScheme(BaseModel):
    styles: list[StyleSpec] = Field(min_length=1)
    complexities: list[ComplexitySpec] = Field(min_length=1)


def load_style_scheme(path: str | Path | None = None) -> StyleScheme:
    """Styles and complexities from YAML/JSON (`None`: the image-preferences scheme)."""
    source = Path(path) if path is not None else IMAGE_PREFERENCES_STYLES_PATH
    if not source.is_file():
        raise ConfigurationError(f"Style file {source} does not exist.")
    try:
        return StyleScheme.model_validate(yaml.safe_load(source.read_text(encoding="utf-8")))
    except ValidationError as error:
        first = error.errors()[0]
        raise ConfigurationError(
            f"{source}: {first['loc']} is invalid ({first['msg']}); it needs `styles` "
            "(name, description, substyles) and `complexities` (name, instruction)."
        ) from error
