"""flowerbed installs like any Python package: the wheel, installed (not editable) into a throw-away
venv, gives a `flowerbed` command that runs from any folder, and a user's own Flower app that lists
flowerbed as a dependency runs with `flwr run .` with nothing of the checkout beside it.

The throw-away venv reuses this venv's dependencies without its copy of flowerbed: a `deps.pth` in
its site-packages names this venv's site-packages. Python appends such a path to sys.path but does
not read the .pth files inside it, so the editable install's .pth (which puts the checkout on the
path) is skipped. The wheel is installed before deps.pth is written, so pip never sees that other
flowerbed. Flower's commands get small launchers in the venv's bin, so that the SuperLink and every
process it starts run on the throw-away venv's Python too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from flowerbed.deploy.app import SUBPACKAGES
from tests.conftest import ROOT

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(not (BIN / "flower-superlink").exists(), reason="flwr's CLI is not installed in this venv")
LAUNCHER = "#!{python}\nimport sys\nfrom {module} import {attr}\nsys.exit({attr}())\n"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel --no-deps .` of the checkout (with this venv's hatchling when it has one: no network)."""
    out = tmp_path_factory.mktemp("dist")
    offline = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", *offline,
                            str(ROOT), "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    [path] = out.glob("flowerbed-*.whl")
    return path


def throwaway_venv(folder: Path, requirement: str) -> Path:
    """A venv holding `requirement` (flowerbed, without its dependencies) that reuses ours; its bin."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                                "--disable-pip-version-check", requirement], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-3000:]
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for entry in metadata.distribution("flwr").entry_points.select(group="console_scripts"):
        launcher = folder / "bin" / entry.name
        launcher.write_text(LAUNCHER.format(python=python, module=entry.module, attr=entry.attr))
        launcher.chmod(0o755)
    return folder / "bin"


def clean_env() -> dict[str, str]:
    """This environment without a PYTHONPATH that could name the checkout."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_the_wheel_holds_the_package_and_its_configs_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    version = metadata.version("flowerbed")
    assert {n.split("/")[0] for n in names} == {"flowerbed", f"flowerbed-{version}.dist-info"}
    inside = {n.split("/")[1] for n in names if n.startswith("flowerbed/")}
    assert inside == {"__init__.py", "server_app.py", "client_app.py", *SUBPACKAGES}  # no tests, docs, experiments, runs
    sources = {f"flowerbed/{p.relative_to(ROOT).as_posix()}" for name in SUBPACKAGES for p in (ROOT / name).rglob("*")
               if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts}
    assert any(s.endswith("simulations/conf/config.yaml") for s in sources)
    assert sources <= set(names), sorted(sources - set(names))[:5]  # every module and every Hydra config


def test_the_installed_wheel_runs_from_any_folder(wheel, tmp_path):
    bin_dir = throwaway_venv(tmp_path / "venv", str(wheel))
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    probe = ("import json, sys, flowerbed, flowerbed.server.app as s; "
             "print(json.dumps([flowerbed.__file__, s.__file__, sys.path]))")
    where = subprocess.run([bin_dir / "python", "-c", probe], cwd=folder, env=clean_env(), capture_output=True, text=True)
    assert where.returncode == 0, where.stderr[-3000:]
    package, server, path = json.loads(where.stdout)
    print(f"flowerbed.__file__ = {package}")
    for module in (package, server):
        assert Path(module).is_relative_to(tmp_path / "venv"), module
    assert str(ROOT) not in path and str(ROOT / "flowerbed") not in path

    version = subprocess.run([bin_dir / "flowerbed", "--version"], env=clean_env(), capture_output=True, text=True)
    assert version.stdout.strip() == f"flowerbed {metadata.version('flowerbed')}"
    run = subprocess.run([bin_dir / "flowerbed", "run", "rounds=2", "output.dir=run"], cwd=folder, env=clean_env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    lines = (folder / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 1, 2]  # round 0: the initial model's evaluation
    assert (folder / "run" / "summary.json").exists()


SERVER_APP = '''"""My federation's server: flowerbed's ServerApp logic (its strategies, by algorithm.name) in my own ServerApp."""

from pathlib import Path

import flowerbed
from flowerbed.server.app import main as flowerbed_main
from flwr.serverapp import ServerApp

app = ServerApp()


@app.main()
def main(grid, context):
    flowerbed_main(grid, context)
    (Path(str(context.run_config["output.dir"])) / "flowerbed-origin.txt").write_text(flowerbed.__file__)
'''

CLIENT_APP = '''"""My federation's clients: flowerbed's ClientApp."""

from flowerbed.clients.app import app as flowerbed_client_app

app = flowerbed_client_app
'''


def test_a_users_own_flower_app_with_flowerbed_as_its_dependency_runs_with_flwr_run(wheel, tmp_path, monkeypatch):
    """A project of the user's own: pyproject.toml lists `flowerbed @ file://<wheel>` (installed from
    that line), its components are the user's modules, its run config sets the user's values on
    flowerbed's keys; `flwr run .` on a SuperLink of the throw-away venv (own FLWR_HOME and ports,
    stopped by PID) trains FedProx to the end with flowerbed imported from the venv."""
    import tomli_w

    from flowerbed.simulations.engines.flower import CONNECTION, simulation_superlink

    project, out = tmp_path / "myproject", tmp_path / "out"
    (project / "myapp").mkdir(parents=True)
    (project / "myapp" / "__init__.py").write_text("")
    (project / "myapp" / "server_app.py").write_text(SERVER_APP)
    (project / "myapp" / "client_app.py").write_text(CLIENT_APP)
    requirement = f"flowerbed @ {wheel.as_uri()}"
    bin_dir = throwaway_venv(tmp_path / "venv", requirement)
    keys = subprocess.run([bin_dir / "python", "-c", "from flowerbed.simulations.config import app_config_defaults as d; "
                           "import json; print(json.dumps(d()))"], cwd=project, env=clean_env(), capture_output=True, text=True)
    assert keys.returncode == 0, keys.stderr[-3000:]
    run_config = {**json.loads(keys.stdout), "algorithm.name": "fedprox", "algorithm.proximal_mu": 0.1, "clients.num": 2,
                  "rounds": 2, "train.local_epochs": 1, "output.dir": str(out)}
    (project / "pyproject.toml").write_text(tomli_w.dumps({
        "project": {"name": "myapp", "version": "1.0.0", "dependencies": [requirement]},
        "tool": {"flwr": {"app": {"publisher": "me", "components": {"serverapp": "myapp.server_app:app",
                                                                     "clientapp": "myapp.client_app:app"},
                                  "config": run_config}}}}))
    monkeypatch.delenv("PYTHONPATH", raising=False)  # nothing of the checkout reaches the Flower processes
    with simulation_superlink(tmp_path / "flwr-home", bin_dir) as env:
        flwr = subprocess.run(["flwr", "run", ".", CONNECTION, "--stream", "--federation-config", "num-supernodes=2"],
                              cwd=project, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        listed = subprocess.run(["flwr", "ls", CONNECTION, "--format", "json"], cwd=project, env=env,
                                capture_output=True, text=True, timeout=60)
    print(flwr.stdout[-1500:])
    assert [r["status"] for r in json.loads(listed.stdout)["runs"]] == ["finished:completed"], flwr.stdout[-3000:]
    assert Path((out / "flowerbed-origin.txt").read_text()).is_relative_to(tmp_path / "venv")
    assert [json.loads(line)["round"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert json.loads((out / "summary.json").read_text())["rounds"] == 2
