"""User-facing errors.

Anything a user can cause (bad input data, bad params, an unreachable storage URL) raises an
``AutoaugError`` subclass. The CLI turns these into one line on stderr and a non-zero exit;
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type), for one-line user errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class AutoaugError(Exception):
    """Base class for errors caused by user input rather than by a bug."""


class DataError(AutoaugError):
    """The input data cannot be used (missing, empty, wrong layout, unknown class...)."""


class ConfigError(AutoaugError):
    """params.yaml (or a CLI option) holds a value that is not allowed."""
