"""The commands of a deployment: what runs on the laptop, what each device runs, in order.

Deployment is not an engine: the same ServerApp and ClientApp run under Flower's own
`flower-superlink`, `flower-supernode` and `flwr run`. A `Plan` says where everything is; the
builders turn it into argv lists (started as they are by the loopback test) and `describe` prints
the whole recipe for `flowerbed deploy commands`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from flowerbed.deploy.certs import Certificates, certificate_names
from flowerbed.tasks.errors import ConfigError

CONNECTION = "flowerbed"  # the connection name in $FLWR_HOME/config.toml
DEVICE_DIR = "~/flowerbed"  # where the guide copies a device's files
APP_DIR = "app"  # where `flowerbed deploy export` (inside its folder) and `deploy app` write the Flower app


@dataclass(frozen=True)
class Plan:
    """Where everything is; the command builders turn it into argv lists."""

    address: str  # host:port the SuperNodes and `flwr` dial
    nodes: int
    certs: Certificates | None  # None: insecure (no TLS, no node authentication)
    bind_host: str = "0.0.0.0"  # the SuperLink listens here
    run_config: Path | None = None  # `export`'s run-config.toml
    device_dir: str = DEVICE_DIR  # folder on each device holding ca.crt, node-<k>.key, client-<k>.npz
    database: str | None = "superlink.db"  # registered nodes survive a SuperLink restart
    connection: str = CONNECTION
    app: Path | None = None  # the Flower app folder `flwr run` submits (deploy/app.py); None: the recipe writes ./app

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def secure(self) -> bool:
        return self.certs is not None


def superlink_command(plan: Plan) -> list[str]:
    command = ["flower-superlink", "--host", plan.bind_host, "--port", str(plan.port)]
    if plan.certs is None:
        command += ["--insecure"]
    else:
        command += ["--ssl-ca-certfile", str(plan.certs.ca_cert), "--ssl-certfile", str(plan.certs.superlink_cert),
                    "--ssl-keyfile", str(plan.certs.superlink_key), "--enable-supernode-auth"]
    if plan.database:
        command += ["--database", plan.database]
    # the devices and the laptop already have the app's dependencies; no `uv sync` at run time
    return command + ["--disable-runtime-dependency-installation"]


def register_commands(plan: Plan) -> list[list[str]]:
    """`flwr supernode register` for each node's public key (none in insecure mode: nothing to check)."""
    if plan.certs is None:
        return []
    return [["flwr", "supernode", "register", str(plan.certs.node_pub(k)), plan.connection, "--name", f"node-{k}"]
            for k in range(plan.nodes)]


def node_config(k: int, data_path: str, state_dir: str, client_type: str | None = None) -> str:
    """`--node-config` of device k: its stable id, its data, where its personal state lives, and
    (CreamFL's image-only and text-only clients) its client type."""
    config = f'client-id={k} data-path="{data_path}" state-dir="{state_dir}"'
    return f"{config} client-type={client_type}" if client_type else config


def device_client_type(plan: Plan, k: int) -> str | None:
    """Device k's CreamFL client type where `export`'s run config has uni-modal clients, else None."""
    if plan.run_config is None or not plan.run_config.is_file():
        return None
    import tomllib

    run_config = tomllib.loads(plan.run_config.read_text())
    if not any(int(run_config.get(f"partition.{kind}_clients", 0)) for kind in ("image", "text")):
        return None
    from flowerbed.tasks.client_types import client_type

    return client_type(run_config, k)


def supernode_command(plan: Plan, k: int, data_path: str | None = None, state_dir: str | None = None,
                      key: Path | str | None = None, ca: Path | str | None = None, runtime_port: int | None = None) -> list[str]:
    """The command device k runs; paths default to the device's copies under `device_dir`."""
    device = plan.device_dir.rstrip("/")
    command = ["flower-supernode", "--superlink", plan.address]
    if plan.certs is None:
        command += ["--insecure"]
    else:
        command += ["--root-certificates", str(ca or f"{device}/ca.crt"),
                    "--auth-supernode-private-key", str(key or f"{device}/node-{k}.key")]
    if runtime_port is not None:  # several SuperNodes on one machine each need their own
        command += ["--port", str(runtime_port)]
    config = node_config(k, data_path or f"{device}/client-{k}.npz", state_dir or f"{device}/state", device_client_type(plan, k))
    return command + ["--node-config", config]


