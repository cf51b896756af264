"""Edge deployment, end to end on loopback: the same app on a real SuperLink and SuperNodes.

The federation is what `flowerbed deploy` prepares and prints: a SuperLink with TLS and node
authentication, three SuperNodes that each read their own exported data file and keep their
personal state in their own state-dir, and a run submitted with `flwr run data/app <connection>`
(the app `flowerbed deploy export` writes beside the data).
Processes are started from the exact argv lists `flowerbed deploy commands` prints, each in its
own session, and stopped by PID. The run is FedLoGe (a personal head in `context.state`).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flwr.app import Error, Message
from flwr.common.constant import ErrorCode

from flowerbed.deploy import commands
from flowerbed.deploy.app import write_app
from flowerbed.deploy.certs import make_certificates, write_node_key
from flowerbed.deploy.export import export_partitions, run_config_toml
from flowerbed.deploy.processes import flower_env, free_port, start, stop, wait_healthy
from flowerbed.simulations import config
from flowerbed.simulations.engines.inprocess import InProcessGrid, run_in_process
from tests.conftest import flowerbed, read_metrics

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(not (BIN / "flower-superlink").exists(), reason="flwr's CLI is not installed in this venv")

# digits, a tiny MLP, 3 clients, 3 rounds; evaluation after the last round only (each message on a
# SuperNode starts a fresh Python process, so every evaluation round costs seconds on 2 cores)
OVERRIDES = ("algorithm=fedloge", "model=mlp", "clients.num=3", "rounds=3", "evaluate.every=3", "clients.min_train=2",
             "train.local_epochs=1", "algorithm.etf_steps=50", "clients.timeout=120", "seed=0")
VICTIM = 2  # the client whose SuperNode is killed once round 1 is done


def close(a: dict, b: dict, skip: tuple[str, ...] = ("time/",)) -> list[str]:
    """Keys whose values differ beyond float noise (the engines pin torch threads: bit-equal in practice)."""
    bad = []
    for key in sorted(set(a) | set(b)):
        if key.startswith(skip):
            continue
        x, y = a.get(key), b.get(key)
        if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            ok = all(abs(u - v) <= 1e-6 if isinstance(u, float) else u == v for u, v in zip(x, y))
        elif isinstance(x, float) and isinstance(y, float):
            ok = abs(x - y) <= 1e-6
        else:
            ok = x == y
        if not ok:
            bad.append(f"{key}: {x!r} vs {y!r}")
    return bad


class KilledAfterRound1(InProcessGrid):
    """The sequential engine, with client VICTIM's node gone from round 2 on (as the killed SuperNode)."""

    def execute(self, message: Message) -> Message:
        context = self.contexts[message.metadata.dst_node_id]
        if context.node_config["partition-id"] == VICTIM and int(message.content["config"]["server-round"]) >= 2:
            return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="node unavailable"), reply_to=message)
        return super().execute(message)


