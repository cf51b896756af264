"""`flowerbed`: run simulations, inspect partitions, fetch datasets.

    flowerbed run algorithm=fedprox partition.alpha=0.1 seed=1
    flowerbed partitions partition=pathological clients.num=20
    flowerbed fetch cifar10
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tasks.errors import ConfigError  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 160)  # tables stay whole in logs
IGNORED_ON_RESUME = ("resume", "overwrite", "rounds", "clients.timeout", "engine.", "train.device", "train.num_threads")


def _prepare_output(flat: dict) -> Path:
    """Make output.dir absolute and decide what to do with an earlier run there."""
    import yaml

    out = Path(str(flat["output.dir"])).expanduser().resolve()
    flat["output.dir"] = str(out)
    earlier = out / "config.yaml"
    if earlier.exists():
        if flat["resume"]:
            saved = yaml.safe_load(earlier.read_text())
            for key, value in flat.items():
                if not key.startswith(IGNORED_ON_RESUME) and saved.get(key) != value:
                    raise ConfigError(f"resume=true but {key}={value!r} differs from the run in {out} ({saved.get(key)!r})")
        elif flat["overwrite"]:
            shutil.rmtree(out)
        else:
            raise ConfigError(f"output.dir={str(out)!r} holds an earlier run: resume=true continues it, overwrite=true replaces it")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(flat, sort_keys=True))
    return out


def cmd_run(overrides: list[str]) -> int:
    from simulations import config

    flat = config.load(overrides)
    out = _prepare_output(flat)
    console.print(f"[bold]flowerbed[/] {flat['algorithm.name']} on {flat['dataset.name']} "
                  f"({flat['partition.name']}, {flat['clients.num']} clients, {flat['rounds']} rounds, engine {flat['engine.name']})")
    try:
        if flat["engine.name"] == "flower":
            from simulations.engines.flower import run_on_flower

            run_on_flower(flat)
        else:
            from clients.app import app as client_app
            from server.app import app as server_app
            from simulations.engines.inprocess import run_in_process

            logging.getLogger("flwr").setLevel(logging.WARNING)  # the progress bar says it all
            run_in_process(server_app, client_app, flat, int(flat["clients.num"]))
    except KeyboardInterrupt:
        console.print(f"\n[yellow]interrupted[/]: finished rounds are saved; continue with "
                      f"`flowerbed run {' '.join(overrides)} resume=true`")
        return 130
    _print_summary(out)
    return 0


def _print_summary(out: Path) -> None:
    import json

    summary = json.loads((out / "summary.json").read_text())
    table = Table(title=f"results in {out}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key.startswith(("final/global/acc", "final/personal/acc", "best/", "rounds", "train_time")):
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def cmd_partitions(overrides: list[str], out: str | None) -> int:
    from simulations import config
    from simulations.plots import partition_heatmap
    from tasks.partitions import build_federation

    flat = config.load(overrides)
    fed = build_federation(flat)
    counts = fed.label_counts()
    table = Table(title=f"{flat['dataset.name']} / {flat['partition.name']} / seed {flat['seed']}: training samples per class")
    table.add_column("client", justify="right")
    for c in range(counts.shape[1]):
        table.add_column(str(c), justify="right")
    for name in ("labeled", "unlabeled", "test"):
        table.add_column(name, justify="right", style="cyan")
    for k, (row, split) in enumerate(zip(counts, fed.clients)):
        table.add_row(str(k), *map(str, row), str(len(split.labeled)), str(len(split.unlabeled)), str(len(split.test)))
    console.print(table)
    if fed.shot_groups:
        console.print("many/medium/few-shot classes: " + ", ".join(f"{k} {v.tolist()}" for k, v in fed.shot_groups.items()))
    path = Path(out or f"runs/partitions-{flat['dataset.name']}-{flat['partition.name']}-seed{flat['seed']}.png")
    title = f"{flat['dataset.name']}, {flat['partition.name']}, {flat['clients.num']} clients, seed {flat['seed']}"
    console.print(f"heat map: {partition_heatmap(counts, title, path)}")
    return 0


def cmd_fetch(name: str) -> int:
    from tasks.datasets import HUB_DATASETS, load_hub

    if name not in HUB_DATASETS:
        raise ConfigError.invalid("dataset", name, "one of " + ", ".join(HUB_DATASETS))
    data = load_hub(name, {}, allow_download=True)
    console.print(f"{name}: {len(data.y_train)} train / {len(data.y_test)} test images cached")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowerbed", description="Federated learning simulations on Flower.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one simulation; arguments are Hydra overrides (key=value, group=option)")
    run.add_argument("overrides", nargs="*")
    parts = sub.add_parser("partitions", help="print and plot the per-client class counts of a partition")
    parts.add_argument("overrides", nargs="*")
    parts.add_argument("--out", help="PNG path for the heat map")
    fetch = sub.add_parser("fetch", help="download a Hugging Face dataset into the local cache (needs internet)")
    fetch.add_argument("name")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args.overrides)
        if args.command == "partitions":
            return cmd_partitions(args.overrides, args.out)
        return cmd_fetch(args.name)
    except ConfigError as err:
        print(f"flowerbed: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
