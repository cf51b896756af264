"""`flowerbed deploy`: what it takes to run the app on a real SuperLink and real SuperNodes.

Deployment is not an engine: the same ServerApp and ClientApp run under Flower's own
`flower-superlink`, `flower-supernode` and `flwr run`. These helpers only prepare and print:

- `certs OUT`: a private CA, the SuperLink's TLS certificate (names: localhost, 127.0.0.1, ::1 and
  every `--host`), and one EC key pair per SuperNode in the OpenSSH format Flower's node
  authentication reads (`flwr supernode register` takes the `.pub`, the device keeps the key);
- `export OUT [overrides]`: each client's partition of a run config as `client-<k>.npz`, the form a
  device's `data-path` names, plus `run-config.toml` for `flwr run -c`, so a demo federation trains
  on exactly the arrays the `sequential` engine uses for the same config;
- `commands`: the exact commands for the laptop, for registering nodes and for each device.

TLS and node authentication are on unless `--insecure` is given: a federation's updates are its
users' data in disguise, and an unauthenticated SuperLink accepts any node that can reach it.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import ConfigError

CONNECTION = "flowerbed"  # the connection name in $FLWR_HOME/config.toml
DEVICE_DIR = "~/flowerbed"  # where the guide copies a device's files


# -- certificates and node keys ------------------------------------------------------------------
@dataclass(frozen=True)
class Certificates:
    """The files `certs` writes into one folder."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def superlink_cert(self) -> Path:
        return self.folder / "superlink.crt"

    @property
    def superlink_key(self) -> Path:
        return self.folder / "superlink.key"

    def node_key(self, k: int) -> Path:
        return self.folder / f"node-{k}.key"

    def node_pub(self, k: int) -> Path:
        return self.folder / f"node-{k}.pub"

    def num_nodes(self) -> int:
        return len(list(self.folder.glob("node-*.pub")))


def make_certificates(out: Path, nodes: int, hosts: Sequence[str] = (), days: int = 365, force: bool = False) -> Certificates:
    """Write a CA, a SuperLink certificate signed by it, and `nodes` SuperNode key pairs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    certs = Certificates(Path(out).expanduser().resolve())
    if nodes < 1:
        raise ConfigError.invalid("--nodes", nodes, "at least 1")
    if certs.ca_key.exists() and not force:
        raise ConfigError(f"{certs.folder} already holds a CA (ca.key): keep it, or pass --force to replace every key in it")
    certs.folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flowerbed CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    link_key = ec.generate_private_key(ec.SECP384R1())
    link_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (list(hosts) or ["localhost"])[0])]))
        .issuer_name(ca_name).public_key(link_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(subject_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    _write(certs.ca_key, ca_key.private_bytes(pem, pkcs8, serialization.NoEncryption()), secret=True)
    _write(certs.ca_cert, ca_cert.public_bytes(pem))
    _write(certs.superlink_key, link_key.private_bytes(pem, pkcs8, serialization.NoEncryption()), secret=True)
    _write(certs.superlink_cert, link_cert.public_bytes(pem))
    for old in list(certs.folder.glob("node-*.key")) + list(certs.folder.glob("node-*.pub")):
        old.unlink()  # --force: keys of nodes beyond the new count must not look valid
    for k in range(nodes):
        write_node_key(certs.node_key(k), certs.node_pub(k))
    return certs


def write_node_key(key_path: Path, pub_path: Path) -> None:
    """One SuperNode's P-384 key pair, both in OpenSSH format (what Flower loads on each side)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    _write(key_path, private, secret=True)
    _write(pub_path, key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")


def subject_names(hosts: Sequence[str]) -> list:
    """The SuperLink certificate's names: loopback always, then each host (IP address or DNS name)."""
    from cryptography import x509

    names: list = [x509.DNSName("localhost"), *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1"))]
    for host in hosts:
        try:
            entry = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host)
        if entry not in names:
            names.append(entry)
    return names


def certificate_names(path: Path) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in names.get_values_for_type(x509.DNSName) + names.get_values_for_type(x509.IPAddress)]


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    path.write_bytes(data)
    path.chmod(0o600 if secret else 0o644)


# -- per-node data files ---------------------------------------------------------------------------
def export_partitions(run_config: dict, out: Path) -> list[Path]:
    """Write each client's partition to `OUT/client-<k>.npz` and the run config to `OUT/run-config.toml`."""
    from simulations.engines.flower import overrides_toml
    from tasks.local_data import partition_arrays, save_npz

    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    flat = dict(run_config)
    flat["output.dir"] = str(Path(str(flat["output.dir"])).expanduser().resolve())  # the ServerApp runs elsewhere
    files = []
    for k in range(int(flat["clients.num"])):
        path = out / f"client-{k}.npz"
        save_npz(path, partition_arrays(flat, k))
        files.append(path)
    (out / "run-config.toml").write_text(overrides_toml(flat))
    return files


# -- the commands ------------------------------------------------------------------------------------
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


def node_config(k: int, data_path: str, state_dir: str) -> str:
    """`--node-config` of device k: its stable id, its data, and where its personal state lives."""
    return f'client-id={k} data-path="{data_path}" state-dir="{state_dir}"'


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
    config = node_config(k, data_path or f"{device}/client-{k}.npz", state_dir or f"{device}/state")
    return command + ["--node-config", config]


def connection_toml(plan: Plan) -> str:
    """The `[superlink.<name>]` section `flwr` needs in `$FLWR_HOME/config.toml`."""
    lines = [f"[superlink.{plan.connection}]", f'address = "{plan.address}"']
    lines += [f'root-certificates = "{plan.certs.ca_cert}"'] if plan.certs else ["insecure = true"]
    return "\n".join(lines) + "\n"


def run_command(plan: Plan) -> list[str]:
    command = ["flwr", "run", ".", plan.connection, "--stream"]
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
    out += ["", "# 5. laptop, in the flowerbed checkout: start the run and follow its log", q(run_command(plan))]
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
    count = nodes if nodes is not None else (certs.num_nodes() if certs else 0)
    if count < 1:
        raise ConfigError.invalid("--nodes", count, "at least 1")
    if certs and count > certs.num_nodes():
        raise ConfigError.invalid("--nodes", count, f"at most the {certs.num_nodes()} node keys in {certs.folder}")
    run_config = Path(data_dir).expanduser().resolve() / "run-config.toml" if data_dir else None
    return Plan(address=f"{host}:{port}", nodes=count, certs=certs, run_config=run_config, device_dir=device_dir)


# -- `flowerbed deploy ...` ----------------------------------------------------------------------------
def add_parser(sub) -> None:
    """Register `flowerbed deploy {certs,export,commands,check}` on the CLI's subparsers."""
    deploy = sub.add_parser("deploy", help="prepare a real deployment: certificates, per-node data files, the commands")
    steps = deploy.add_subparsers(dest="step", required=True)
    certs = steps.add_parser("certs", help="a CA, the SuperLink's TLS certificate and one EC key pair per SuperNode")
    certs.add_argument("out")
    certs.add_argument("--nodes", type=int, default=3)
    certs.add_argument("--host", action="append", default=[], help="a name or IP the devices use for the SuperLink (repeatable)")
    certs.add_argument("--days", type=int, default=365)
    certs.add_argument("--force", action="store_true", help="replace the keys already in OUT")
    export = steps.add_parser("export", help="each client's partition of a run config as OUT/client-<k>.npz (+ run-config.toml)")
    export.add_argument("out")
    export.add_argument("overrides", nargs="*", help="the same Hydra overrides as `flowerbed run`")
    commands = steps.add_parser("commands", help="print the flower-superlink, register, flower-supernode and flwr run commands")
    commands.add_argument("--host", default="127.0.0.1", help="the SuperLink's address as the devices reach it")
    commands.add_argument("--port", type=int, default=9093)
    commands.add_argument("--certs", help="folder made by `deploy certs`")
    commands.add_argument("--data", help="folder made by `deploy export` (its run-config.toml is passed to flwr run)")
    commands.add_argument("--nodes", type=int, help="default: one per node key in --certs")
    commands.add_argument("--device-dir", default=DEVICE_DIR, help="folder on each device for its key, CA and data")
    commands.add_argument("--insecure", action="store_true", help="no TLS, no node authentication (trusted networks only)")
    check = steps.add_parser("check", help="read a device's data-path as its ClientApp would, and say what is in it")
    check.add_argument("data_path")
    check.add_argument("--node-config", default="", help="the device's other node-config entries, e.g. 'num-classes=10'")
    check.add_argument("overrides", nargs="*", help="Hydra overrides naming the run's dataset (for its class count)")


def run(args, console) -> int:
    from simulations import config

    if args.step == "certs":
        certs = make_certificates(Path(args.out), args.nodes, args.host, args.days, args.force)
        console.print(f"CA, SuperLink certificate and {args.nodes} node key pairs in {certs.folder}")
        return 0
    if args.step == "export":
        flat = config.load(args.overrides)
        files = export_partitions(flat, Path(args.out))
        console.print(f"{len(files)} client files and run-config.toml in {files[0].parent}")
        return 0
    if args.step == "commands":
        plan = plan_from_args(args.host, args.port, args.certs, args.nodes, args.insecure, args.data, args.device_dir)
        print(describe(plan, Path(args.data).expanduser().resolve() if args.data else None))
        return 0
    from tasks.local_data import load_local

    from flwr.common.config import parse_config_args

    flat = config.load(args.overrides, load_data=False)
    a = load_local(args.data_path, flat, parse_config_args([args.node_config]) if args.node_config else {})
    console.print(f"{args.data_path}: {len(a.y_labeled)} labeled, {len(a.y_unlabeled)} unlabeled, {len(a.y_test)} test samples "
                  f"of shape {tuple(a.x_labeled.shape[1:])}, {a.num_classes} classes")
    return 0