class DeviceNodes(InProcessGrid):
    """The sequential engine with device-style nodes: a client-id, an exported data file, a state-dir."""

    def __init__(self, *args, data_dir: Path, state_root: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for context in self.contexts.values():
            k = context.node_config["partition-id"]
            context.node_config = {"client-id": k, "data-path": str(data_dir / f"client-{k}.npz"),
                                   "state-dir": str(state_root / f"node-{k}")}
        self.restarts = 0


class RestartingNodes(DeviceNodes):
    """Every node's process restarts before every round: `context.state` is empty again when a
    round's first message comes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: dict[int, int] = {}

    def execute(self, message: Message) -> Message:
        node = message.metadata.dst_node_id
        rnd = int(message.content["config"]["server-round"])
        if rnd >= 2 and self.seen.get(node) != rnd:
            self.contexts[node].state = type(self.contexts[node].state)()  # a fresh process
            self.restarts += 1
        self.seen[node] = rnd
        return super().execute(message)


class RejoinsWithNewNodeId(DeviceNodes):
    """Client VICTIM's SuperNode restarts right after its round-1 reply and comes back under a new
    node id (as the SuperLink gives one without node authentication), with an empty `context.state`."""

    def execute(self, message: Message) -> Message:
        node = message.metadata.dst_node_id
        if node not in self.contexts:  # the old node id: gone
            return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="node unavailable"), reply_to=message)
        reply = super().execute(message)
        context = self.contexts[node]
        if context.node_config["client-id"] == VICTIM and message.metadata.message_type == "train" and self.restarts == 0:
            self.restarts += 1
            context.node_id, context.state = node + 1, type(context.state)()
            self.contexts[node + 1] = self.contexts.pop(node)
        return reply


def _device_run(tmp_path: Path, nodes: type[DeviceNodes], overrides: list[str]) -> tuple[list[dict], list[dict], DeviceNodes]:
    """Sequential metrics, and those of the same run on exported data files with `nodes`."""
    assert flowerbed("run", *overrides, f"output.dir={tmp_path / 'seq'}") == 0
    flat = config.load([*overrides, f"output.dir={tmp_path / 'devices'}"])
    export_partitions(flat, tmp_path / "data")
    from flowerbed.clients.app import app as client_app
    from flowerbed.server.app import app as server_app

    grid = run_in_process(server_app, client_app, flat, 3,
                          functools.partial(nodes, data_dir=tmp_path / "data", state_root=tmp_path / "state"))
    return read_metrics(tmp_path / "seq"), read_metrics(tmp_path / "devices"), grid


def test_node_local_data_and_state_dir_survive_restarts(tmp_path):
    """Exported data files + node-local state-dir, every node restarted before every round: the same
    numbers as the sequential engine (FedLoGe's personal head comes back from disk each time)."""
    sequential, restarted, grid = _device_run(tmp_path, RestartingNodes, [*OVERRIDES, "evaluate.every=1"])
    assert grid.restarts == 2 * 3  # before rounds 2 and 3, on each of the three nodes
    assert len(sequential) == len(restarted) == 4
    for a, b in zip(sequential, restarted):
        assert close(a, b) == [], a["round"]
    # the newest three files stay (clients/state.py: KEEP), so a resume from a checkpoint behind them finds its round
    assert sorted(p.name for p in (tmp_path / "state" / "node-1" / "1").iterdir()) == ["round-1.pt", "round-2.pt", "round-3.pt"]


def test_restarted_nodes_without_their_state_dir_lose_the_personal_head(tmp_path, monkeypatch):
    """The control for the test above: the same restarts with the restore from state-dir switched
    off give other personalized numbers, so the restarts there really cost the head."""
    from flowerbed.clients import state

    monkeypatch.setattr(state, "restore", lambda *args: None)
    sequential, restarted, _ = _device_run(tmp_path, RestartingNodes, [*OVERRIDES, "evaluate.every=1"])
    assert close(sequential[1], restarted[1]) == []  # round 1: no restart yet
    assert any(k.startswith("personal/") for k in close(sequential[-1], restarted[-1]))


def test_a_restarted_supernode_rejoins_the_run_with_its_state(tmp_path):
    """The server asks a node it has not seen for its client id before each round, so the restarted
    device trains again from round 2, its personal head restored: the sequential run's numbers."""
    sequential, rejoined, grid = _device_run(tmp_path, RejoinsWithNewNodeId, list(OVERRIDES))
    assert grid.restarts == 1 and [r["clients/trained"] for r in rejoined[1:]] == [3, 3, 3]
    assert len(sequential) == len(rejoined)
    for a, b in zip(sequential, rejoined):
        assert close(a, b) == [], a["round"]


class MissingData(InProcessGrid):
    """Client 2's device names a data file that is not there."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for context in self.contexts.values():
            if context.node_config["partition-id"] == 2:
                context.node_config = {"client-id": 2, "data-path": "/nonexistent/client-2.npz"}


def test_a_bad_data_path_is_one_log_line_and_a_failed_client(tmp_path, caplog):
    flat = config.load([*OVERRIDES, "rounds=1", f"output.dir={tmp_path / 'run'}"])
    from flowerbed.clients.app import app as client_app
    from flowerbed.server.app import app as server_app

    run_in_process(server_app, client_app, flat, 3, MissingData)
    lines = [r for r in caplog.records if "nonexistent" in r.getMessage()]
    assert len(lines) == 2 and not any(r.exc_info for r in lines)  # train and evaluate: one line each, no traceback
    assert lines[0].getMessage().startswith("flowerbed: data-path='/nonexistent/client-2.npz' is not valid: an existing .npz")
    last = read_metrics(tmp_path / "run")[-1]
    assert (last["clients/trained"], last["clients/failures"]) == (2, 1)  # the round went on with the others


def test_deploy_helpers_fail_in_one_line(tmp_path, capsys):
    assert flowerbed("deploy", "certs", str(tmp_path / "certs"), "--nodes", "2", "--host", "10.0.0.5") == 0
    assert flowerbed("deploy", "certs", str(tmp_path / "certs")) == 2  # never overwrites keys silently
    assert flowerbed("deploy", "commands") == 2  # TLS needs certificates; --insecure must be explicit
    assert flowerbed("deploy", "check", str(tmp_path / "missing.npz")) == 2
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert flowerbed("deploy", "check", str(tmp_path / "bad.npz")) == 2
    for garbage in ("garbage", "a=b c"):  # Flower would drop the first silently and refuse the second
        with pytest.raises(SystemExit) as stopped:  # argparse's exit, which `flowerbed` ends with
            flowerbed("deploy", "check", str(tmp_path / "bad.npz"), "--node-config", garbage)
        assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(errors) == 6 and all(line.startswith("flowerbed: error: ") for line in errors), errors
    assert "data-path=" in errors[2] and "data-path=" in errors[3]
    assert "--node-config" in errors[4] and "key=value" in errors[4] and "--node-config" in errors[5]
    assert flowerbed("deploy", "commands", "--certs", str(tmp_path / "certs"), "--host", "10.0.0.6") == 2
    assert "is not a name in" in capsys.readouterr().err  # devices would refuse the certificate
    assert flowerbed("deploy", "commands", "--certs", str(tmp_path / "certs"), "--host", "10.0.0.5") == 0
    printed = capsys.readouterr().out
    assert "--enable-supernode-auth" in printed and "--insecure" not in printed and "flwr supernode register" in printed
    assert flowerbed("deploy", "commands", "--insecure", "--nodes", "1") == 0
    assert "WARNING" in capsys.readouterr().out


def test_creamfl_uni_modal_devices_are_told_their_client_type(tmp_path):
    """The SuperNode commands of an exported CreamFL federation name each device's client type
    (image-text ids first, then image-only, then text-only); other runs' commands do not."""
    exported = {"algorithm.name": "creamfl", "clients.num": 4, "partition.image_clients": 1, "partition.text_clients": 1}
    (tmp_path / "run-config.toml").write_text(run_config_toml(exported))
    plan = commands.Plan(address="127.0.0.1:9092", nodes=4, certs=None, run_config=tmp_path / "run-config.toml")
    configs = [commands.supernode_command(plan, k)[-1] for k in range(4)]
    assert [c.split("client-type=")[1] if "client-type=" in c else None for c in configs] == ["image-text", "image-text", "image", "text"]
    (tmp_path / "run-config.toml").write_text(run_config_toml({"algorithm.name": "fedavg", "clients.num": 4}))
    assert all("client-type" not in commands.supernode_command(plan, k)[-1] for k in range(4))


def test_deploy_app_writes_the_flower_app_that_flwr_run_submits(tmp_path, capsys):
    """`flowerbed deploy app DIR`: a pyproject.toml that Flower accepts, naming flowerbed's apps and
    declaring every run-config key, and the package as the wheel lays it out (what the FAB carries to
    the devices); written again over its own app, never over another project's pyproject.toml."""
    import tomllib

    from flwr.common.config import validate_config

    app = tmp_path / "app"
    for _ in range(2):
        assert flowerbed("deploy", "app", str(app)) == 0
    pyproject = tomllib.loads((app / "pyproject.toml").read_text())
    assert validate_config(pyproject, check_module=False)[:2] == (True, [])
    declared = pyproject["tool"]["flwr"]["app"]
    assert declared["components"] == {"serverapp": "flowerbed.server_app:app", "clientapp": "flowerbed.client_app:app"}
    assert declared["config"] == config.app_config_defaults()
    package = app / "flowerbed"
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py", "client_app.py", "clients", "deploy", "server",
                                                         "server_app.py", "simulations", "strategies", "tasks"]
    assert (package / "simulations" / "conf" / "config.yaml").is_file() and not list(package.rglob("__pycache__"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "pyproject.toml").write_text('[project]\nname = "mine"\n')
    capsys.readouterr()
    assert flowerbed("deploy", "app", str(mine)) == 2
    assert "is not an app flowerbed wrote" in capsys.readouterr().err
    assert (mine / "pyproject.toml").read_text() == '[project]\nname = "mine"\n' and not (mine / "flowerbed").exists()
    # the recipe submits that folder: the one `deploy export` wrote beside the data, or one it writes
    assert flowerbed("deploy", "commands", "--insecure", "--nodes", "1") == 0
    assert "\nflowerbed deploy app app\nflwr run app flowerbed --stream" in capsys.readouterr().out
    assert flowerbed("deploy", "commands", "--insecure", "--nodes", "1", "--data", str(tmp_path / "data")) == 0
    data = tmp_path / "data"
    assert f"flwr run {data / 'app'} flowerbed --stream -c {data / 'run-config.toml'}" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["certs", "CERTS", "--days", "0"], "--days=0 is not valid: at least 1"),  # expired at once
    (["certs", "CERTS", "--days", "-5"], "--days=-5 is not valid: at least 1"),  # cryptography's traceback before
    (["commands", "--insecure", "--nodes", "2", "--port", "99999"], "--port=99999 is not valid: a TCP port from 1 to 65535"),
    (["commands", "--insecure"], "--nodes N is required with --insecure"),  # not "--nodes=0", which nobody typed
])
def test_deploy_values_out_of_range_are_one_line(args, message, tmp_path, capsys):
    args = [str(tmp_path / "certs") if a == "CERTS" else a for a in args]
    assert flowerbed("deploy", *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flowerbed: error: ") and message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def _sessions(leaders: list[int]) -> list[str]:
    """Live processes in the sessions we started (each leader's PID is its session id)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,stat=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    return [" ".join(r) for r in rows if len(r) >= 3 and int(r[1]) in leaders and not r[2].startswith("Z")]


@pytest.fixture
def processes():
    """Every process the test starts; all stopped by PID afterwards, and none may be left."""
    started: list[subprocess.Popen] = []
    yield started
    for process in reversed(started):
        stop(process)
    deadline = time.monotonic() + 10
    while (left := _sessions([p.pid for p in started])) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == []


def _log(path: Path, needle: str) -> str:
    """The first line of a log that holds `needle` ('' if none)."""
    return next((line.strip() for line in path.read_text(errors="replace").splitlines() if needle in line), "")


class Federation:
    """A SuperLink (TLS, node authentication) on a free loopback port, its nodes registered, and the
    `flwr` connection to it: each process started from the argv `flowerbed deploy commands` prints."""

    def __init__(self, tmp_path: Path, processes: list, flat: dict, nodes: int = 3) -> None:
        self.tmp, self.processes, self.logs = tmp_path, processes, tmp_path / "logs"
        self.certs = make_certificates(tmp_path / "certs", nodes=nodes)
        export_partitions(flat, tmp_path / "data")
        app = write_app(tmp_path / "data" / commands.APP_DIR, config.app_config_toml())  # what `deploy export` adds
        self.port = free_port()
        self.plan = commands.Plan(address=f"127.0.0.1:{self.port}", nodes=nodes, certs=self.certs, bind_host="127.0.0.1",
                                run_config=tmp_path / "data" / "run-config.toml", database=None, app=app)
        superlink = self.start(commands.superlink_command(self.plan), flower_env(tmp_path / "home-superlink"), "superlink")
        wait_healthy(self.port, superlink, self.logs / "superlink.log", ca_file=self.certs.ca_cert)
        self.cli_env = flower_env(tmp_path / "home-cli")
        (tmp_path / "home-cli").mkdir()
        connection = '[superlink]\ndefault = "flowerbed"\n\n' + commands.connection_toml(self.plan)
        (tmp_path / "home-cli" / "config.toml").write_text(connection)
        for command in commands.register_commands(self.plan):
            registered = subprocess.run(command, env=self.cli_env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert registered.returncode == 0, registered.stdout + registered.stderr

    def start(self, command: list[str], env: dict, name: str) -> subprocess.Popen:
        process = start(command, env, self.logs / f"{name}.log", cwd=self.tmp)
        self.processes.append(process)
        return process

    def supernode(self, k: int, name: str, key: Path | None = None, state: str | None = None, extra: str = "") -> subprocess.Popen:
        """Device k: its own FLWR_HOME, data file and state-dir; no checkout on its Python path;
        `extra`: more node config (`train-delay-s=8`)."""
        command = commands.supernode_command(self.plan, k, data_path=str(self.tmp / "data" / f"client-{k}.npz"),
                                           state_dir=str(self.tmp / "state" / (state or name)), key=key or self.certs.node_key(k),
                                           ca=self.certs.ca_cert, runtime_port=free_port())
        command[-1] += f" {extra}" if extra else ""
        assert "--insecure" not in command
        env = {**flower_env(self.tmp / f"home-{name}"), "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2"}
        env.pop("PYTHONPATH", None)  # the ClientApp's code comes in the FAB, as on a device
        return self.start(command, env, name)

    def submit(self, name: str = "flwr-run") -> subprocess.Popen:
        return self.start(commands.run_command(self.plan), self.cli_env, name)

    def statuses(self) -> list[str]:
        listed = subprocess.run(["flwr", "ls", "flowerbed", "--format", "json"], env=self.cli_env, cwd=self.tmp,
                                capture_output=True, text=True, timeout=60)
        return [r["status"] for r in json.loads(listed.stdout)["runs"]]


def test_deployment_on_loopback(tmp_path, processes):
    began = time.monotonic()
    run_dir = tmp_path / "deployed"
    flat = config.load([*OVERRIDES, f"output.dir={run_dir}"])
    fed = Federation(tmp_path, processes, flat)
    logs, port = fed.logs, fed.port
    nodes = [fed.supernode(k, f"node-{k}") for k in range(3)]
    write_node_key(tmp_path / "rogue.key", tmp_path / "rogue.pub")  # never registered
    rogue = fed.supernode(0, "rogue", key=tmp_path / "rogue.key")

    # the run; once round 1 is in metrics.jsonl, client VICTIM's SuperNode is killed (SIGTERM)
    run = fed.submit()
    metrics, killed_at = run_dir / "metrics.jsonl", None
    deadline = time.monotonic() + 240
    while run.poll() is None and time.monotonic() < deadline:
        if killed_at is None and metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            stop(nodes[VICTIM])
            killed_at = json.loads(metrics.read_text().splitlines()[-1])["round"]
        time.sleep(0.1)
    assert run.poll() == 0, (logs / "flwr-run.log").read_text()[-3000:]
    status = fed.statuses()
    deployed_s = time.monotonic() - began

    # the run finished with the two survivors; metrics and summary written; personal state on each node
    assert killed_at == 1 and status == ["finished:completed"], (killed_at, status)
    deployed = read_metrics(run_dir)
    assert [r["round"] for r in deployed] == [0, 1, 2, 3] and (run_dir / "summary.json").exists()
    assert [r["clients/trained"] for r in deployed[1:]] == [3, 2, 2]
    assert [r["clients/failures"] for r in deployed[1:]] == [0, 1, 1]
    for k, last in ((0, 3), (1, 3), (VICTIM, 1)):
        kept = [f"round-{r}.pt" for r in range(max(1, last - 2), last + 1)]  # the newest three (clients/state.py)
        assert sorted(p.name for p in (tmp_path / "state" / f"node-{k}" / str(k)).iterdir()) == kept

    # TLS in use, the unregistered node refused, the run surviving the kill: in the logs
    tls = _log(logs / "superlink.log", f"running on https://127.0.0.1:{port}")
    refused_link = _log(logs / "superlink.log", "No SuperNode found with the given public key")
    assert rogue.wait(60) != 0
    refused_node = _log(logs / "rogue.log", "Failed to activate SuperNode")
    survived = _log(logs / "flwr-run.log", "round 3/3")
    assert tls and refused_link and refused_node and survived

    # the same numbers as the sequential engine: before the kill as is, after it with client VICTIM gone
    assert flowerbed("run", *OVERRIDES, f"output.dir={tmp_path / 'seq'}") == 0
    from flowerbed.clients.app import app as client_app
    from flowerbed.server.app import app as server_app

    run_in_process(server_app, client_app, {**flat, "output.dir": str(tmp_path / "seq-killed")}, 3, KilledAfterRound1)
    sequential, sequential_killed = read_metrics(tmp_path / "seq"), read_metrics(tmp_path / "seq-killed")
    for a, b in zip(sequential[:2], deployed[:2]):
        assert close(a, b) == [], a["round"]
    assert len(sequential_killed) == len(deployed) == 4
    for a, b in zip(sequential_killed, deployed):
        assert close(a, b) == [], a["round"]

    final = ("global/acc", "global/loss", "personal/acc", "personal/acc_per_client", "train/loss", "clients/trained")
    print(f"\ndeployed run: {deployed_s:.1f}s from certificates to `flwr ls`")
    for line in (tls, refused_link[:160], refused_node, survived):
        print("log:", line)
    print(f"{'metric (round 3)':28} {'deployed':>24} {'sequential, client 2 gone':>26} {'sequential, all 3':>24}")
    for key in final:
        print(f"{key:28} {deployed[-1].get(key)!s:>24} {sequential_killed[-1].get(key)!s:>26} {sequential[-1].get(key)!s:>24}")


@pytest.mark.skipif(not os.environ.get("FLOWERBED_SLOW_TESTS"), reason="about 3.5 minutes on 2 cores: FLOWERBED_SLOW_TESTS=1")
def test_restarted_supernodes_resume_with_their_personal_state(tmp_path, processes):
    """Real SuperNodes stopped after a 2-round run and started again (fresh processes; with node
    authentication they keep their node ids); the run resumed to round 3 equals 3 rounds of the
    sequential engine: the personal heads came back from each node's state-dir."""
    run_dir = tmp_path / "deployed"
    flat = config.load([*OVERRIDES, "rounds=2", f"output.dir={run_dir}"])
    fed = Federation(tmp_path, processes, flat)
    first = [fed.supernode(k, f"node-{k}-a", state="devices") for k in range(3)]
    assert fed.submit("run-1").wait(300) == 0
    assert sorted(p.name for p in (tmp_path / "state" / "devices").rglob("*.pt")) == ["round-2.pt"] * 3
    for process in first:
        stop(process)
    for k in range(3):
        fed.supernode(k, f"node-{k}-b", state="devices")
    (tmp_path / "data" / "run-config.toml").write_text(run_config_toml({**flat, "resume": True, "rounds": 3}))
    assert fed.submit("run-2").wait(300) == 0
    assert fed.statuses() == ["finished:completed"] * 2
    assert flowerbed("run", *OVERRIDES, f"output.dir={tmp_path / 'seq'}") == 0
    deployed, sequential = read_metrics(run_dir), read_metrics(tmp_path / "seq")
    assert [r["round"] for r in deployed] == [0, 1, 2, 3]
    assert close(sequential[-1], deployed[-1]) == []


def test_fedbuff_on_loopback_steps_without_waiting_for_a_slow_supernode(tmp_path, processes):
    """FedBuff over a real SuperLink and three SuperNodes, node 0 slow on purpose (it waits
    `train-delay-s` before each training): the server steps on the two fast nodes' replies as they
    arrive, and node 0's update, when it comes, is applied stale."""
    run_dir = tmp_path / "fedbuff"
    flat = config.load(["algorithm=fedbuff", "algorithm.buffer_size=2", "model=mlp", "clients.num=3", "rounds=4",
                        "evaluate.every=4", "train.local_epochs=1", "clients.timeout=120", "seed=0", f"output.dir={run_dir}"])
    fed = Federation(tmp_path, processes, flat)
    fed.supernode(0, "node-0", extra="train-delay-s=8.0")
    for k in (1, 2):
        fed.supernode(k, f"node-{k}")
    run = fed.submit()
    assert run.wait(300) == 0, (fed.logs / "flwr-run.log").read_text()[-3000:]
    updates = read_metrics(run_dir)[1:]
    assert [m["round"] for m in updates] == [1, 2, 3, 4]
    assert all(m["clients/trained"] == 2 for m in updates)  # K = 2 replies a step
    assert "time/virtual_s" not in updates[0]  # real arrivals, no virtual clock
    assert max(m["async/staleness_max"] for m in updates) >= 1  # a reply that started before an update was applied
