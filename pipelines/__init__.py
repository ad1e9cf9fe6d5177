"""Pipeline builders and their serialized presets (`pipelines/<preset>.yaml`).

Each preset is built by one Python function; the YAML files next to this module
are generated from those functions (`agfsync presets export`) and a test fails
when they drift apart.
"""

from collections.abc import Callable
from pathlib import Path

from distilabel.pipeline.base import BasePipeline

from agfsync.errors import ConfigurationError
from agfsync.ownership import FolderKind, check_output_folder, write_folder
from agfsync.pipelines.full import (
    build_agfsync_sd15_pipeline,
    build_agfsync_sdxl_pipeline,
    build_local_llm_pipeline,
)
from agfsync.pipelines.offline import build_offline_pipeline
from agfsync.pipelines.ray import (
    build_ray_agfsync_sd15_pipeline,
    build_ray_agfsync_sdxl_pipeline,
    build_ray_local_llm_pipeline,
    build_ray_offline_pipeline,
)
from agfsync.pipelines.text import (
    build_text_gemini_pipeline,
    build_text_image_preferences_pipeline,
    build_text_openai_pipeline,
)

PRESETS: dict[str, Callable[[], BasePipeline]] = {
    "offline": build_offline_pipeline,
    "text-openai": build_text_openai_pipeline,
    "text-gemini": build_text_gemini_pipeline,
    "text-image-preferences": build_text_image_preferences_pipeline,
    "agfsync-sd15": build_agfsync_sd15_pipeline,
    "agfsync-sdxl": build_agfsync_sdxl_pipeline,
    "local-llm": build_local_llm_pipeline,
    "ray-offline": build_ray_offline_pipeline,
    "ray-agfsync-sd15": build_ray_agfsync_sd15_pipeline,
    "ray-agfsync-sdxl": build_ray_agfsync_sdxl_pipeline,
    "ray-local-llm": build_ray_local_llm_pipeline,
}
"""Preset name -> builder of its distilabel pipeline."""

PRESETS_DIR = Path(__file__).parent


def build_preset(name: str) -> BasePipeline:
    if name not in PRESETS:
        raise ConfigurationError(
            f"Unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}."
        )
    return PRESETS[name]()


def preset_yaml_path(name: str) -> Path:
    return PRESETS_DIR / f"{name}.yaml"


def export_presets(directory: Path = PRESETS_DIR, *, overwrite: bool = False) -> list[Path]:
    """Write `<preset>.yaml` for every preset; returns the written paths.

    `PRESETS_DIR` (the builders' own folder) is written in place; any other folder is
    an output folder like every command's (`agfsync.ownership`): new, empty or an
    earlier export, checked before anything is built, a user's files never replaced.
    """
    if directory.resolve() == PRESETS_DIR.resolve():
        return _write_presets(directory)
    check_output_folder(directory, FolderKind.PRESETS, flag="--output", overwrite=overwrite)
    write_folder(
        directory,
        FolderKind.PRESETS,
        _write_presets,
        flag="--output",
        overwrite=overwrite,
        what="the presets",
    )
    return [directory / f"{name}.yaml" for name in sorted(PRESETS)]


def _write_presets(directory: Path) -> list[Path]:
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
