"""The `flower` engine: Flower's Simulation Engine (Ray) through `flwr run`.

This engine starts its own `flower-superlink --simulation` on free loopback ports with its own
FLWR_HOME (a machine-wide shared SuperLink would run our app in someone else's environment),
points an explicit connection at it, submits the app with the flattened run config, and stops the
SuperLink by PID afterwards. The path to several GPUs (`engine.num_gpus`) and to Ray clusters.

The app it submits is the folder `deploy.app.write_app` writes into the run's temporary folder
(pyproject.toml and the imported flowerbed package), the same whether flowerbed is installed from a
wheel or runs from a checkout: an installed flowerbed has no pyproject.toml of its own.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flowerbed.deploy.app import write_app
from flowerbed.deploy.export import run_config_toml
from flowerbed.deploy.processes import flower_env, free_port, stop, wait_healthy

CONNECTION = "flowerbed"  # the name of the connection to our SuperLink in its FLWR_HOME/config.toml


@contextmanager
def simulation_superlink(home: Path, bin_dir: Path | None = None) -> Iterator[dict[str, str]]:
    """A `flower-superlink --simulation` of our own (FLWR_HOME `home`, free ports), stopped by PID on
    exit; yields the environment in which `flwr run APP flowerbed` submits to it. Its federation is
    Flower's default one (2 SuperNodes) unless a run says `--federation-config "num-supernodes=N"`.
    `bin_dir`: the venv whose Flower commands run, found on the environment's PATH (default: this interpreter's)."""
    http_port, control_port = free_port(), free_port()
    env = flower_env(home, http_port, control_port, bin_dir)
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "127.0.0.1:{http_port}"\ninsecure = true\n'
    )
    log = home / "superlink.log"
    superlink = subprocess.Popen(
        ["flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess",
         "--host", "127.0.0.1", "--port", str(http_port), "--control-api-address", f"127.0.0.1:{control_port}",
         "--disable-runtime-dependency-installation", "--log-file", str(log)],
        env=env, cwd=str(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_healthy(http_port, superlink, log)
        yield env
    finally:
        stop(superlink)


def run_on_flower(run_config: dict) -> None:
    """Run the app on Flower's Ray engine with one simulated SuperNode per client."""
    from flowerbed.simulations.config import app_config_toml

    # the folder names this process, so that what it started can be found (and must be gone) afterwards
    with tempfile.TemporaryDirectory(prefix=f"flowerbed-flwr-{os.getpid()}-") as tmp, simulation_superlink(Path(tmp)) as env:
        app = write_app(Path(tmp) / "app", app_config_toml())
        overrides = Path(tmp) / "overrides.toml"
        overrides.write_text(run_config_toml(run_config))
        federation = (
            f"num-supernodes={int(run_config['clients.num'])} "
            f"client-resources-num-cpus={run_config.get('engine.num_cpus', 1)} "
            f"client-resources-num-gpus={run_config.get('engine.num_gpus', 0.0)}"
        )
        command = ["flwr", "run", str(app), CONNECTION, "--stream", "-c", str(overrides), "--federation-config", federation]
        subprocess.run(command, env=env, cwd=tmp, check=False, stdin=subprocess.DEVNULL)
    if not (Path(str(run_config["output.dir"])) / "summary.json").exists():
        raise RuntimeError(f"the Flower run ended without results in {run_config['output.dir']}; see the log above")
