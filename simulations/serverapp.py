"""The ServerApp `flwr run` loads (pyproject's `serverapp`): the run config checked as `flowerbed run`
checks it, then server/app.py's ServerApp.

`flowerbed run` validates its config before it starts anything; under `flwr run` nothing did, so a
bad value failed with a traceback mid-run. Here the run config Flower hands over (every key
pyproject declares, with the `-c` overrides) becomes the flat config `flowerbed run` would have built
(`config.from_run_config`), and a problem is one line in the run's log and status, nothing written.

A relative `output.dir` is taken from the folder that holds Flower's home (`$FLWR_HOME`, default
`~/.flwr`, so `~/runs/...`): the SuperLink that starts this process may have been started from any
folder, but `flwr` and the SuperLink it talks to share FLWR_HOME. The absolute path is logged at the
start and the end of the run (server/loop.py).
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from flowerbed.server.app import say_error, serve
from flowerbed.server.loggers import check_sinks
from flowerbed.simulations import config
from flowerbed.tasks.errors import ConfigError

app = ServerApp()


def results_base() -> Path:
    """What a relative output.dir is relative to under `flwr run`: FLWR_HOME's parent folder."""
    from flwr.supercore.utils import get_flwr_home

    return get_flwr_home().expanduser().absolute().parent


def flat_config(run_config: dict) -> dict:
    """The validated flat config of this run, output.dir absolute."""
    flat = config.from_run_config(run_config)
    out = Path(str(flat["output.dir"])).expanduser()
    flat["output.dir"] = str(out if out.is_absolute() else results_base() / out)
    check_sinks(flat)
    return flat


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        cfg = flat_config(dict(context.run_config))
    except ConfigError as err:
        say_error(grid, err)
        raise
    serve(grid, cfg)
