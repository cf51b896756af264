"""One simulation from Hydra overrides: validate, prepare output.dir, run on the chosen engine.

`flowerbed run`, `flowerbed sweep` and `flowerbed bench` all start runs through `run`, so a run
behaves the same whichever command started it (resume, overwrite, SIGTERM, the summary table).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from flowerbed.tasks.errors import ConfigError  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 160)  # tables stay whole in logs
IGNORED_ON_RESUME = ("resume", "overwrite", "rounds", "clients.timeout", "engine.", "train.device", "train.num_threads",
                     "privacy.target_epsilon")  # a run stopped at its privacy budget may go on with a larger one


def _prepare_output(flat: dict) -> Path:
    """Make output.dir absolute and decide what to do with an earlier run there."""
    import yaml

    from flowerbed.server.results import RunDirectory

    out = Path(str(flat["output.dir"])).expanduser().resolve()
    flat["output.dir"] = str(out)
    earlier = out / "config.yaml"
    if earlier.exists():
        if flat["resume"]:
            saved = yaml.safe_load(earlier.read_text())
            for key, value in flat.items():
                if not key.startswith(IGNORED_ON_RESUME) and saved.get(key) != value:
                    raise ConfigError(f"resume=true but {key}={value!r} differs from the run in {out} ({saved.get(key)!r})")
        elif flat["overwrite"]:
            shutil.rmtree(out)
        else:
            raise ConfigError(f"output.dir={str(out)!r} holds an earlier run: resume=true continues it, overwrite=true replaces it")
    elif flat["resume"]:  # a mistyped output.dir would otherwise start a new run from round 0
        raise ConfigError(f"resume=true but output.dir={str(out)!r} holds no run to continue (no config.yaml); "
                          "leave resume out to start one there")
    try:
        RunDirectory(out).write_config(flat, replace=True)
    except OSError as err:  # what the check before any work cannot see (a full disk, a read-only mount)
        raise ConfigError.invalid("output.dir", str(out), f"a folder that can be written ({err.strerror})") from err
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
    out = _prepare_output(flat)
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
    import json

    summary = json.loads((out / "summary.json").read_text())
    table = Table(title=f"results in {out}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key.startswith(("final/global/acc", "final/personal/acc", "best/", "rounds", "train_time")):
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
