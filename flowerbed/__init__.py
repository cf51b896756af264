"""flowerbed: a federated learning simulator and runtime on Flower.

    from flowerbed import run
    results = run(["algorithm=fedprox", "rounds=5"])   # or run({"algorithm": "fedprox", "rounds": 5})
    results.metrics[-1]["global/acc"], results.summary["best/global/acc"]

Everything is imported under this one name (`flowerbed.strategies.fedloge`, `flowerbed.tasks.models`,
...), so a user's own `tasks.py` or `server.py` never shadows a flowerbed module.

In the repository the subpackages are the top-level folders (`server/`, `clients/`, `strategies/`,
`tasks/`, `simulations/`, `deploy/`, `experiments/`): one concern per folder, as the design keeps them.
This package's search path reaches them from a checkout (and from a Flower app bundle of it). An
installed wheel holds the same folders inside `flowerbed/`, where the ordinary search path finds them.
"""

import os as _os

# First thing, with nothing imported that is not loaded already, and without asking whether the
# folders are there yet: Flower copies an app bundle into place folder by folder and may import this
# package from it before the copy is done (then a check found no server/ and left the path short:
# "No module named flowerbed.clients" later). A wheel has the subpackages inside this folder.
_here = _os.path.dirname(_os.path.abspath(__file__))
if not _os.path.isdir(_os.path.join(_here, "server")):
    __path__.append(_os.path.dirname(_here))


def run(config=None):
    """Run one simulation as `flowerbed run` does and return its `Results` (per-round metrics, summary,
    config, folder); a bad config raises `ConfigError` (a ValueError) with the command's one line.
    Imported here on first use: `import flowerbed` stays light (no torch)."""
    from flowerbed.simulations.api import run as run_simulation

    return run_simulation(config)


def __getattr__(name: str) -> str:
    if name == "__version__":  # the installed distribution's version, read when asked (importlib.metadata is slow)
        from importlib import metadata

        try:
            return metadata.version("flowerbed")
        except metadata.PackageNotFoundError:  # a checkout that was never installed
            return "0+unknown"
    raise AttributeError(f"module 'flowerbed' has no attribute {name!r}")
