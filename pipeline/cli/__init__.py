"""The commands users type: `q2-reward data|train|evaluate|score|serve [FLAGS ...]`, in the style of TRL's `trl` CLI.

Each command is the `main` of its step, given the rest of the command line, the same as `python -m pipeline.X`; the
train command (`cli/train.py`) orders training -> evaluation -> publishing, so it may import every step.
This module stays light (no torch): a command's module is imported when it runs, where Ctrl-C is one line.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from typing import NamedTuple

from pipeline import __version__
from pipeline.core.errors import INTERRUPTED, INTERRUPTED_RESUMABLE, UserError, cli_entry

PROG = "q2-reward"


class Command(NamedTuple):
    module: str  # holds the command's main(argv)
    summary: str
    same_as: str
    interrupted: str = INTERRUPTED  # the line Ctrl-C prints


COMMANDS = {
    "data": Command("pipeline.data.cli", "ranked file -> preference pairs and their report", "python -m pipeline.data"),
    "train": Command(
        "pipeline.cli.train",
        "ranked file -> reward model, evaluated and saved",
        "python pipeline/train.py",
        INTERRUPTED_RESUMABLE,  # checkpoints are kept: a rerun resumes
    ),
    "evaluate": Command(
        "pipeline.evaluation.cli", "exact pairwise accuracy of a saved model", "python -m pipeline.evaluation"
    ),
    "score": Command("pipeline.score.cli", "score the rows of a file with a saved model", "python -m pipeline.score"),
    "serve": Command("pipeline.serve.cli", "serve a saved model over HTTP", "python -m pipeline.serve"),
}


def help_text() -> str:
    width, summary = max(map(len, COMMANDS)), max(len(command.summary) for command in COMMANDS.values())
    rows = [f"  {name:<{width}}  {c.summary:<{summary}}  {c.same_as}" for name, c in COMMANDS.items()]
    return "\n".join(
        [
            f"usage: {PROG} COMMAND [FLAGS ...]",
            "",
            "Ranked human answers -> TRL reward model, with exact pairwise accuracy.",
            "",
            f"  {'command':<{width}}  {'what it does':<{summary}}  the same as",
            *rows,
            "",
            f"`{PROG} COMMAND --help` lists a command's flags. `{PROG} train` runs one process; on several",
            "processes or GPUs, training goes through accelerate:",
            "  accelerate launch pipeline/train.py --config recipes/quickstart.yaml",
            "  accelerate launch -m pipeline.cli train --config recipes/quickstart.yaml",
            "",
        ]
    )


def run_command(name: str, argv: list[str]) -> object:
    """Run command `name` with `argv`. Its module is imported here: Ctrl-C while torch and transformers load prints
    the command's one line (exit 130) rather than a traceback."""
    command = COMMANDS[name]

    @cli_entry(interrupted=command.interrupted)
    def run() -> object:
        return importlib.import_module(command.module).main(argv)

    return run()


def _unknown(word: str) -> UserError:
    match = difflib.get_close_matches(word, list(COMMANDS), n=1)
    hint = f" (did you mean {match[0]}?)" if match else ""
    known = f"commands: {', '.join(COMMANDS)} (see {PROG} --help)"
    if word.startswith("-"):
        return UserError(f"{word}: the command comes first, e.g. {PROG} train {word} ...; {known}")
    return UserError(f"unknown command '{word}'{hint}; {known}")


@cli_entry
def _choose(argv: list[str]) -> str | None:
    """The command to run, or None when this printed the help or the version (exit 0)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(help_text(), end="")
        return None
    if argv[0] == "--version":
        print(f"{PROG} {__version__}")
        return None
    if argv[0] not in COMMANDS:
        raise _unknown(argv[0])
    return argv[0]


def main(argv: list[str] | None = None) -> None:
    """`q2-reward COMMAND [FLAGS ...]`, the console script (which exits with what this returns: None is 0)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = _choose(argv)
    if name is not None:
        run_command(name, argv[1:])
