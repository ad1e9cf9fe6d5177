"""Every `--help` shows each option's default (or why there is none) and the environment
variables the command reads; one name per concept, old spellings accepted with a notice.
Run in-process: nothing is executed beyond parsing and help."""

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from agfsync.cli import app
from agfsync.environment import DISTILABEL_CACHE_DIR, MODELS, provider_keys
from agfsync.evaluation.cli import build_parser as evaluate_parser
from agfsync.llm.providers import PROVIDERS
from agfsync.train.dpo import build_parser as train_parser

runner = CliRunner()

SHOWN = re.compile(r"\[(default: [^\]]+|required)\]")
"""How a help line shows its default, or that there is none to show."""

PASS_THROUGH = {"train": train_parser, "evaluate": evaluate_parser}
"""Commands that hand their arguments to a parser built from a pydantic configuration."""


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every command of the click app under its command line, subcommands included."""
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        yield " ".join(path), command
        return
    for name, subcommand in sorted(subcommands.items()):
        yield from commands(subcommand, (*path, name))


ALL = dict(commands(typer.main.get_command(app)))


def help_text(command_line: str) -> str:
    result = runner.invoke(app, [*command_line.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # the formatters wrap at the terminal's width


def test_the_walk_finds_every_command() -> None:
    expected = {"generate", "estimate", "publish", "report", "calibrate", "reselect"}
    expected |= {"train", "evaluate", "argilla push", "argilla pull", "presets list"}
    assert expected | {"presets export"} == set(ALL)


@pytest.mark.parametrize("command_line", sorted(ALL))
def test_every_option_shows_its_default_or_why_none(command_line: str) -> None:
    command = ALL[command_line]
    if not command.add_help_option:  # train, evaluate: their argparse parser's help
        parser = PASS_THROUGH[command_line]()
        # (argparse may break a line after a hyphen, depending on the width)
        assert help_text(command_line).replace(" ", "") == "".join(parser.format_help().split())
        lines = [
            (action.option_strings[-1], action.help or "")
            for action in parser._actions
            if action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)
        ]
        assert len(lines) > 20
    else:
        context = command.make_context(command_line, [], resilient_parsing=True)
        records = [
            param.get_help_record(context)
            for param in command.params
            if param.param_type_name == "option" and not param.hidden
        ]
        lines = [(flags.split()[0], text) for flags, text in records]
    missing = [flag for flag, line in lines if not SHOWN.search(line)]
    assert not missing, f"agfsync {command_line}: no default shown for {missing}"
    assert "<bool>" not in help_text(command_line)


def test_generate_names_the_environment_variables_the_code_reads() -> None:
    shown = help_text("generate")
    variables = [*MODELS, *provider_keys(), DISTILABEL_CACHE_DIR]
    assert {key for p in PROVIDERS.values() for key in p.key_variables} <= {
        v.name for v in variables
    }
    for variable in variables:
        assert f"{variable.name}: {' '.join(variable.about.split())}" in shown


@pytest.mark.parametrize(
    ("command_line", "variables"),
    [
        ("publish", ["HF_TOKEN", "HF_ENDPOINT"]),
        ("calibrate", ["HF_TOKEN", "HF_ENDPOINT"]),
        ("argilla push", ["ARGILLA_API_URL", "ARGILLA_API_KEY", "AGFSYNC_ARGILLA_REQUEST_BYTES"]),
        ("argilla pull", ["ARGILLA_API_URL", "ARGILLA_API_KEY", "HF_TOKEN"]),
        ("train", ["HF_TOKEN", "AGFSYNC_CACHE_DIR", "ACCELERATE_MIXED_PRECISION"]),
        ("evaluate", ["HF_TOKEN", "AGFSYNC_CACHE_DIR", "OPENAI_API_KEY", "GEMINI_API_KEY"]),
    ],
)
def test_each_command_names_its_environment_variables(
    command_line: str, variables: list[str]
) -> None:
    shown = help_text(command_line).split("nvironment variables:", 1)[1]
    for variable in variables:
        assert f"{variable}:" in shown


def test_estimate_counts_prompts_with_num_prompts_as_generate_does() -> None:
    args = ["estimate", "--preset", "offline", "--tables", "nope.yaml"]
    new = runner.invoke(app, [*args, "--num-prompts", "10"])
    assert "do not exist" in new.output and "is now" not in new.output  # got to the tables
    old = runner.invoke(app, [*args, "--prompts", "10"])
    assert "note: --prompts is now --num-prompts" in old.output and "do not exist" in old.output
    assert "--prompts " not in help_text("estimate")
    none = runner.invoke(app, ["estimate", "--preset", "offline"])
    assert none.exit_code == 2 and "--num-prompts" in none.output


def test_argilla_pull_takes_the_name_as_push_does_and_a_hub_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`--name` (or the positional name), and `--hub-token` for `--repo-id`."""
    calls: dict[str, Any] = {}

    class Report:
        records = reviewed = resolved = not_blind = 0
        unknown_records = ()

    def pull_reviews(name: str, target: Any, **kwargs: Any) -> Report:
        calls["name"] = name
        return Report()

    def publish_run(run_dir: Path, repo_id: str, **kwargs: Any) -> Any:
        calls["publish"] = (repo_id, kwargs.get("token"))
        return type("Published", (), {"repo_id": repo_id, "commit_url": "url"})()

    monkeypatch.setattr("agfsync.review.argilla.pull_reviews", pull_reviews)
    monkeypatch.setattr("agfsync.review.argilla.agreement_rows", lambda report: [])
    monkeypatch.setattr("agfsync.dataset.publish.publish_run", publish_run)
    out = ["-o", str(tmp_path / "reviewed")]
    for given in (["--name", "review"], ["review"], ["review", "--name", "review"]):
        result = runner.invoke(app, ["argilla", "pull", *given, *out])
        assert result.exit_code == 0, result.output
        assert calls.pop("name") == "review"
    both = runner.invoke(app, ["argilla", "pull", "one", "--name", "other", *out])
    assert both.exit_code == 2 and "give one" in both.output
    neither = runner.invoke(app, ["argilla", "pull", *out])
    assert neither.exit_code == 2 and "--name" in neither.output
    token = ["--repo-id", "me/reviewed", "--hub-token", "hf_x"]
    result = runner.invoke(app, ["argilla", "pull", "--name", "review", *out, *token])
    assert result.exit_code == 0, result.output
    assert calls["publish"] == ("me/reviewed", "hf_x")
