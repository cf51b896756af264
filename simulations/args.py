"""argparse pieces shared by `flowerbed` and `flowerbed deploy`: errors in the project's one-line form."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line and exit status 2, as bad overrides are.

    Subparsers made with `add_subparsers().add_parser` are of the same class.
    """

    def error(self, message: str) -> NoReturn:
        print(f"flowerbed: error: {message} (`{self.prog} --help` lists what it takes)", file=sys.stderr)
        sys.exit(2)


def nonempty_path(text: str) -> str:
    """A path argument: "" would mean the working directory, where nothing of a run belongs."""
    if not text.strip():
        raise argparse.ArgumentTypeError("'' is not a path")
    return text



def accuracy_share(text: str) -> float:
    """An accuracy argument (`flowerbed report --target`): a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an accuracy in (0, 1], e.g. 0.9")
    return value
