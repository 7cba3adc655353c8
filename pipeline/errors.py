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


def cli_entry(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a CLI main so a UserError prints `error: <message>` and exits with code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            message = " ".join(str(err).split())  # always exactly one line
            print(f"error: {message}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper
