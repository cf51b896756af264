"""The ServerApp: the same object runs on every engine and in a deployment."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.loop import check_algorithm, run_federated

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = dict(context.run_config)
    check_algorithm(cfg)
    run_federated(grid, cfg)
