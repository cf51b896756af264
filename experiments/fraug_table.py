"""Regenerate docs/results/fraug.md's tables and figure: FRAug, its two ablations, FedBN, FedAvg,
FedProx and FedRep on digits with domain shift and on CIFAR-10 with corruption domains, 3 seeds.

    python -m flowerbed.experiments.fraug_table --out runs/fraug-table --datasets digits cifar10-c \\
        --plot docs/results/fraug-accuracy.png dataset.path=../shared/data/cifar10-jpeg.tar.gz

Runs `flowerbed run experiment=<preset> algorithm=... seed=...` per dataset, method and seed
(finished runs are skipped, interrupted ones resumed), then prints per dataset a Markdown table of
the final round: each domain's personalized accuracy (its client's own test split) and their mean,
mean ± std over seeds; the bytes a round sends and receives and the seconds a round takes; and what
travels per client (the model without BatchNorm, and FRAug's generator next to it). `extra`
overrides go to every run; `dataset.cache_dir=...` only reaches the CIFAR-10 runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from flowerbed.experiments.runs import finished, plus_minus, run_once
from flowerbed.experiments.runs import history as run_history
from flowerbed.simulations.plots import save_figure

PRESETS = {"digits": "experiment=fraug-digits", "cifar10-c": "experiment=fraug-cifar10-c"}
METHODS = ["fraug", "fraug-no-rtnet", "fraug-no-generator", "fedbn", "fedavg", "fedprox", "fedrep"]
LABELS = {
    "fraug": "FRAug", "fraug-no-rtnet": "FRAug without RTNet", "fraug-no-generator": "FRAug without generator",
    "fedbn": "FedBN", "fedavg": "FedAvg", "fedprox": "FedProx", "fedrep": "FedRep",
}


def run_dir(out: Path, dataset: str, method: str, seed: int) -> Path:
    return out / dataset / f"{method}-seed{seed}"


def overrides_for(dataset: str, extra: list[str]) -> list[str]:
    return [o for o in extra if dataset.startswith("cifar") or not o.startswith("dataset.cache_dir")]


def run_all(out: Path, datasets: list[str], methods: list[str], seeds: list[int], extra: list[str]) -> None:
    for dataset in datasets:
        for seed in seeds:  # every method once before the next seed: early comparisons are complete
            for method in methods:
                target = run_dir(out, dataset, method, seed)
                run_once(target, [PRESETS[dataset], f"algorithm={method}", f"seed={seed}", f"output.dir={target}",
                                  *overrides_for(dataset, extra)])


def history(out: Path, dataset: str, method: str, seed: int) -> list[dict]:
    return run_history(run_dir(out, dataset, method, seed))


def domain_names(out: Path, dataset: str, method: str, seed: int) -> list[str]:
    import yaml

    from flowerbed.tasks import domains

    cfg = yaml.safe_load((run_dir(out, dataset, method, seed) / "config.yaml").read_text())
    names = domains.parse(cfg.get("partition.domains"))
    return [domains.domain_of(k, names) for k in range(int(cfg["clients.num"]))]


def table(out: Path, dataset: str, methods: list[str], seeds: list[int]) -> str:
    """Final-round personalized accuracy per domain and its mean over domains; bytes and time per round."""
    clients = domain_names(out, dataset, methods[0], seeds[0])
    names = list(dict.fromkeys(clients))
    head = ["method", *names, "mean over domains", "MB up / round", "MB down / round", "s / round"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        runs = [history(out, dataset, method, s) for s in seeds]
        finals = [r[-1]["personal/acc_per_client"] for r in runs]
        per_domain = [[float(np.mean([acc for acc, d in zip(f, clients) if d == name])) for f in finals] for name in names]
        means = [float(np.mean([domain[i] for domain in per_domain])) for i in range(len(seeds))]
        up = [np.mean([m["comm/bytes_up"] for m in r[1:]]) / 1e6 for r in runs]
        down = [np.mean([m["comm/bytes_down"] for m in r[1:]]) / 1e6 for r in runs]
        train_rounds = [np.median([m["time/round_s"] for m in r[1:] if "personal/acc" not in m] or [m["time/round_s"] for m in r[1:]]) for r in runs]
        cells = [plus_minus(d) for d in per_domain] + [f"**{plus_minus(means)}**", f"{np.mean(up):.3f}", f"{np.mean(down):.3f}",
                                                       plus_minus(train_rounds, 1, 2)]
        lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sizes(out: Path, dataset: str, seed: int) -> str:
    """What one client sends per round: the model (without BatchNorm where it stays local) and G."""
    import yaml

    from flowerbed.simulations import config
    from flowerbed.tasks.fraug import build_generator
    from flowerbed.tasks.models import batchnorm_keys, build_model
    from flowerbed.tasks.partitions import build_federation

    cfg = yaml.safe_load((run_dir(out, dataset, "fraug", seed) / "config.yaml").read_text())
    flat = config.load([PRESETS[dataset], f"dataset.cache_dir={cfg.get('dataset.cache_dir', '')}"] if dataset.startswith("cifar")
                       else [PRESETS[dataset]])
    data = build_federation(flat).data
    state = build_model(str(flat["model.name"]), data.input_shape, data.num_classes, 0).state_dict()
    local = set(batchnorm_keys(state))
    nbytes = lambda tensors: sum(t.numel() * t.element_size() for t in tensors)  # noqa: E731
    generator = build_generator(state["classifier.weight"].shape[1], data.num_classes, 0, int(flat.get("algorithm.latent_dim", 0)))
    rows = [("model (FedAvg, FedProx, FedRep)", nbytes(state.values())),
            ("model without BatchNorm (FedBN, FRAug)", nbytes(v for k, v in state.items() if k not in local)),
            ("BatchNorm layers (kept by FedBN/FRAug clients)", nbytes(state[k] for k in local)),
            ("FRAug's generator G (sent next to the model)", nbytes(generator.state_dict().values()))]
    return "\n".join(["| what | KB |", "|---|---|"] + [f"| {name} | {b / 1e3:.1f} |" for name, b in rows])


def plot(out: Path, datasets: list[str], methods: list[str], seeds: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for i, method in enumerate(methods):
            runs = [[m for m in history(out, dataset, method, s) if "personal/acc" in m] for s in seeds]
            rounds = [m["round"] for m in runs[0]]
            acc = np.array([[m["personal/acc"] for m in r] for r in runs]) * 100
            style = "-" if method.startswith(("fraug", "fedbn")) else "--"
            ax.plot(rounds, acc.mean(0), style, color=f"C{i}", label=LABELS.get(method, method))
            ax.fill_between(rounds, acc.min(0), acc.max(0), color=f"C{i}", alpha=0.15)
        ax.set(xlabel="round", ylabel="personalized accuracy, mean over domains (%)", title=f"{dataset} ({len(seeds)} seeds: mean, min-max)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    save_figure(fig, path)


def domains_figure(datasets: list[str], extra: list[str], path: Path, images: int = 8) -> None:
    """The same test images as each preset's clients see them: one row per domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowerbed.simulations import config
    from flowerbed.tasks import domains
    from flowerbed.tasks.local_data import IMAGE_FORMS
    from flowerbed.tasks.partitions import build_federation

    fig, axes = plt.subplots(6, len(datasets) * images, figsize=(1.1 * len(datasets) * images, 7), squeeze=False)
    for col, dataset in enumerate(datasets):
        flat = config.load([PRESETS[dataset], *overrides_for(dataset, extra)])
        data, form = build_federation(flat).data, IMAGE_FORMS[str(flat["dataset.name"])]
        x = data.x_test[[int(np.flatnonzero(data.y_test == c)[0]) for c in range(images)]]
        names = domains.parse(flat["partition.domains"])
        mean, std = np.asarray(form.mean)[:, None, None], np.asarray(form.std)[:, None, None]
        for row, name in enumerate(names[:6]):
            seen = domains.shift(x, row, names, (form.mean, form.std)) * std + mean
            for i in range(images):
                ax = axes[row][col * images + i]
                ax.imshow(seen[i].transpose(1, 2, 0).clip(0, 1).squeeze(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
            axes[row][col * images].set_ylabel(name, fontsize=8)
    save_figure(fig, path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/fraug-table"))
    parser.add_argument("--datasets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--plot", type=Path, help="the figure (default: OUT/accuracy.png; docs/results/ only when named)")
    parser.add_argument("--no-run", action="store_true", help="only read finished runs")
    parser.add_argument("--domains-plot", type=Path, help="also draw what each client sees (one row per domain)")
    parser.add_argument("extra", nargs="*", help="more overrides for every run, e.g. dataset.path=../shared/data/cifar10-jpeg.tar.gz")
    args = parser.parse_args()
    if args.domains_plot:
        domains_figure(args.datasets, args.extra, args.domains_plot)
    if not args.no_run:
        run_all(args.out, args.datasets, args.methods, args.seeds, args.extra)
    def finished(datasets: list[str]) -> list[str]:  # a partial table while other runs still go
        return [m for m in args.methods if all(finished(run_dir(args.out, d, m, s)) for d in datasets for s in args.seeds)]

    for dataset in args.datasets:
        done = finished([dataset])
        print(f"\n### {dataset}\n\n{table(args.out, dataset, done, args.seeds) if done else 'no method has finished every seed'}")
        if "fraug" in done:
            print(f"\n{sizes(args.out, dataset, args.seeds[0])}")
    figure = args.plot or args.out / "accuracy.png"
    plot(args.out, args.datasets, finished(args.datasets), args.seeds, figure)
    print(f"\nwrote {figure}")


if __name__ == "__main__":
    main()
