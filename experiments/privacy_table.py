"""The numbers of docs/privacy.md: accuracy vs epsilon for FedAvg on digits (and CIFAR-10), and the
epsilon cross-checked against other accountants.

    python -m flowerbed.experiments.privacy_table --out runs/privacy            # digits: 18 runs + 3 adaptive
    python -m flowerbed.experiments.privacy_table --out runs/privacy --cifar10 dataset.path=../shared/data/cifar10-jpeg.tar.gz  # + CIFAR-10

Each setting is a `flowerbed sweep` over `--seeds` (default 0, 1, 2) into OUT/<dataset>/<setting> (a rerun skips
finished runs); the tables go to stdout as markdown, `flowerbed report` figures to OUT/<dataset>/report.
The clipping norm of each dataset is the median L2 norm of the clients' round-1 updates in the
non-private run, to one significant digit (a training-side statistic; Andrew et al.'s adaptive
clipping tracks the same quantile).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

DIGITS = ["clients.num=100", "model=mlp", "rounds=30", "evaluate.every=2"]
CIFAR10 = ["dataset=cifar10", "model=cnn", "clients.num=100", "train.local_epochs=0",
           "train.local_steps=5", "rounds=20", "evaluate.every=2"]
CLIP = {"digits": "privacy.clipping_norm=0.2", "cifar10": "privacy.clipping_norm=0.3"}  # the DP rows' clipping bound
SETTINGS = {
    "digits": [("none", ["privacy=none"]), ("central", ["privacy=central", CLIP["digits"], "privacy.noise_multiplier=1,2,4,8"]),
               ("local", ["privacy=local", CLIP["digits"], "privacy.noise_multiplier=4"]),
               ("adaptive", ["privacy=central-adaptive", CLIP["digits"], "privacy.noise_multiplier=2"])],
    "cifar10": [("none", ["privacy=none"]), ("central", ["privacy=central", CLIP["cifar10"], "privacy.noise_multiplier=0.3,1,3"])],
}


def sweep(base: list[str], settings: list[tuple[str, list[str]]], out: Path, seeds: str) -> None:
    for name, overrides in settings:
        cmd = [sys.executable, "-m", "flowerbed.simulations.cli", "sweep", *base, f"seed={seeds}", *overrides, f"sweep.dir={out / name}"]
        subprocess.run(cmd, check=True)


def accuracy_table(out: Path) -> str:
    """One row per setting: final central accuracy and the accountant's epsilon, mean ± std over seeds."""
    rows: dict[tuple, list[dict]] = {}
    for summary_path in sorted(out.rglob("summary.json")):
        import yaml

        config = yaml.safe_load((summary_path.parent / "config.yaml").read_text())
        mode = config.get("privacy.name", "none")
        key = (mode, config.get("privacy.noise_multiplier") if mode != "none" else None)
        rows.setdefault(key, []).append(json.loads(summary_path.read_text()))
    lines = ["| privacy | noise multiplier z | seeds | final accuracy (%) | ε (accountant) | δ |", "|---|---|---|---|---|---|"]
    order = {"none": 0, "central": 1, "central-adaptive": 2, "local": 3}
    for (mode, z), summaries in sorted(rows.items(), key=lambda kv: (order.get(kv[0][0], 9), -(kv[0][1] or 0))):
        acc = [100 * s["final/global/acc"] for s in summaries]
        eps = [s.get("privacy/epsilon") for s in summaries]
        eps_cell = "∞ (no DP)" if mode == "none" else (f"{np.mean(eps):.2f}" if None not in eps else "∞")
        delta = summaries[0].get("privacy/delta")
        acc_cell = f"{np.mean(acc):.1f} ± {np.std(acc, ddof=1):.1f}" if len(acc) > 1 else f"{acc[0]:.1f}"
        lines.append(f"| {mode} | {'–' if z is None else z} | {len(summaries)} | {acc_cell} | {eps_cell} | "
                     f"{'–' if delta is None else f'{delta:.1e}'} |")
    return "\n".join(lines)


def exact_gaussian_epsilon(z: float, releases: int, delta: float) -> float:
    """The exact epsilon of `releases` composed Gaussian mechanisms (Balle & Wang 2018, Thm 8:
    a composition of Gaussians is the Gaussian with mu = sqrt(releases) / z)."""
    from scipy.stats import norm

    mu = math.sqrt(releases) / z
    low, high = 0.0, 1000.0
    for _ in range(200):
        mid = (low + high) / 2
        d = norm.cdf(-mid / mu + mu / 2) - math.exp(mid) * norm.cdf(-mid / mu - mu / 2)
        low, high = (mid, high) if d > delta else (low, mid)
    return high


def cross_check(noise_multipliers: list[float], releases: int, delta: float) -> str:
    """The epsilon of full participation (the Gaussian mechanism composed) by four computations."""
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant

    from flowerbed.strategies.privacy import Accountant

    lines = ["| z | rounds | Flower RdpAccountant (what runs report) | dp-accounting PLD | Opacus RDP | exact (analytic Gaussian) |",
             "|---|---|---|---|---|---|"]
    for z in noise_multipliers:
        accountant = Accountant(z, 100, 100, amplified=False)
        accountant.delta = delta
        pld = pld_privacy_accountant.PLDAccountant()
        pld.compose(dp_event.GaussianDpEvent(z), releases)
        try:  # Opacus is not a dependency: `pip install --no-deps --target DIR opacus` and put DIR on PYTHONPATH
            from opacus.accountants.analysis import rdp

            orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
            curve = rdp.compute_rdp(q=1.0, noise_multiplier=z, steps=releases, orders=orders)
            opacus = f"{rdp.get_privacy_spent(orders=orders, rdp=curve, delta=delta)[0]:.3f}"
        except ImportError:
            opacus = "–"
        lines.append(f"| {z} | {releases} | {accountant.epsilon(releases):.3f} | {pld.get_epsilon(delta):.3f} | {opacus} | "
                     f"{exact_gaussian_epsilon(z, releases, delta):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/privacy")
    parser.add_argument("--cifar10", action="store_true")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated, as a sweep takes them")
    parser.add_argument("cifar10_data", nargs="*", help="where CIFAR-10 is, e.g. dataset.path=... or dataset.cache_dir=...")
    args = parser.parse_args()
    out = Path(args.out)
    datasets = [("digits", DIGITS)] + ([("cifar10", CIFAR10 + args.cifar10_data)] if args.cifar10 else [])
    for name, base in datasets:
        sweep(base, SETTINGS[name], out / name, args.seeds)
        subprocess.run([sys.executable, "-m", "flowerbed.simulations.cli", "report", str(out / name), "--out", str(out / name / "report")],
                       check=True)
        print(f"\n## {name}\n\n{accuracy_table(out / name)}")
    print("\n## cross-check (digits, full participation, δ = 1/1437)\n")
    print(cross_check([1, 2, 4, 8], 30, 1 / 1437))


if __name__ == "__main__":
    main()
