"""The ServerApp: the same object runs on every engine and in a deployment."""

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
    cfg = dict(context.run_config)
    try:
        check_algorithm(cfg)
        RunDirectory(str(cfg["output.dir"])).check_writable("output.dir")
        if is_simulation(grid):
            check_simulation_size(grid, int(cfg["clients.num"]))
        run_federated(grid, cfg)
    except ConfigError as err:
        if type(grid).__module__.startswith("flwr."):
            # under `flwr run` the one line comes first; Flower then marks the run failed and adds
            # the traceback it logs for every ServerApp that raises (`flowerbed` prints the line alone)
            log(ERROR, "flowerbed: error: %s", err)
        raise
