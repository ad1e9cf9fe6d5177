"""Command line of the trainer: `agfsync train`, `python -m agfsync.train.dpo`, or
`accelerate launch -m agfsync.train.dpo` for several GPUs.

Every field of `DPOTrainingConfig` is an option (`--field-name`); its help is the
field's documentation, which says where the default comes from. `--config file.yaml`
reads the same names (with underscores) from a file; flags given on the command line
win over the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic.fields import FieldInfo

from agfsync.config_options import (
    REQUIRED,
    RenamedOption,
    add_field_option,
    field_default,
    option_kind,
    options_parser,
)
from agfsync.environment import ACCELERATE_MIXED_PRECISION, MODELS, hub_token
from agfsync.errors import AgfsyncError, one_line, unexpected_line
from agfsync.logs import configure_logging
from agfsync.train.config import DPOTrainingConfig

DESCRIPTION = """\
Fine-tune Stable Diffusion 1.x/2.x or SDXL on a preference dataset with Diffusion-DPO
(Wallace et al. 2023), as AGFSync did. Defaults reproduce the AGFSync paper (1000 steps,
cosine schedule; SD 1.x lr 5e-7, 128 pairs per step, 512 px; SDXL lr 1e-6, 64 pairs, 1024 px)
except that LoRA is the default (lr 1e-5, rank 8, as diffusers' DPO example); pass
--no-use-lora for the paper's full fine-tuning.

examples:
  agfsync train --pretrained-model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
      --dataset my-org/my-agfsync-dataset --output sd15-dpo
  accelerate launch -m agfsync.train.dpo --config sdxl.yaml --max-train-steps 500
"""


FLAGS = {"output_dir": ("--output", "-o")}
"""Fields whose flags are not `--field-name`: the names the other commands use for the
same concept. The field name stays the config file's key (as in diffusers' scripts)."""
OLD_FLAGS = {"output_dir": "--output-dir"}
"""Earlier spellings, accepted (hidden from --help, with a notice) for one release."""
ENVIRONMENT = (*MODELS, ACCELERATE_MIXED_PRECISION)
"""The variables `--help` lists."""


def _add_field_option(parser: argparse.ArgumentParser, name: str, field: FieldInfo) -> None:
    flags = FLAGS.get(name, ("--" + name.replace("_", "-"),))
    default = field_default(field)
    shown = "required (here or in --config)" if default is REQUIRED else None
    add_field_option(parser, name, field, flags, default, shown=shown)
    if name in OLD_FLAGS:
        kind, _ = option_kind(field.annotation)
        parser.add_argument(
            OLD_FLAGS[name], dest=name, type=kind, action=RenamedOption, new_flag=flags[0]
        )


def build_parser() -> argparse.ArgumentParser:
    parser = options_parser("agfsync train", DESCRIPTION, ENVIRONMENT)
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML mapping of the options below (underscored names); flags override it. "
        "[default: none, the flags alone]",
    )
    parser.add_argument(
        "--hub-token",
        help="Token for --push-to-hub [default: $HF_TOKEN, else the cached login]; used for "
        "the upload only and never written to disk.",
    )
    for name, field in DPOTrainingConfig.model_fields.items():
        _add_field_option(parser, name, field)
    return parser


def parse_config(argv: list[str]) -> tuple[DPOTrainingConfig, str | None]:
    """The configuration and Hub token that these command-line arguments describe."""
    values = vars(build_parser().parse_args(argv))
    config_file = values.pop("config", None)
    token = hub_token(values.pop("hub_token", None))
    if config_file is not None:
        return DPOTrainingConfig.from_yaml(config_file, **values), token
    return DPOTrainingConfig.validated(values), token


def main(argv: list[str] | None = None) -> int:
    configure_logging()  # as every agfsync command; also under `accelerate launch -m`
    from agfsync.train.loop import train

    try:
        config, token = parse_config(sys.argv[1:] if argv is None else argv)
        result = train(config, hub_token=token)
    except AgfsyncError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    except Exception as error:  # under `accelerate launch -m agfsync.train.dpo` too
        print(f"error: {unexpected_line(error)}", file=sys.stderr)
        return 1
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    output = result.config.output_dir
    weights = "LoRA (pipe.load_lora_weights)" if result.config.use_lora else "pipeline folder"
    print(f"Training finished: {output} ({weights}, model card README.md)")
    if result.hub_url:
        print(f"Uploaded to {result.hub_url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
