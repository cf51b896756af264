"""What the table scripts share: start a run once, read its metrics back, print mean ± std.

Each table script starts its runs through the `flowerbed` command. A run whose summary.json exists
has finished (the server writes it last) and is reused, so a script cut short goes on where it
stopped and `--no-run` style rewrites of a page cost no training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def finished(run_dir: Path) -> bool:
    """Whether the run in `run_dir` ran to its end (a running or killed one has no summary.json)."""
    return (run_dir / "summary.json").exists()


def run_once(run_dir: Path, args: list[str]) -> None:
    """`flowerbed run ARGS` (ARGS name `output.dir=run_dir`) unless that run finished; an interrupted
    one (config.yaml but no summary.json) continues with resume=true; a failed run stops the script
    with its exit status."""
    from flowerbed.simulations.cli import main

    if finished(run_dir):
        return
    resume = ["resume=true"] if (run_dir / "config.yaml").exists() else []
    code = main(["run", *args, *resume])
    if code != 0:
        raise SystemExit(code)


def history(run_dir: Path) -> list[dict]:
    """The run's metrics.jsonl, one dict per line (round 0 first)."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def plus_minus(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """`mean ± std` of `values` times `scale` (population std, as the pages always showed); `–` for none."""
    if not values:
        return "–"
    return f"{np.mean(values) * scale:.{digits}f} ± {np.std(values) * scale:.{digits}f}"
