"""`ScorerArguments`: every command that loads a model to score (score, serve, evaluation) takes its model flags from
the one dataclass, with one help text each; each command keeps its own defaults."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from pipeline.core.errors import FlagParser, UserError
from pipeline.evaluation.cli import build_parser as evaluation_parser
from pipeline.model.arguments import ScorerArguments
from pipeline.score.cli import _parser as score_parser
from pipeline.serve.cli import build_parser as serve_parser

SHARED = [f.name for f in fields(ScorerArguments)]
PARSERS = {"score": score_parser, "serve": serve_parser, "evaluation": evaluation_parser}
# The flags each command takes, and its defaults (evaluation scores 32 sequences per pass, as it always has).
EXPECTED = {
    "score": {"model": None, "precision": "fp32", "max_length": None, "max_tokens": None, "batch_size": None},
    "serve": {"model": None, "precision": "fp32", "max_length": None, "max_tokens": None, "batch_size": None},
    "evaluation": {"model": None, "max_length": None, "batch_size": 32},
}


def actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.dest: action for action in parser._actions if action.dest in SHARED}


@pytest.mark.parametrize("command", list(PARSERS))
def test_each_command_takes_its_model_flags_from_the_dataclass(command: str) -> None:
    found = actions(PARSERS[command]())
    assert {name: action.default for name, action in found.items()} == EXPECTED[command]
    for spec in fields(ScorerArguments):
        if spec.name in found:
            assert found[spec.name].help.startswith(spec.metadata["help"]), (command, spec.name)
    assert found["model"].required


@pytest.mark.parametrize("name", SHARED)
def test_one_help_text_per_flag(name: str) -> None:
    helps = {command: actions(build())[name].help for command, build in PARSERS.items() if name in EXPECTED[command]}
    same_default = {command: text for command, text in helps.items() if EXPECTED[command][name] is None}
    assert len(set(same_default.values())) <= 1, helps
    assert "%" not in "".join(helps.values())  # argparse formats help with %


def test_the_help_states_what_an_unset_default_means() -> None:
    found = actions(score_parser())
    assert found["batch_size"].help == "sequences per forward pass at most (default: 64 on CPU, 512 on GPU)"
    assert found["max_tokens"].help == "padded tokens per forward pass at most (default: 4096 on CPU, 65536 on GPU)"
    assert actions(evaluation_parser())["batch_size"].help == "sequences per forward pass at most (default: 32)"
    assert found["precision"].choices == ("fp32", "bf16", "fp16", "auto")


def test_flags_parse_as_their_field_types() -> None:
    parser = FlagParser("test")
    ScorerArguments.add_to(parser, SHARED)
    args = parser.parse_args(["--model", "m", "--max_length", "64", "--batch_size", "8", "--precision", "bf16"])
    assert ScorerArguments(**vars(args)) == ScorerArguments("m", "bf16", 64, None, 8)
    with pytest.raises(UserError, match=r"argument --max_tokens: invalid int value: '1\.5' \(see test --help\)"):
        parser.parse_args(["--model", "m", "--max_tokens", "1.5"])
    with pytest.raises(UserError, match="the following arguments are required: --model"):
        parser.parse_args([])
