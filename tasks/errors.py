"""The one exception type that user-facing code turns into a one-line message and exit status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: object, options: Iterable[str]) -> str:
    """`"; did you mean fedavg?"` when one option is close to `word` (a typo), else `""`.

    The cutoff (0.75 of difflib's ratio) takes one or two wrong letters in a short name, and leaves
    a different word alone (`fedmagic` is not suggested `fedavg`).
    """
    match = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.75)
    return f"; did you mean {match[0]}?" if match else ""


class ConfigError(ValueError):
    """A configuration value, or data it points at, that the run cannot use.

    The message is one line: which key, which value, what is allowed.
    """

    @classmethod
    def invalid(cls, key: str, value: object, allowed: str, options: Iterable[str] = ()) -> "ConfigError":
        """`key=value is not valid: allowed`, plus the nearest of `options` when `value` looks like a typo of one."""
        return cls(f"{key}={value!r} is not valid: {allowed}{did_you_mean(value, options)}")


class RunAborted(ConfigError):
    """A run that cannot go on (e.g. every client failing round after round): one line, exit 2."""
