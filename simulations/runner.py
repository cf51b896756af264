"""One simulation from Hydra overrides: validate, prepare output.dir, run on the chosen engine.

`flowerbed run`, `flowerbed sweep` and `flowerbed bench` all start runs through `run`, so a run
behaves the same whichever command started it (resume, overwrite, SIGTERM, the summary table).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402


console = Console(width=None if sys.stdout.isatty() else 160)  # tables stay whole in logs


def _check_output(flat: dict) -> Path:
    """Make output.dir absolute (relative to where `flowerbed` was started) and refuse an earlier run
    there with one line before any work; the ServerApp decides again and writes (server/results.py)."""
    from flowerbed.server.results import check_run_directory

    out = Path(str(flat["output.dir"])).expanduser().resolve()
    flat["output.dir"] = str(out)
    check_run_directory(flat)
    return out


def run(overrides: list[str]) -> int:
    """Run one simulation; returns the exit status (0, or 130/143 when interrupted)."""
    sigterm_interrupts()
    try:
        out = simulate(overrides)
    except KeyboardInterrupt as stop:
        console.print(f"\n[yellow]interrupted[/]: finished rounds are saved; continue with "
                      f"`flowerbed run {' '.join(overrides)} resume=true`")
        return 143 if "SIGTERM" in str(stop) else 130
    _print_summary(out)
    return 0


def simulate(overrides: list[str]) -> Path:
    """Validate, prepare output.dir and run on the chosen engine; returns the run's folder.
    `ConfigError` (one line) for a bad config, before anything is written."""
    from flowerbed.simulations import config

    flat = config.load(overrides, here=True)
    out = _check_output(flat)
    console.print(f"[bold]flowerbed[/] {flat['algorithm.name']} on {flat['dataset.name']} "
                  f"({flat['partition.name']}, {flat['clients.num']} clients, {flat['rounds']} rounds, engine {flat['engine.name']})")
    if flat["engine.name"] == "flower":
        from flowerbed.simulations.engines.flower import run_on_flower

        run_on_flower(flat)
    else:
        from flowerbed.clients.app import app as client_app
        from flowerbed.server.app import app as server_app
        from flowerbed.simulations.engines.batched import BatchedGrid
        from flowerbed.simulations.engines.inprocess import InProcessGrid, run_in_process

        logging.getLogger("flwr").setLevel(logging.WARNING)  # the progress bar says it all
        grid_class = BatchedGrid if flat["engine.name"] == "batched" else InProcessGrid
        run_in_process(server_app, client_app, flat, int(flat["clients.num"]), grid_class)
    return out


def sigterm_interrupts() -> None:
    """SIGTERM stops a run as Ctrl-C does; the checkpoint of the last finished round stays valid."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a test runner's worker)
        pass


def _print_summary(out: Path) -> None:
    """The headline numbers, then the run's folder on a line of its own (a table would wrap a long path)."""
    import json

    summary = json.loads((out / "summary.json").read_text())
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key.startswith(("final/global/acc", "final/personal/acc", "best/", "rounds", "train_time")):
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"results in {out}", soft_wrap=True, highlight=False, markup=False)  # one line however narrow the terminal: it can be copied
