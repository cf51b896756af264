"""`flowerbed.run(...)`: one simulation from Python, returning its metrics rather than an exit status.

It is `flowerbed run` without the terminal: the same validation (a bad config raises `ConfigError`,
a `ValueError`, with the one line the command prints, before anything is written), the same run
folder, the same engines. It installs no signal handler and prints no results table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from flowerbed.tasks.errors import ConfigError

PLAIN = re.compile(r"[\w./:+-]*")  # values Hydra reads unquoted


@dataclass(frozen=True)
class Results:
    """What a run wrote: `metrics` is metrics.jsonl (one dict per round, round 0 before training),
    `summary` is summary.json, `config` the resolved flat config.yaml."""

    output_dir: Path
    metrics: list[dict]
    summary: dict
    config: dict


def run(config: Sequence[str] | Mapping[str, object] | None = None) -> Results:
    """Run one simulation: `run(["algorithm=fedprox", "rounds=5"])` or `run({"algorithm": "fedprox", "rounds": 5})`."""
    import yaml

    from flowerbed.simulations.runner import simulate

    out = simulate(overrides(config))
    return Results(output_dir=out, metrics=[json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()],
                   summary=json.loads((out / "summary.json").read_text()), config=yaml.safe_load((out / "config.yaml").read_text()))


def overrides(config: Sequence[str] | Mapping[str, object] | None) -> list[str]:
    """Hydra overrides from a list of them, or from a dict of key (or group) -> value."""
    if config is None:
        return []
    if isinstance(config, Mapping):
        return [f"{key}={hydra_value(value)}" for key, value in config.items()]
    if isinstance(config, (str, bytes)) or not all(isinstance(item, str) for item in config):
        raise ConfigError(f"flowerbed.run takes a list of key=value strings or a dict, not {config!r}")
    return list(config)


def hydra_value(value: object) -> str:
    """`value` as Hydra reads it back: true/false, null, numbers as they are, other text quoted where needed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if PLAIN.fullmatch(text) and text:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
