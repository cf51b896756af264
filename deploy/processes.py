"""Starting and stopping Flower's own processes (SuperLink, SuperNodes) from Python.

Shared by the `flower` engine and the deployment helpers. Every process starts in its own session
so that stopping it by PID also stops what it spawned (SuperExec, ServerApp, ClientApp processes),
and nothing is ever found or killed by name: another user's Flower on the same host is left alone.
Each caller gives its processes their own FLWR_HOME and free ports, because a Flower process
started elsewhere on the same port would otherwise run our app in its environment.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flower_env(home: Path, http_port: int | None = None, control_port: int | None = None,
               bin_dir: Path | None = None) -> dict[str, str]:
    """The environment for Flower processes of ours: own FLWR_HOME, offline, the Flower commands of
    `bin_dir` (default: this interpreter's venv) first on PATH. flowerbed's code reaches the ServerApp
    and ClientApps in the app's FAB (deploy/app.py) or from where that venv has it installed."""
    env = {
        **os.environ,
        "PATH": str(bin_dir or Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "RAY_DEDUP_LOGS": "0",
    }
    if http_port is not None:  # the ports `flwr` would give a managed local SuperLink: never the shared defaults
        env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"] = str(http_port)
    if control_port is not None:
        env["FLWR_LOCAL_CONTROL_API_PORT"] = str(control_port)
    return env


def start(command: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    """Start `command` in its own session, stdout and stderr into `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(port: int, process: subprocess.Popen, log: Path, timeout: float = 60.0, ca_file: Path | None = None) -> None:
    """Wait until a SuperLink answers `/health` (over HTTPS, trusting only `ca_file`, when given)."""
    scheme = "https" if ca_file else "http"
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with code {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/health", timeout=1, context=context) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"flower-superlink did not become healthy in {timeout:.0f}s; see {log}")


def stop(process: subprocess.Popen, graceful_s: float = 10.0) -> None:
    """Stop a process and everything it started (its own session), by PID: SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        _kill_group(process.pid, signal.SIGKILL)  # the leader is gone; its children may not be
        return
    for sig, wait in ((signal.SIGTERM, graceful_s), (signal.SIGKILL, 5.0)):
        if not _kill_group(process.pid, sig):
            return
        try:
            process.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    _kill_group(process.pid, signal.SIGKILL)  # children that outlived their leader


def _kill_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
