"""What agfsync knows about well-known checkpoints: their license and family.

Cards take their license from the models that made the data (a dataset of SDXL
images carries SDXL's license) and tag the model family; a model not listed here is
said to have an unknown license rather than given one.
"""

from __future__ import annotations

from dataclasses import dataclass

TINY_MODEL_PREFIX = "tiny:"
"""Model references `tiny:<name>` are agfsync's tiny random models (`agfsync.models`)."""


@dataclass(frozen=True)
class ModelFacts:
    license: str
    """Hub license id (https://huggingface.co/docs/hub/repositories-licenses)."""
    family: str
    """Model family tag, e.g. `stable-diffusion-xl`."""


KNOWN_MODELS: dict[str, ModelFacts] = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": ModelFacts(
        "creativeml-openrail-m", "stable-diffusion"
    ),
    "runwayml/stable-diffusion-v1-5": ModelFacts("creativeml-openrail-m", "stable-diffusion"),
    "CompVis/stable-diffusion-v1-4": ModelFacts("creativeml-openrail-m", "stable-diffusion"),
    "stabilityai/stable-diffusion-2-1": ModelFacts("openrail++", "stable-diffusion"),
    "stabilityai/stable-diffusion-xl-base-1.0": ModelFacts("openrail++", "stable-diffusion-xl"),
    "stabilityai/sdxl-turbo": ModelFacts("other", "stable-diffusion-xl"),
    "stabilityai/stable-diffusion-3-medium-diffusers": ModelFacts("other", "stable-diffusion-3"),
    "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS": ModelFacts("openrail++", "pixart"),
    "black-forest-labs/FLUX.1-schnell": ModelFacts("apache-2.0", "flux"),
    "black-forest-labs/FLUX.1-dev": ModelFacts("other", "flux"),
}
"""Licenses as their model cards state them (checked 2026-12)."""

TINY_FACTS = ModelFacts("apache-2.0", "tiny-random")
"""agfsync's own tiny random models (`tiny:<name>`), released with the project."""


def model_facts(reference: str) -> ModelFacts | None:
    """The facts of a model reference, or None when agfsync does not know the model."""
    if reference.startswith(TINY_MODEL_PREFIX):
        return TINY_FACTS
    return KNOWN_MODELS.get(reference)


def is_hub_id(reference: str) -> bool:
    """A Hub repository id (`org/name`), not a local path or a tiny model."""
    parts = reference.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not reference.startswith((".", "/", "~"))
        and ":" not in reference
    )
