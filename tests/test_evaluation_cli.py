"""`agfsync evaluate`'s options come from `EvaluationConfig`: flat flags for nested
settings, the configuration's defaults for the rest, errors that name the flag."""

import pytest
from pydantic import ValidationError

from agfsync.errors import ConfigurationError, describe_validation_error
from agfsync.evaluation.cli import build_parser, flags, parse_config
from agfsync.evaluation.run import EvaluationConfig

REQUIRED = ["--base", "a", "--tuned", "b", "-o", "out"]


def test_nested_settings_are_set_by_flat_flags_and_keep_their_other_defaults() -> None:
    config, output, overwrite = parse_config(
        [
            *REQUIRED,
            *("--steps", "3", "--seed", "5", "--vqa-mode", "probability"),
            *("--clip-model", "tiny:clip", "--vlm-model", "judge", "--vlm-timeout", "9"),
            *("--suite", "dsg, hpsv2,vlm", "--scorer", "clip=tiny:clip,cosine_scale=2"),
        ]
    )
    defaults = EvaluationConfig(base="a", tuned="b")
    assert (str(output), overwrite) == ("out", False)
    assert config.sampling.num_inference_steps == 3 and config.sampling.seed == 5
    assert config.sampling.guidance_scale == defaults.sampling.guidance_scale
    assert config.vqa.model == defaults.vqa.model and config.vqa.options == {"mode": "probability"}
    assert config.clip.model == "tiny:clip" and config.clip.name == "clip"
    assert (config.vlm.model, config.vlm.timeout) == ("judge", 9.0)
    assert config.vlm.provider == defaults.vlm.provider
    assert config.suites == ["dsg", "hpsv2", "vlm"]
    assert config.extra_scorers[0].options == {"cosine_scale": "2"}
    assert config.aesthetic == defaults.aesthetic and config.grid_size == defaults.grid_size


def test_every_setting_has_one_flag_with_its_default_in_the_help() -> None:
    options = flags()
    assert len(set(options.values())) == len(options)
    assert options["sampling.num_inference_steps"] == "--steps"
    assert options["vlm.base_url"] == "--vlm-base-url"
    help_text = " ".join(build_parser().format_help().split())
    assert "--aesthetic-batch-size" in help_text and "[default: dsg,hpsv2]" in help_text
    assert "Denoising steps (paper: 50). [default: 50]" in help_text


def test_errors_name_the_flag_also_for_nested_settings() -> None:
    with pytest.raises(ValidationError) as error:
        parse_config([*REQUIRED, "--steps", "0"])
    assert describe_validation_error(error.value, flags()).startswith("--steps: ")
    with pytest.raises(ConfigurationError, match="--suite 'dsg,' names an empty suite"):
        parse_config([*REQUIRED, "--suite", "dsg,"])