def connection_toml(plan: Plan) -> str:
    """The `[superlink.<name>]` section `flwr` needs in `$FLWR_HOME/config.toml`."""
    lines = [f"[superlink.{plan.connection}]", f'address = "{plan.address}"']
    lines += [f'root-certificates = "{plan.certs.ca_cert}"'] if plan.certs else ["insecure = true"]
    return "\n".join(lines) + "\n"


def run_command(plan: Plan) -> list[str]:
    command = ["flwr", "run", str(plan.app or APP_DIR), plan.connection, "--stream"]
    return command + (["-c", str(plan.run_config)] if plan.run_config else [])


def describe(plan: Plan, data_dir: Path | None) -> str:
    """The whole recipe as text: what to run where, in order."""
    q = shell_line
    device = plan.device_dir.rstrip("/")
    out = []
    if not plan.secure:
        out += ["# WARNING: --insecure: no TLS and no node authentication; use only on a network you trust", ""]
    out += ["# 1. laptop: start the SuperLink (reachable on the address the devices dial)", q(superlink_command(plan)), ""]
    out += ["# 2. laptop: tell `flwr` where the SuperLink is: append to $FLWR_HOME/config.toml (default ~/.flwr/config.toml)",
            connection_toml(plan)]
    if plan.secure:
        out += ["# 3. laptop: register each device's public key (a node whose key is not registered is refused)",
                *(q(c) for c in register_commands(plan)), ""]
    out += [f"# 4. device k: copy its files into {device}/, then start its SuperNode"]
    for k in range(plan.nodes):
        files = [str(plan.certs.ca_cert), str(plan.certs.node_key(k))] if plan.certs else []
        data = str(data_dir / f"client-{k}.npz") if data_dir else f"<its data: .npz or image folder> as {device}/client-{k}.npz"
        files.append(data)
        out += [f"#   device {k}: scp {' '.join(files)} <device-{k}>:{device}/", q(supernode_command(plan, k))]
    out += ["", "# 5. laptop: start the run of the app (flowerbed's ServerApp and ClientApp) and follow its log"]
    if plan.app is None:
        out += [q(["flowerbed", "deploy", "app", APP_DIR])]
    out += [q(run_command(plan))]
    return "\n".join(out)


def shell_line(command: list[str]) -> str:
    """`command` as one shell line; `~/...` stays unquoted so that the device's shell expands it."""
    return " ".join(arg if re.fullmatch(r"~/[\w./-]*", arg) else shlex.quote(arg) for arg in command)


def plan_from_args(host: str, port: int, certs_dir: str | None, nodes: int | None, insecure: bool,
                   data_dir: str | None, device_dir: str) -> Plan:
    certs = None
    if not insecure:
        if not certs_dir:
            raise ConfigError("--certs DIR is required (made by `flowerbed deploy certs DIR`); "
                              "--insecure turns TLS and node authentication off")
        certs = Certificates(Path(certs_dir).expanduser().resolve())
        if not certs.ca_cert.is_file() or not certs.superlink_cert.is_file():
            raise ConfigError.invalid("--certs", certs_dir, "a folder made by `flowerbed deploy certs` (ca.crt, superlink.crt)")
        names = certificate_names(certs.superlink_cert)
        if host not in names:  # the devices would refuse the SuperLink's certificate
            raise ConfigError(f"--host {host} is not a name in {certs.superlink_cert} ({', '.join(names)}); "
                              f"make new certificates with `flowerbed deploy certs {certs_dir} --force --host {host}`")
    if not 1 <= port <= 65535:
        raise ConfigError.invalid("--port", port, "a TCP port from 1 to 65535")
    if nodes is None and certs is None:  # nothing to count the nodes from
        raise ConfigError("--nodes N is required with --insecure (without --certs there are no node keys to count)")
    count = nodes if nodes is not None else certs.num_nodes()
    if count < 1:
        raise ConfigError.invalid("--nodes", count, "at least 1")
    if certs and count > certs.num_nodes():
        raise ConfigError.invalid("--nodes", count, f"at most the {certs.num_nodes()} node keys in {certs.folder}")
    data = Path(data_dir).expanduser().resolve() if data_dir else None
    return Plan(address=f"{host}:{port}", nodes=count, certs=certs, run_config=data / "run-config.toml" if data else None,
                device_dir=device_dir, app=data / APP_DIR if data else None)


