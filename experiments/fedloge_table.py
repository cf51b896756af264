"""Regenerate docs/results/fedloge.md's tables and figures: FedLoGe and its baselines x seeds on `fedloge-small`.

    python -m flowerbed.experiments.fedloge_table --out /tmp/fedloge --plot docs/results/fedloge-norms.png
    python -m flowerbed.experiments.fedloge_table --out /tmp/fedloge-c10 --plot docs/results/fedloge-norms-cifar10-lt.png \
        --preset fedloge-cifar10-lt-cpu dataset.path=../shared/data/cifar10-jpeg.tar.gz --methods fedloge fedavg
    python -m flowerbed.experiments.fedloge_table --out /tmp/fedloge-c10 --preset fedloge-cifar10-lt-cpu \
        dataset.path=../shared/data/cifar10-jpeg.tar.gz --methods fedrod fedlc ccvr

Runs `flowerbed run experiment=<--preset> <overrides> algorithm=... seed=...` per method and seed
(skipping runs that already finished), prints a Markdown table of the final round (mean ± std over
seeds), and, when FedLoGe is among the methods, plots its class norms against class frequency: |psi_c| (server checkpoint)
against the global class count, |phi_k,c| (every client's saved state) against the client's own count.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from flowerbed.experiments.runs import history, plus_minus, run_once
from flowerbed.simulations.plots import save_figure

METHODS = ["fedloge", "fedavg", "fedprox", "fedrep", "fedbabu", "ditto", "fedrod", "fedlc", "ccvr"]
# (row label, method, metric prefix for generic acc, metric prefix for personalized acc)
ROWS = [
    ("FedLoGe (GLA-FR: row-normalised psi / phi_k + norm-transferred psi)", "fedloge", "global", "personal"),
    ("FedLoGe, norm transfer onto row-normalised psi (personalized only)", "fedloge", None, "personal_normalised"),
    ("FedLoGe, raw psi / phi_k + psi (no realignment)", "fedloge", "global_raw", "personal_sum"),
    ("FedLoGe, universal SSE-C / phi_k alone", "fedloge", "global_universal", "personal_phi"),
    ("FedAvg (global model)", "fedavg", "global", "personal"),
    ("FedProx (global model)", "fedprox", "global", "personal"),
    ("FedRep (averaged heads / own head)", "fedrep", "global", "personal"),
    ("FedBABU (fixed head / fine-tuned)", "fedbabu", "global", "personal"),
    ("Ditto (FedAvg's global model / personal model, lambda-regularised)", "ditto", "global", "personal"),
    ("FedRoD (BSM generic head / generic + personal head)", "fedrod", "global", "personal"),
    ("FedRoD, generic head on the local test sets (personalized only)", "fedrod", None, "personal_generic"),
    ("FedLC (global model)", "fedlc", "global", "personal"),
    ("CCVR (recalibrated head / FedAvg's model, uncalibrated)", "ccvr", "global", "personal"),
    ("CCVR, FedAvg's own head (generic only: the same training as FedAvg)", "ccvr", "global_raw", None),
]


def run_dir(out: Path, method: str, seed: int) -> Path:
    return out / f"{method}-seed{seed}"


def run_all(out: Path, seeds: list[int], extra: list[str], methods: list[str] = METHODS) -> None:
    for method in methods:
        for seed in seeds:
            target = run_dir(out, method, seed)
            run_once(target, [*extra, f"algorithm={method}", f"seed={seed}", f"output.dir={target}"])


def final(out: Path, method: str, seeds: list[int]) -> list[dict]:
    return [history(run_dir(out, method, s))[-1] for s in seeds]


def table(out: Path, seeds: list[int], methods: list[str] = METHODS) -> str:
    lines = ["| method (generic / personalized model) | generic acc | many | medium | few | personalized acc | personalized acc, masked |",
             "|---|---|---|---|---|---|---|"]
    for label, method, g, p in ROWS:
        if method not in methods:
            continue
        last = final(out, method, seeds)
        cells = [plus_minus([r[f"{g}/{k}"] for r in last] if g else []) for k in ("acc", "acc_many", "acc_medium", "acc_few")]
        cells += [plus_minus([r[f"{p}/{k}"] for r in last] if p else []) for k in ("acc", "acc_masked")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_norms(out: Path, seed: int, extra: list[str]) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """(global class counts, |psi_c|, [(client counts, |phi_k,c|) for each client that trained])."""
    import torch

    from flowerbed.simulations import config
    from flowerbed.tasks.partitions import build_federation

    folder = run_dir(out, "fedloge", seed)
    cfg = config.load([*extra, "algorithm=fedloge", f"seed={seed}"], load_data=False)
    fed = build_federation(cfg)
    arrays = torch.load(folder / "checkpoints" / "server.pt", weights_only=False)["arrays"]
    psi = np.linalg.norm(arrays["classifier.weight"], axis=1)
    counts = fed.label_counts()
    phis = []
    for k in range(len(fed.clients)):
        saved = sorted((folder / "checkpoints" / "clients" / str(k)).glob("round-*.pt"))
        if saved:
            kind, head = torch.load(saved[-1], weights_only=False)["fedloge/phi"]
            phis.append((counts[k], head["weight"].norm(dim=1).numpy()))
    return fed.class_counts, psi, phis


def plot(out: Path, seeds: list[int], path: Path, extra: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for seed in seeds:
        counts, psi, phis = class_norms(out, seed, extra)
        left.plot(counts, psi, "o-", label=f"seed {seed}")
        for i, (n, norms) in enumerate(phis):
            right.scatter(n + 0.5, norms, s=10, alpha=0.6, color=f"C{seeds.index(seed)}", label=f"seed {seed}" if i == 0 else None)
    left.set(xscale="log", xlabel="global training samples of class c", ylabel="|psi_c|", title="global head psi (server, final round)")
    right.set(xscale="log", xlabel="client k's training samples of class c (+0.5)", ylabel="|phi_k,c|", title="personal heads phi_k (all clients)")
    left.legend(), right.legend()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/fedloge-table"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--plot", type=Path, help="the figure (default: OUT/norms.png; docs/results/ only when named)")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--preset", default="fedloge-small", help="experiment preset of every run")
    parser.add_argument("extra", nargs="*", help="more overrides for every run, e.g. rounds=60")
    args = parser.parse_args()
    args.extra = [f"experiment={args.preset}", *args.extra]  # the preset first, then the user's overrides
    run_all(args.out, args.seeds, args.extra, args.methods)
    print(table(args.out, args.seeds, args.methods))
    if "fedloge" in args.methods:  # the figure is of FedLoGe's heads
        figure = args.plot or args.out / "norms.png"
        plot(args.out, args.seeds, figure, args.extra)
        print(f"wrote {figure}")


if __name__ == "__main__":
    main()
