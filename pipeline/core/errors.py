"""User-facing errors: one clear line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import argparse
import functools
import gc
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from typing_extensions import override

T = TypeVar("T")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
INTERRUPTED = "interrupted"
INTERRUPTED_RESUMABLE = "interrupted; rerun the same command to resume"


class UserError(Exception):
    """An error the user can fix (bad file, column, recipe key, no network). Message is one line."""


def one_line(err: BaseException | str, limit: int | None = None, with_type: bool = False) -> str:
    """The text of an error (or message) as one line, optionally cut to `limit` characters and prefixed by its type.

    The one formatter for messages that end up in a one-line error, whatever library raised them.
    """
    text = " ".join(str(err).split())
    if isinstance(err, BaseException):
        text = text or type(err).__name__
        if with_type:
            text = f"{type(err).__name__}: {text}"
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def cli_entry(
    main: Callable[..., T] | None = None, *, interrupted: str = INTERRUPTED
) -> Callable[..., T] | Callable[[Callable[..., T]], Callable[..., T]]:
    """Wrap a CLI main: a UserError prints `error: <message>` and exits 2; Ctrl-C prints `interrupted` and exits 130.

    Use as `@cli_entry`, or `@cli_entry(interrupted=...)` where a rerun resumes (training keeps its checkpoints).
    """

    def decorate(function: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except UserError as err:
                print(f"error: {one_line(err)}", file=sys.stderr)
                sys.exit(EXIT_USER_ERROR)
            except KeyboardInterrupt:
                pass
            # Outside the except block the interrupted frames are released; collected now, their progress bars
            # print their last state before our line rather than after it.
            gc.collect()
            print(f"\n{interrupted}", file=sys.stderr)  # on a line of its own: a bar may have left the cursor mid-line
            sys.exit(EXIT_INTERRUPTED)

        return wrapper

    return decorate if main is None else decorate(main)


class FlagParser(argparse.ArgumentParser):
    """The commands' flag parser: a flag error is the one-line `error:` of every user error (no usage dump), and
    abbreviated flags are unknown flags. `prog` names the command in the pointer to its --help."""

    @override
    def __init__(self, prog: str, **kwargs: Any) -> None:
        super().__init__(prog=prog, allow_abbrev=False, **kwargs)

    @override
    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")
