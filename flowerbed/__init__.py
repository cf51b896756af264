"""flowerbed: a federated learning simulator and runtime on Flower.

    from flowerbed import run
    results = run(["algorithm=fedprox", "rounds=5"])   # or run({"algorithm": "fedprox", "rounds": 5})
    results.metrics[-1]["global/acc"], results.summary["best/global/acc"]

Everything is imported under this one name (`flowerbed.strategies.fedloge`, `flowerbed.tasks.models`,
...), so a user's own `tasks.py` or `server.py` never shadows a flowerbed module.

In the repository the subpackages are the top-level folders (`server/`, `clients/`, `strategies/`,
`tasks/`, `simulations/`, `deploy/`, `experiments/`): one concern per folder, as the design keeps them.
This package's search path reaches them from the checkout. An installed wheel holds the same folders
inside `flowerbed/`, where the ordinary search path finds them.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

_here = Path(__file__).resolve().parent
if not (_here / "server").is_dir() and (_here.parent / "server" / "app.py").is_file():
    __path__.append(str(_here.parent))  # a checkout: the subpackages are the folders beside this one

try:
    __version__ = metadata.version("flowerbed")
except metadata.PackageNotFoundError:  # a checkout that was never installed (flwr run . of a bare copy)
    __version__ = "0+unknown"


def run(config=None):
    """Run one simulation as `flowerbed run` does and return its `Results` (per-round metrics, summary,
    config, folder); a bad config raises `ConfigError` (a ValueError) with the command's one line.
    Imported here on first use: `import flowerbed` stays light (no torch)."""
    from flowerbed.simulations.api import run as run_simulation

    return run_simulation(config)
