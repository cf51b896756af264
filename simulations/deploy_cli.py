"""`flowerbed deploy {certs,export,app,commands,check}`: the command line of the `deploy` package.

These only prepare and print; see deploy/ for what each step writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flowerbed.deploy.app import write_app
from flowerbed.deploy.certs import make_certificates
from flowerbed.deploy.commands import APP_DIR, DEVICE_DIR, describe, plan_from_args
from flowerbed.simulations.args import nonempty_path


def node_config_entries(text: str) -> dict:
    """`--node-config` parsed as flower-supernode parses it. Flower drops what is not `key=value`
    without a word (`garbage` gives an empty node config); a check should say so."""
    from flwr.common.config import parse_config_args

    if not text.strip():
        return {}
    try:
        entries = parse_config_args([text])
    except Exception as err:  # Flower raises click's exception with its own explanation
        raise argparse.ArgumentTypeError(f"{text!r}: {getattr(err, 'message', err)}") from None
    if not entries:
        raise argparse.ArgumentTypeError(f"{text!r} holds no key=value entry, e.g. 'num-classes=10'")
    return entries


def add_parser(sub) -> None:
    """Register `flowerbed deploy {certs,export,app,commands,check}` on the CLI's subparsers."""
    deploy = sub.add_parser("deploy", help="prepare a real deployment: certificates, per-node data files, the commands")
    steps = deploy.add_subparsers(dest="step", required=True)
    certs = steps.add_parser("certs", help="a CA, the SuperLink's TLS certificate and one EC key pair per SuperNode")
    certs.add_argument("out", type=nonempty_path)
    certs.add_argument("--nodes", type=int, default=3)
    certs.add_argument("--host", action="append", default=[], help="a name or IP the devices use for the SuperLink (repeatable)")
    certs.add_argument("--days", type=int, default=365)
    certs.add_argument("--force", action="store_true", help="replace the keys already in OUT")
    export = steps.add_parser("export", help="each client's partition of a run config as OUT/client-<k>.npz "
                              f"(+ run-config.toml and the Flower app in OUT/{APP_DIR})")
    export.add_argument("out", type=nonempty_path)
    export.add_argument("overrides", nargs="*", help="the same Hydra overrides as `flowerbed run`")
    app = steps.add_parser("app", help="the Flower app `flwr run` submits (flowerbed's ServerApp and ClientApp) as folder OUT")
    app.add_argument("out", type=nonempty_path)
    commands = steps.add_parser("commands", help="print the flower-superlink, register, flower-supernode and flwr run commands")
    commands.add_argument("--host", default="127.0.0.1", help="the SuperLink's address as the devices reach it")
    commands.add_argument("--port", type=int, default=9093)
    commands.add_argument("--certs", type=nonempty_path, help="folder made by `deploy certs`")
    commands.add_argument("--data", type=nonempty_path, help="folder made by `deploy export` (its run-config.toml is passed to flwr run)")
    commands.add_argument("--nodes", type=int, help="default: one per node key in --certs")
    commands.add_argument("--device-dir", default=DEVICE_DIR, help="folder on each device for its key, CA and data")
    commands.add_argument("--insecure", action="store_true", help="no TLS, no node authentication (trusted networks only)")
    check = steps.add_parser("check", help="read a device's data-path as its ClientApp would, and say what is in it")
    check.add_argument("data_path", type=nonempty_path)
    check.add_argument("--node-config", type=node_config_entries, default={}, help="the device's other node-config entries, e.g. 'num-classes=10'")
    check.add_argument("overrides", nargs="*", help="Hydra overrides naming the run's dataset (for its class count)")


def run(args, console) -> int:
    from flowerbed.simulations import config

    if args.step == "certs":
        certs = make_certificates(Path(args.out), args.nodes, args.host, args.days, args.force)
        console.print(f"CA, SuperLink certificate and {args.nodes} node key pairs in {certs.folder}")
        return 0
    if args.step == "export":
        from flowerbed.deploy.export import export_partitions  # torch: only this step needs it (`--help` stays fast)

        flat = config.load(args.overrides)
        files = export_partitions(flat, Path(args.out))
        write_app(files[0].parent / APP_DIR, config.app_config_toml())
        console.print(f"{len(files)} client files, run-config.toml and the Flower app {APP_DIR}/ in {files[0].parent}")
        return 0
    if args.step == "app":
        folder = write_app(Path(args.out).expanduser().resolve(), config.app_config_toml())
        console.print(f"the Flower app in {folder}: `flwr run {args.out} <connection>` submits it")
        return 0
    if args.step == "commands":
        plan = plan_from_args(args.host, args.port, args.certs, args.nodes, args.insecure, args.data, args.device_dir)
        print(describe(plan, Path(args.data).expanduser().resolve() if args.data else None))
        return 0
    from flowerbed.tasks.local_data import load_local

    flat = config.load(args.overrides, load_data=False)
    a = load_local(args.data_path, flat, args.node_config)
    console.print(f"{args.data_path}: {len(a.y_labeled)} labeled, {len(a.y_unlabeled)} unlabeled, {len(a.y_test)} test samples "
                  f"of shape {tuple(a.x_labeled.shape[1:])}, {a.num_classes} classes")
    return 0
