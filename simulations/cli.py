"""`flowerbed`: run simulations, inspect partitions, fetch datasets.

    flowerbed run algorithm=fedprox partition.alpha=0.1 seed=1
    flowerbed partitions partition=pathological clients.num=20
    flowerbed fetch cifar10
    flowerbed deploy certs certs/ --host 192.168.1.20
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.table import Table

import flowerbed
from flowerbed.simulations import config, runner
from flowerbed.simulations.args import Parser, nonempty_path
from flowerbed.simulations.runner import console
from flowerbed.tasks.errors import ConfigError


def cmd_partitions(overrides: list[str], out: str | None) -> int:
    from flowerbed.simulations.plots import partition_heatmap
    from flowerbed.tasks.partitions import build_federation

    flat = config.load(overrides)
    path = Path(out or f"runs/partitions-{flat['dataset.name']}-{flat['partition.name']}-seed{flat['seed']}.png")
    check_figure_path(path, "--out")
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
    title = f"{flat['dataset.name']}, {flat['partition.name']}, {flat['clients.num']} clients, seed {flat['seed']}"
    console.print(f"heat map: {partition_heatmap(counts, title, path, fed.data.class_names)}")
    return 0


def cmd_fetch(name: str) -> int:
    from flowerbed.tasks.datasets import HUB_DATASETS, load_hub

    if name not in HUB_DATASETS:
        raise ConfigError.invalid("dataset", name, "one of " + ", ".join(HUB_DATASETS)
                                  + " (digits, mnist5k, synthetic and fake-images ship with flowerbed: nothing to fetch)", HUB_DATASETS)
    data = load_hub(name, {}, allow_download=True)
    console.print(f"{name}: {len(data.y_train)} train / {len(data.y_test)} test images cached")
    return 0


def cmd_pretrain(overrides: list[str], epochs: int, out: str | None, augment: bool) -> int:
    from flowerbed.simulations.pretrain import pretrain

    flat = config.load(overrides, load_data=False)
    stats = pretrain(flat, epochs=epochs, out=out, augment=augment, console=console)
    console.print(f"{stats['model']} pretrained on {stats['samples']} held-out {stats['dataset']} samples "
                  f"(partition.pretrain_fraction={stats['pretrain_fraction']}), {stats['epochs']} epochs"
                  f"{' with crop+flip' if augment else ''} in {stats['seconds']:.0f} s: "
                  f"test acc {stats['test_acc']:.4f}; saved {stats['path']} (a run uses it with {stats['loaded_by']}=...)")
    return 0


def cmd_bench(workloads: list[str], engines: str | None, rounds: int | None, repeats: int, out: str, overrides: list[str],
              profile: bool = False) -> int:
    from flowerbed.simulations.bench import bench

    bench(workloads, engines.split(",") if engines else None, rounds, repeats, overrides, Path(out), console, profile)
    return 0


def cmd_sweep(args: list[str]) -> int:
    from flowerbed.simulations.sweep import expand, run_sweep, split_args

    overrides, sweep_dir, jobs = split_args(args)
    status = run_sweep(expand(overrides, sweep_dir), sweep_dir, jobs, console)
    console.print(f"report: flowerbed report {sweep_dir}")
    return 1 if "failed" in status.values() else 0


def cmd_report(paths: list[str], out: str | None, one_panel: bool = False) -> int:
    from flowerbed.server.results import RunDirectory
    from flowerbed.simulations.report import one_panel_per_setting, write_report

    folder = Path(out or Path(paths[0]) / "report")
    RunDirectory(folder).check_writable("--out")
    panel_of = one_panel_per_setting if one_panel else None
    console.print(f"report: {write_report(paths, folder, panel_of=panel_of)}")
    return 0


def check_figure_path(figure: Path, key: str) -> None:
    """Before any work: a format matplotlib writes, in a folder that can be written."""
    from flowerbed.server.results import RunDirectory

    formats = ("png", "pdf", "svg", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp")
    if figure.suffix.lstrip(".").lower() not in formats:
        raise ConfigError.invalid(key, str(figure), "an image file ending in ." + ", .".join(formats))
    RunDirectory(figure.parent).check_writable(key)


def parse(parser: Parser, argv: list[str] | None):
    """Parsed arguments; overrides may follow options (`deploy check DIR --node-config X dataset=cifar10`),
    which argparse alone reads as unrecognized once the positionals before the option are taken."""
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and not any(e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra and hasattr(args, "overrides") and extra[0].startswith("--"):  # `run --rounds 3`: a setting written as an option
        parser.error(f"{extra[0]} is not an option of flowerbed {args.command}; settings are written key=value "
                     f"(e.g. {extra[0].lstrip('-')}=...)")
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="flowerbed", description="Federated learning simulations on Flower.")
    parser.add_argument("--version", action="version", version=f"flowerbed {flowerbed.__version__}")  # the package metadata's
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one simulation; arguments are Hydra overrides (key=value, group=option)")
    run.add_argument("overrides", nargs="*", help=f"group=option ({', '.join(config.GROUPS)}) or key=value "
                     "(simulations/conf/config.yaml lists every key)")
    parts = sub.add_parser("partitions", help="print and plot the per-client class counts of a partition")
    parts.add_argument("overrides", nargs="*")
    parts.add_argument("--out", type=nonempty_path, help="PNG path for the heat map (or .pdf, .svg, ...)")
    fetch = sub.add_parser("fetch", help="download a Hugging Face dataset into the local cache (needs internet)")
    fetch.add_argument("name")
    pre = sub.add_parser("pretrain", help="train model.name centrally on held-out samples "
                                          "(pFedPG's tiny ViT; a starting point for model.init)")
    pre.add_argument("overrides", nargs="*")
    pre.add_argument("--epochs", type=int, default=40)
    pre.add_argument("--augment", action="store_true", help="random padded crops and horizontal flips (natural images, e.g. CIFAR)")
    pre.add_argument("--out", type=nonempty_path, help="checkpoint path (default: model.weights or ~/.cache/flowerbed/tiny-vit-<dataset>.pt "
                     "for the tiny ViT, ~/.cache/flowerbed/pretrained-<model>-<dataset>.pt otherwise)")
    bench = sub.add_parser("bench", help="time the engines (and pfl-research, if installed) on workloads B1/B2/B3")
    bench.add_argument("workloads", nargs="*", default=["b2"],
                       help="b1 (pfl-research CIFAR-10 shape, needs a GPU), b2, calls (framework ms per client call), b3 (scale)")
    bench.add_argument("--engines", help="comma-separated subset, e.g. sequential,batched")
    bench.add_argument("--rounds", type=int, help="fewer rounds than the workload's (smoke runs)")
    bench.add_argument("--repeats", type=int, default=1, help="runs per engine; the table shows medians")
    bench.add_argument("--out", type=nonempty_path, default="/tmp/flowerbed-bench", help="scratch folder for the runs and bench.json")
    bench.add_argument("--set", dest="overrides", action="append", default=[], help="extra override for every run, e.g. train.device=cpu")
    bench.add_argument("--profile", action="store_true", help="one more run per row under cProfile: ms per round in each part")
    sweep = sub.add_parser("sweep", help="many runs: comma lists expand (algorithm=fedavg,fedprox seed=0,1,2); sweep.dir=DIR jobs=N")
    sweep.add_argument("overrides", nargs="*")
    report = sub.add_parser("report", help="markdown table and PNG figures from run or sweep directories")
    report.add_argument("paths", nargs="+", type=nonempty_path)
    report.add_argument("--out", type=nonempty_path, help="folder for report.md and its figures (default: FIRST_PATH/report)")
    report.add_argument("--one-panel", action="store_true",
                        help="one figure panel per data setting, every run's line in it (default: a panel per swept value)")
    from flowerbed.simulations import deploy_cli

    deploy_cli.add_parser(sub)
    args = parse(parser, argv)
    try:
        if args.command == "run":
            return runner.run(args.overrides)
        if args.command == "sweep":
            return cmd_sweep(args.overrides)
        if args.command == "report":
            return cmd_report(args.paths, args.out, args.one_panel)
        if args.command == "bench":
            return cmd_bench(args.workloads, args.engines, args.rounds, args.repeats, args.out, args.overrides, args.profile)
        if args.command == "partitions":
            return cmd_partitions(args.overrides, args.out)
        if args.command == "deploy":
            return deploy_cli.run(args, console)
        if args.command == "pretrain":
            return cmd_pretrain(args.overrides, args.epochs, args.out, args.augment)
        return cmd_fetch(args.name)
    except ConfigError as err:
        print(f"flowerbed: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
