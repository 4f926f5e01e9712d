"""What counts as the user's mistake, and how the command lines report it.

A :class:`UserError` is something the person running a command can fix: a file that is missing, truncated or not
what it claims to be, a recipe value, a flag, an input the model cannot take, a run whose loss diverged. Every
command line (``train.py``, ``eval.py``, ``python -m zoo.convert``, ...) runs through :func:`run_cli`, which prints
such an error as one line on stderr and exits with status 2; ``--debug`` shows the traceback as well. Anything
else is a bug in the zoo or a library and keeps its traceback.

This module imports nothing from the zoo, so every layer (data, models, engine, scripts) can raise these errors.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

__all__ = [
    "DivergedError", "FileError", "InputError", "ModelInputError", "UserError", "WriteError", "run_cli",
    "user_error_types",
]


class UserError(Exception):
    """A mistake in what the user gave; its message names the bad value and what was expected."""


class InputError(UserError, ValueError):
    """A value the user gave that does not fit what it is used with (a flag, a data set, a model argument)."""


class ModelInputError(InputError):
    """A tensor a model cannot take (rank, channels, dtype, size below the model's minimum), with its shape."""


class FileError(UserError, ValueError):
    """A file that cannot be read as what it should be (an image, a checkpoint, an export), named with the reason."""


class DivergedError(UserError, FloatingPointError):
    """Training produced a non-finite loss; the last checkpoint on disk is the last good one."""


class WriteError(UserError, OSError):
    """A file that could not be written (disk full, read-only folder); the previous file at that path is intact."""


# Operating-system errors about a path the user named are user errors too.
_OS_USER_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def user_error_types() -> tuple[type[BaseException], ...]:
    return (UserError, *_OS_USER_ERRORS)


def run_cli(prog: str, main: Callable[[Sequence[str]], int], argv: Sequence[str]) -> int:
    """``main(argv)`` with user errors as ``"PROG: error: MESSAGE"`` on stderr and exit status 2.

    ``--debug`` anywhere in `argv` (removed before `main` sees it), or ``ATTNZOO_DEBUG=1``, re-raises instead, so the
    traceback shows. Errors of other types propagate with their traceback (a bug, not the user's mistake).
    """
    argv = list(argv)
    debug = "--debug" in argv or os.environ.get("ATTNZOO_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        return main(argv)
    except user_error_types() as e:
        if debug:
            raise
        text = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, _OS_USER_ERRORS) and e.filename is not None and str(e.filename) not in text:
            text = f"{text}: {e.filename!r}"
        print(f"{prog}: error: {text} (run with --debug for the traceback)", file=sys.stderr)
        return 2
