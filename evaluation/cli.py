"""Command line of the evaluation: `agfsync evaluate`, or `python -m agfsync.evaluation.cli`.

Every field of `EvaluationConfig` is an option (`--field-name`), its help the field's
documentation and default, as `agfsync train` does with its configuration. Nested
settings are flattened: the sampling's fields keep their own names (`--seed`,
`--guidance-scale`), the VLM judge's take a `--vlm-` prefix, and each judge offers its
model and batch size (`--vqa-model`, `--clip-batch-size`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from agfsync.config_options import add_field_option, field_default, nest, options_parser
from agfsync.environment import MODELS, OPENAI_BASE_URL, provider_keys
from agfsync.errors import (
    AgfsyncError,
    ConfigurationError,
    describe_validation_error,
    one_line,
)
from agfsync.evaluation.run import EvaluationConfig, evaluate, parse_scorer
from agfsync.evaluation.suites import SUITE_NAMES
from agfsync.scoring import ScorerSpec

DESCRIPTION = """\
Compare a tuned model with its base on benchmark suites (TIFA, DSG, HPSv2 prompts, a VLM
judge, held-out prompts); write metrics.json and an HTML report. Defaults follow the
AGFSync paper's evaluation: BLIP-2 flan-t5-xxl answers the TIFA/DSG questions, CLIP
ViT-B/16 and the LAION aesthetic head score the HPSv2 prompts, 50 denoising steps.

example:
  agfsync evaluate --base stable-diffusion-v1-5/stable-diffusion-v1-5 --tuned sd15-dpo \\
      --suite dsg,hpsv2 --prompts-per-suite 200 -o eval-sd15
"""

FLAGS = {
    "suites": "--suite",
    "tifa_question_answers": "--tifa-qa",
    "heldout_prompts": "--heldout",
    "extra_scorers": "--scorer",
    "sampling.num_inference_steps": "--steps",
}
"""Settings whose flag is not `--<field-name>` (or `--<prefix><field-name>`)."""

NESTED = {"sampling": ("", ""), "vlm": ("vlm-", "VLM judge (suite vlm):")}
"""Nested settings whose every field is an option: the prefix of their flags and what
their help starts with."""

JUDGE_FIELDS = ("model", "batch_size")
"""The options of each judge (`vqa`, `clip`, `aesthetic`): `--<judge>-model`, ..."""


class Option(NamedTuple):
    dest: str
    """Dotted path in the configuration (`sampling.seed`)."""
    flag: str
    field: FieldInfo
    default: Any
    about: str
    """What the nested setting is, before the field's own description."""


def options() -> Iterator[Option]:
    """One option per setting of `EvaluationConfig`, nested settings flattened."""
    for name, field in EvaluationConfig.model_fields.items():
        default = field_default(field)
        if name in NESTED:
            prefix, about = NESTED[name]
            for sub, subfield in type(default).model_fields.items():
                dest = f"{name}.{sub}"
                flag = FLAGS.get(dest, f"--{prefix}{sub.replace('_', '-')}")
                yield Option(dest, flag, subfield, getattr(default, sub), about)
        elif isinstance(default, ScorerSpec):
            for sub in JUDGE_FIELDS:
                flag = f"--{name}-{sub.replace('_', '-')}"
                about = field.description or ""
                subfield = ScorerSpec.model_fields[sub]
                yield Option(f"{name}.{sub}", flag, subfield, getattr(default, sub), about)
        else:
            yield Option(name, FLAGS.get(name, "--" + name.replace("_", "-")), field, default, "")


def build_parser() -> argparse.ArgumentParser:
    environment = (*MODELS, *provider_keys(), OPENAI_BASE_URL)
    parser = options_parser("agfsync evaluate", DESCRIPTION, environment)
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="Folder of metrics.json and report/. [required]",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Write into an output folder holding files agfsync did not write (they are kept; "
        "a name agfsync writes that is taken stops the command). [default: off]",
    )
    parser.add_argument(
        "--vqa-mode",
        choices=("answer", "probability"),
        help="How the VQA judge scores DSG and held-out questions: answer (the paper: the "
        "generated answer is compared) or probability (P(yes)). [default: answer]",
    )
    for option in options():
        if option.dest == "suites":
            shown = ",".join(option.default)
            help_text = f"Comma-separated suites, of: {', '.join(SUITE_NAMES)}. [default: {shown}]"
            parser.add_argument(option.flag, dest=option.dest, metavar="SUITES", help=help_text)
        elif option.dest == "extra_scorers":
            parser.add_argument(
                option.flag,
                dest=option.dest,
                action="append",
                metavar="NAME=MODEL[,OPTION=VALUE...]",
                help=f"{option.field.description} Repeatable. [default: none]",
            )
        else:
            flags = (option.flag,)
            add_field_option(parser, option.dest, option.field, flags, option.default, option.about)
    return parser


def parse_config(argv: list[str]) -> tuple[EvaluationConfig, Path, bool]:
    """The configuration, output folder and `--overwrite` these arguments describe."""
    values = vars(build_parser().parse_args(argv))
    output, overwrite = values.pop("output"), values.pop("overwrite", False)
    vqa_mode = values.pop("vqa_mode", None)
    if vqa_mode is not None:
        values["vqa.options"] = {"mode": vqa_mode}
    if "suites" in values:
        text = values["suites"]
        if not all(name.strip() for name in text.split(",")):
            raise ConfigurationError(
                f"--suite {text!r} names an empty suite; give a comma-separated list of "
                f"{', '.join(SUITE_NAMES)} (or leave --suite out for dsg,hpsv2)."
            )
        values["suites"] = [name.strip() for name in text.split(",")]
    if "extra_scorers" in values:
        values["extra_scorers"] = [parse_scorer(text) for text in values["extra_scorers"]]
    settings = nest(values)
    for name, field in EvaluationConfig.model_fields.items():
        default = field_default(field)
        if isinstance(default, BaseModel) and name in settings:
            # A nested setting given in part keeps the defaults of its other fields.
            settings[name] = {**default.model_dump(), **settings[name]}
    return EvaluationConfig.model_validate(settings), output, overwrite


def flags() -> dict[str, str]:
    """The flag of each setting, by its dotted path (to name them in errors)."""
    return {option.dest: option.flag for option in options()}


def main(argv: list[str] | None = None) -> int:
    from agfsync.evaluation.metrics import ALL
    from agfsync.evaluation.report import is_vote_metric

    try:
        config, output, overwrite = parse_config(sys.argv[1:] if argv is None else argv)
        result = evaluate(config, output, overwrite=overwrite)
    except AgfsyncError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    except ValidationError as error:
        print(f"error: {one_line(describe_validation_error(error, flags()))}", file=sys.stderr)
        return 2
    for comparison in result.comparisons:
        if comparison.group != ALL:
            continue
        rate = comparison.win_rate
        means = (
            ""
            if is_vote_metric(comparison.metric)
            else f"base {comparison.base_mean:7.2f}  tuned {comparison.tuned_mean:7.2f}  "
        )
        print(
            f"  {comparison.suite:<8} {comparison.metric:<20} n={comparison.units:<5} {means}"
            f"win rate {rate.rate:6.1%} [{rate.interval.low:.1%}, {rate.interval.high:.1%}]"
        )
    print(f"Metrics: {result.metrics_path}")
    print(f"Report: {result.report_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
