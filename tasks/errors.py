"""The one exception type that user-facing code turns into a one-line message and exit status 2."""


class ConfigError(ValueError):
    """A configuration value, or data it points at, that the run cannot use.

    The message is one line: which key, which value, what is allowed.
    """

    @classmethod
    def invalid(cls, key: str, value: object, allowed: str) -> "ConfigError":
        return cls(f"{key}={value!r} is not valid: {allowed}")


class RunAborted(ConfigError):
    """A run that cannot go on (e.g. every client failing round after round): one line, exit 2."""
