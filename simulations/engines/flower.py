"""The `flower` engine: Flower's Simulation Engine (Ray) through `flwr run`.

This engine starts its own `flower-superlink --simulation` on free loopback ports with its own
FLWR_HOME (a machine-wide shared SuperLink would run our app in someone else's environment),
points an explicit connection at it, submits the app with the flattened run config, and stops the
SuperLink by PID afterwards. The path to several GPUs (`engine.num_gpus`) and to Ray clusters.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flower_env(home: Path, http_port: int, control_port: int) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "FLWR_HOME": str(home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "RAY_DEDUP_LOGS": "0",
        "PYTHONPATH": str(PROJECT_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }


def _wait_healthy(port: int, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with code {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"flower-superlink did not become healthy in {timeout:.0f}s; see {log}")


def stop(process: subprocess.Popen) -> None:
    """Stop a process and everything it started (its own session), by PID."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def overrides_toml(run_config: dict) -> str:
    from simulations.config import _toml

    return "".join(f'"{k}" = {_toml(v)}\n' for k, v in run_config.items())


def run_on_flower(run_config: dict) -> None:
    """Run the app on Flower's Ray engine with one simulated SuperNode per client."""
    with tempfile.TemporaryDirectory(prefix="flowerbed-flwr-") as tmp:
        home = Path(tmp)
        http_port, control_port = free_port(), free_port()
        env = flower_env(home, http_port, control_port)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "flowerbed"\n\n[superlink.flowerbed]\naddress = "127.0.0.1:{http_port}"\ninsecure = true\n'
        )
        overrides = home / "overrides.toml"
        overrides.write_text(overrides_toml(run_config))
        log = home / "superlink.log"
        superlink = subprocess.Popen(
            ["flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess",
             "--host", "127.0.0.1", "--port", str(http_port), "--control-api-address", f"127.0.0.1:{control_port}",
             "--disable-runtime-dependency-installation", "--log-file", str(log)],
            env=env, cwd=str(PROJECT_ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            _wait_healthy(http_port, superlink, log)
            federation = (
                f"num-supernodes={int(run_config['clients.num'])} "
                f"client-resources-num-cpus={run_config.get('engine.num_cpus', 1)} "
                f"client-resources-num-gpus={run_config.get('engine.num_gpus', 0.0)}"
            )
            command = ["flwr", "run", str(PROJECT_ROOT), "flowerbed", "--stream", "-c", str(overrides), "--federation-config", federation]
            subprocess.run(command, env=env, cwd=str(PROJECT_ROOT), check=False, stdin=subprocess.DEVNULL)
        finally:
            stop(superlink)
    if not (Path(str(run_config["output.dir"])) / "summary.json").exists():
        raise RuntimeError(f"the Flower run ended without results in {run_config['output.dir']}; see the log above")
