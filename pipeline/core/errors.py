"""User-facing errors: one clear line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2


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


def cli_entry(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a CLI main so a UserError prints `error: <message>` and exits with code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper
