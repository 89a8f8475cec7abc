"""The ``fnn`` command's argument parsing, shared by its subcommands: errors as
one line, every option's default in ``--help``, and the checked value types."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

__all__ = ["UsageError", "Parser", "DefaultsFormatter", "int_at_least", "positive_float", "address"]


class UsageError(Exception):
    """A mistake in the command line: printed as one line, exit status 2."""


class DefaultsFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, ``(default: 30)``, unless the
    help already speaks of it or there is none to show (``None``, a switch that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = any(action.default is v for v in (None, False, argparse.SUPPRESS)) or not action.option_strings
        if quiet or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (``fnn train: error: ...``) instead of
    the usage block, and every option's default in ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(low: int) -> Any:
    """An argparse type: an int ``>= low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}; got {value}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def positive_float(text: str) -> float:
    """An argparse type: a positive finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number; got {text}")
    return value


def address(text: str) -> str:
    """An argparse type: ``HOST:PORT``."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT (e.g. 10.0.0.1:1234); got {text!r}")
    return text
