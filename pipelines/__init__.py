"""Pipeline builders and their serialized presets (`pipelines/<preset>.yaml`).

Each preset is built by one Python function; the YAML files next to this module
are generated from those functions (`agfsync presets export`) and a test fails
when they drift apart.
"""

from collections.abc import Callable
from pathlib import Path

from distilabel.pipeline import Pipeline

from agfsync.errors import ConfigurationError
from agfsync.pipelines.full import (
    build_agfsync_sd15_pipeline,
    build_agfsync_sdxl_pipeline,
    build_local_llm_pipeline,
)
from agfsync.pipelines.offline import build_offline_pipeline
from agfsync.pipelines.text import (
    build_text_gemini_pipeline,
    build_text_image_preferences_pipeline,
    build_text_openai_pipeline,
)

PRESETS: dict[str, Callable[[], Pipeline]] = {
    "offline": build_offline_pipeline,
    "text-openai": build_text_openai_pipeline,
    "text-gemini": build_text_gemini_pipeline,
    "text-image-preferences": build_text_image_preferences_pipeline,
    "agfsync-sd15": build_agfsync_sd15_pipeline,
    "agfsync-sdxl": build_agfsync_sdxl_pipeline,
    "local-llm": build_local_llm_pipeline,
}
"""Preset name -> builder of its distilabel pipeline."""

PRESETS_DIR = Path(__file__).parent


def build_preset(name: str) -> Pipeline:
    if name not in PRESETS:
        raise ConfigurationError(
            f"Unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}."
        )
    return PRESETS[name]()


def preset_yaml_path(name: str) -> Path:
    return PRESETS_DIR / f"{name}.yaml"


def export_presets(directory: Path = PRESETS_DIR) -> list[Path]:
    """Write `<preset>.yaml` for every preset; returns the written paths."""
    written = []
    for name in sorted(PRESETS):
        path = directory / f"{name}.yaml"
        build_preset(name).save(path=path, format="yaml")
        written.append(path)
    return written


__all__ = [
    "PRESETS",
    "build_offline_pipeline",
    "build_preset",
    "export_presets",
    "preset_yaml_path",
]
