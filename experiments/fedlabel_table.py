"""Regenerate docs/results/fedlabel.md's tables and figures: methods x seeds on one preset.

    python -m flowerbed.experiments.fedlabel_table --experiment fedlabel-cifar10-cpu --out runs/fedlabel-cifar10 \
        --plot docs/results/fedlabel-cifar10.png dataset.path=../shared/data/cifar10-jpeg.tar.gz
    python -m flowerbed.experiments.fedlabel_table --out runs/fedlabel --plot docs/results/fedlabel.png
    python -m flowerbed.experiments.fedlabel_table rounds=40 dataset.path=../shared/data/cifar10-jpeg.tar.gz --experiment fedlabel-cifar10-cpu \
        --warm-from runs/fedlabel-cifar10 --out runs/fedlabel-cifar10-warm --methods fedlabel fedavg fedavg-100

Runs `flowerbed run experiment=<preset>` per method and seed (seeds in the outer loop, so an
interrupted sweep still has whole seeds; finished runs are reused; `--methods` picks a subset),
then prints a Markdown table of the final global accuracy and the mean over the last 5 evaluations
(mean ± std over seeds), with FedLabel's pseudo-label diagnostics, and writes an accuracy-vs-round
plot with a ±1 std band.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from flowerbed.experiments.runs import finished, history, plus_minus, run_once
from flowerbed.simulations.plots import save_figure

METHODS = {  # key: (row label, overrides)
    "fedlabel": ("FedLabel", ["algorithm=fedlabel"]),
    "only-local": ("only local", ["algorithm=fedlabel", "algorithm.selection=local"]),
    "only-global": ("only global", ["algorithm=fedlabel", "algorithm.selection=global"]),
    "lambda0-0": ("FedLabel, lambda0 = 0", ["algorithm=fedlabel", "algorithm.lambda0=0"]),
    "beta-0.3": ("FedLabel, beta = 0.3", ["algorithm=fedlabel", "algorithm.beta=0.3"]),
    "beta-0.7": ("FedLabel, beta = 0.7", ["algorithm=fedlabel", "algorithm.beta=0.7"]),
    "fedavg": ("FedAvg (labeled only)", ["algorithm=fedavg"]),
    "fedavg-crop-flip": ("FedAvg (labeled only), crop+flip", ["algorithm=fedavg", "train.augment=crop-flip"]),
    "fedavg-strong": ("FedAvg (labeled only), RandAugment", ["algorithm=fedavg", "train.augment=strong"]),
    "fixmatch": ("FedAvg+FixMatch", ["algorithm=fixmatch"]),
    "uda": ("FedAvg+UDA", ["algorithm=uda"]),
    "fedavg-100": ("FedAvg (100% labels)", ["algorithm=fedavg", "partition.labeled_fraction=1.0"]),
}
LAST = 5  # evaluations averaged in the smoothed column
RECALLED = 0.05  # a class counts as predicted by the global model when its test recall reaches this


def run_dir(out: Path, overrides: list[str], seed: int) -> Path:
    return out / f"{'-'.join(o.split('=')[1] for o in overrides)}-seed{seed}"


def run_all(experiment: str, out: Path, seeds: list[int], methods: list[str], extra: list[str],
            warm_from: Path | None = None) -> dict[str, list[list[dict]]]:
    for seed in seeds:
        # --warm-from: every method of a seed continues that folder's labeled-only FedAvg run of the same seed
        start = [f"model.init={run_dir(warm_from, METHODS['fedavg'][1], seed)}"] if warm_from else []
        for method in methods:
            overrides = METHODS[method][1]
            target = run_dir(out, overrides, seed)
            run_once(target, [f"experiment={experiment}", f"seed={seed}", f"output.dir={target}", *overrides, *start, *extra])
    return load(out, seeds, methods)


def load(out: Path, seeds: list[int], methods: list[str]) -> dict[str, list[list[dict]]]:
    histories: dict[str, list[list[dict]]] = {}
    for method in methods:
        label, overrides = METHODS[method]
        for seed in seeds:
            target = run_dir(out, overrides, seed)
            if finished(target):  # a running one has a partial history
                histories.setdefault(label, []).append(history(target))
    return histories


def table(histories: dict[str, list[list[dict]]]) -> str:
    rows = ["| method | final global acc (%) | last-5-eval mean (%) | classes the global model recalls | pseudo-label acc (%) "
            "| coverage (%) | chosen from local (%) | seeds |",
            "|---|---|---|---|---|---|---|---|"]
    for method, runs in histories.items():
        evals = [[m["global/acc"] for m in h if "global/acc" in m] for h in runs]
        final = [e[-1] for e in evals]
        smooth = [float(np.mean(e[-LAST:])) for e in evals]
        # a global model that collapses onto the sampled clients' classes recalls few of the ten
        recalled = [float(np.mean([np.sum(np.array(m["global/acc_per_class"]) >= RECALLED) for m in h if "global/acc_per_class" in m]))
                    for h in runs]
        trains = [[m for m in h if "fedlabel/pseudo_acc" in m] for h in runs]
        diag = lambda key: [float(np.mean([m[key] for m in t])) for t in trains if t]  # noqa: E731
        rows.append(f"| {method} | {plus_minus(final)} | {plus_minus(smooth)} | {plus_minus(recalled, 1.0)} "
                    f"| {plus_minus(diag('fedlabel/pseudo_acc'))} | {plus_minus(diag('fedlabel/coverage'))} "
                    f"| {plus_minus(diag('fedlabel/local_share'))} | {len(runs)} |")
    return "\n".join(rows)


def plot(histories: dict[str, list[list[dict]]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for method, runs in histories.items():
        rounds = [m["round"] for m in runs[0] if "global/acc" in m]
        curves = np.array([[m["global/acc"] for m in h if "global/acc" in m] for h in runs]) * 100
        mean, std = curves.mean(0), curves.std(0)
        style = "--" if "FedAvg" in method else "-"
        ax.plot(rounds, mean, style, label=method)
        ax.fill_between(rounds, mean - std, mean + std, alpha=0.15)
    ax.set_xlabel("round")
    ax.set_ylabel("global model test accuracy (%)")
    ax.set_title(f"{title} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="fedlabel-small", help="the preset every run starts from")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="a subset, in table order")
    parser.add_argument("--title", default=None, help="the figure's title (default: the preset's name)")
    parser.add_argument("--out", default="/tmp/fedlabel")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--plot", type=Path, help="the figure (default: OUT/accuracy.png; docs/results/ only when named)")
    parser.add_argument("--no-run", action="store_true", help="only tabulate the runs already in --out")
    parser.add_argument("--warm-from", type=Path, metavar="OUT", help="start each seed's runs from the labeled-only FedAvg run of that seed in OUT")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    out = Path(args.out)
    histories = load(out, args.seeds, args.methods) if args.no_run else run_all(args.experiment, out, args.seeds, args.methods, args.overrides, args.warm_from)
    print(table(histories))
    print(f"figure: {plot(histories, args.plot or out / 'accuracy.png', args.title or args.experiment)}")


if __name__ == "__main__":
    main()
