"""Prompt categories: what the prompt-writing LLM is asked to write about."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agfsync.errors import ConfigurationError, describe_validation_error
from agfsync.input_files import parse_yaml, read_text

AGFSYNC_CATEGORIES_PATH = Path(__file__).parents[1] / "data" / "agfsync_categories.yaml"
"""The 12 AGFSync categories with descriptions (from the official code) and 5 examples each."""


class CategorySpec(BaseModel):
    """One category: its name, what it covers and in-context example prompts."""

    model_config = ConfigDict(str_strip_whitespace=True)  # a blank name is no name

    name: str = Field(min_length=1)
    description: str = Field(min_length=1, description="What the category covers, one line.")
    examples: list[str] = Field(
        min_length=1, description="Example prompts shown to the LLM (it must not repeat them)."
    )


CATEGORY_FILE_FORMAT = "it must hold a YAML or JSON list of {name, description, examples}"


def load_categories(path: str | Path | None = None) -> list[CategorySpec]:
    """Categories from a YAML or JSON list (`None`: the 12 AGFSync categories)."""
    source = Path(path) if path is not None else AGFSYNC_CATEGORIES_PATH
    if not source.is_file():
        raise ConfigurationError(
            f"Category file {source} does not exist; pass a YAML/JSON list of "
            "{name, description, examples}."
        )
    raw = parse_yaml(read_text(source), source, CATEGORY_FILE_FORMAT)
    if not isinstance(raw, list) or not raw:
        raise ConfigurationError(f"{source} must hold a non-empty list of categories.")
    categories = [_category(source, number, item) for number, item in enumerate(raw, start=1)]
    names = [category.name for category in categories]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{source} names a category twice; names must be unique.")
    return categories


def _category(source: Path, number: int, item: object) -> CategorySpec:
    """Category `number` (from 1) of `source`, refused with what is wrong with it."""
    try:
        return CategorySpec.model_validate(item)
    except ValidationError as error:
        raise ConfigurationError(
            f"{source}: category {number} is invalid ({describe_validation_error(error)}); "
            "each needs a non-blank name, a description and a non-empty list of examples."
        ) from None


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
        raw = parse_yaml(read_text(source), source, "it must hold `styles` and `complexities`")
        return StyleScheme.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        raise ConfigurationError(
            f"{source}: {first['loc']} is invalid ({first['msg']}); it needs `styles` "
            "(name, description, substyles) and `complexities` (name, instruction)."
        ) from error
