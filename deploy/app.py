"""The Flower app folder that `flwr run` submits: for the `flower` engine and for a deployment.

`flwr run DIR` bundles DIR into a FAB, and the FAB carries the code to the ServerApp and to every
SuperNode: a device has the packages flowerbed imports, not flowerbed itself (docs/deploy.md). An
installed flowerbed has no checkout whose pyproject.toml could be that folder, so it is written:
a pyproject.toml naming flowerbed's ServerApp and ClientApp and declaring every run-config key, and
the flowerbed package laid out as in the wheel, copied from wherever this process imported it
(site-packages, or the top-level folders of a checkout). A checkout writes the same folder, so the
engine and `flowerbed deploy` have one code path whichever way flowerbed was installed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from importlib import metadata
from pathlib import Path

import flowerbed
from flowerbed.tasks.errors import ConfigError

# the subpackages the wheel holds (pyproject.toml's [tool.hatch.build.targets.wheel.sources])
SUBPACKAGES = ("server", "clients", "strategies", "tasks", "simulations", "deploy")
SERVERAPP, CLIENTAPP = "flowerbed.server_app:app", "flowerbed.client_app:app"  # as flowerbed's own pyproject names them
MARK = "# A Flower app written by flowerbed (deploy/app.py); flowerbed writes over it, never over another project's."


def package_folder(name: str) -> Path:
    """Where this process imports `flowerbed.<name>` from."""
    spec = importlib.util.find_spec(f"flowerbed.{name}")
    assert spec is not None and spec.submodule_search_locations, name
    return Path(next(iter(spec.submodule_search_locations)))


def requirements() -> list[str]:
    """flowerbed's own run-time requirements (no extras), as its metadata lists them; none when a
    checkout was never installed. Only read where runtime dependency installation is on."""
    try:
        required = metadata.requires("flowerbed") or []
    except metadata.PackageNotFoundError:
        return []
    return [r for r in required if "extra ==" not in r]


def pyproject(app_config: str) -> str:
    """The app's pyproject.toml; `app_config` is the `[tool.flwr.app.config]` table (every key
    `flwr run -c` may set: `flowerbed.simulations.config.app_config_toml()`)."""
    dependencies = "".join(f"\n    {json.dumps(r)}," for r in requirements())  # a JSON string is a TOML string
    return (
        f'{MARK}\n[project]\nname = "flowerbed"\n'
        f'version = "{flowerbed.__version__}"\n'
        'description = "flowerbed\'s ServerApp and ClientApp, as `flowerbed` wrote them for `flwr run`"\n'
        'license = "Apache-2.0"\n'
        f"dependencies = [{dependencies}\n]\n\n"
        '[tool.flwr.app]\npublisher = "flowerbed"\n\n'
        f'[tool.flwr.app.components]\nserverapp = "{SERVERAPP}"\nclientapp = "{CLIENTAPP}"\n\n'
        f"{app_config}\n"
    )


def write_app(folder: Path, app_config: str) -> Path:
    """Write the app into `folder` (replacing an app written there before, never another project) and return it."""
    toml = folder / "pyproject.toml"
    if toml.exists() and not toml.read_text().startswith(MARK):
        raise ConfigError(f"{toml} is not an app flowerbed wrote: give an empty or new folder for the app")
    package = folder / "flowerbed"
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    for module in Path(flowerbed.__file__).parent.glob("*.py"):  # __init__ and the two app components
        shutil.copy2(module, package / module.name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SUBPACKAGES:
        shutil.copytree(package_folder(name), package / name, ignore=skip)
    (folder / "pyproject.toml").write_text(pyproject(app_config))
    return folder
