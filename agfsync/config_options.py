"""Command-line options derived from a pydantic configuration.

`agfsync train` and `agfsync evaluate` declare their settings once, as the fields of a
configuration (`DPOTrainingConfig`, `EvaluationConfig`); each field becomes one option
whose help is the field's description followed by its default, so the documentation of
a default lives beside the default. Options are only set when given (argparse's
`SUPPRESS` default): the configuration's own defaults apply otherwise.
"""

from __future__ import annotations

import argparse
import sys
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from agfsync.environment import Variable, environment_help

REQUIRED = object()
"""The `default` of a field without one."""


def options_parser(
    prog: str, description: str, environment: tuple[Variable, ...]
) -> argparse.ArgumentParser:
    """A parser whose options are only set when given (`SUPPRESS`), so that the
    configuration's defaults apply to the others; its help ends with the `environment`
    variables the command reads."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=environment_help(environment),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )


def renamed_notice(old_flag: str, new_flag: str) -> str:
    """What a command prints when an option is given under its old name."""
    return f"note: {old_flag} is now {new_flag}; the old name will be removed."


class RenamedOption(argparse.Action):
    """An option's old spelling, hidden from `--help`: stores under the new option's
    `dest` and prints `renamed_notice` on standard error."""

    def __init__(self, *args: Any, new_flag: str, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "help": argparse.SUPPRESS})
        self.new_flag = new_flag

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(renamed_notice(option_string or "", self.new_flag), file=sys.stderr)
        setattr(namespace, self.dest, values)


def option_kind(annotation: Any) -> tuple[Any, bool]:
    """The annotation without `None` and whether it was optional."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        return members[0], len(members) < len(get_args(annotation))
    return annotation, False


def field_default(field: FieldInfo) -> Any:
    """The field's default (factories called), or `REQUIRED`."""
    return REQUIRED if field.is_required() else field.get_default(call_default_factory=True)


def add_field_option(
    parser: argparse.ArgumentParser,
    dest: str,
    field: FieldInfo,
    flags: tuple[str, ...],
    default: Any,
    about: str = "",
    shown: str | None = None,
) -> None:
    """One option for `field`, stored under `dest`; its help is `about` (the context of a
    nested setting), the field's description and `shown` (else `default`)."""
    kind, _ = option_kind(field.annotation)
    shown = shown if shown is not None else _shown(default)
    description = " ".join(part for part in (about, field.description or "") if part)
    # argparse formats help with %, so a literal percent sign must be doubled.
    help_text = f"{description.replace('%', '%%')} [default: {shown}]"
    if kind is bool:
        parser.add_argument(
            *flags, dest=dest, action=argparse.BooleanOptionalAction, help=help_text
        )
    elif get_origin(kind) is Literal:
        parser.add_argument(*flags, dest=dest, choices=get_args(kind), help=help_text)
    elif get_origin(kind) is list:
        parser.add_argument(*flags, dest=dest, nargs="+", metavar=_metavar(dest), help=help_text)
    else:
        parser.add_argument(*flags, dest=dest, type=kind, metavar=_metavar(dest), help=help_text)


def _shown(default: Any) -> str:
    """How `--help` shows a default."""
    if default is REQUIRED:
        return "required"
    if isinstance(default, list):
        return " ".join(repr(item) for item in default)
    return str(default)


def _metavar(dest: str) -> str:
    return dest.rsplit(".", 1)[-1].upper()


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """`{"a.b": 1}` as `{"a": {"b": 1}}`: options of nested settings, as the
    configuration takes them."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        *parents, name = key.split(".")
        level = nested
        for parent in parents:
            level = level.setdefault(parent, {})
        level[name] = value
    return nested
