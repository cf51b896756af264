"""The ServerApp: `serve` runs on every engine and in a deployment.

flowerbed's in-process engines run `app` with a config `flowerbed run` has validated; `flwr run` (the
`flower` engine, a deployment, a user's own) loads simulations/serverapp.py, which validates the run
config Flower hands over and then calls `serve`."""

from __future__ import annotations

from logging import ERROR

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from flowerbed.server.loop import check_algorithm, check_simulation_size, is_simulation, run_federated
from flowerbed.server.results import RunDirectory
from flowerbed.tasks.errors import ConfigError

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    serve(grid, dict(context.run_config))


def serve(grid: Grid, cfg: dict) -> None:
    """Check what only the server can see (its output folder, the simulation's size), then run."""
    try:
        check_algorithm(cfg)
        RunDirectory(str(cfg["output.dir"])).check_writable("output.dir")
        if is_simulation(grid):
            check_simulation_size(grid, int(cfg["clients.num"]))
        run_federated(grid, cfg)
    except ConfigError as err:
        say_error(grid, err)
        raise


def say_error(grid: Grid, err: ConfigError) -> None:
    """Under `flwr run` the one line comes first; Flower then marks the run failed (its status says
    the line too) and adds the traceback it logs for every ServerApp that raises (`flowerbed` prints
    the line alone)."""
    if type(grid).__module__.startswith("flwr."):
        log(ERROR, "flowerbed: error: %s", err)
