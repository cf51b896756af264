"""Regenerate docs/results/pfedpg.md's tables and figures: the prompt methods x seeds per preset.

    python -m flowerbed.experiments.pfedpg_table --preset pfedpg-cifar10-dir pfedpg-cifar10-disjoint \\
        --out /tmp/pfedpg --plots docs/results dataset.cache_dir=~/.cache/flowerbed

Runs `flowerbed run experiment=PRESET algorithm=...` per method and seed into
OUT/PRESET/<method>-seed<S> (finished runs are kept, so the same command resumes, and several
commands with disjoint `--methods` can share the work), then prints per preset a Markdown table of
the final mean per-client accuracy (mean ± std over seeds), the per-seed paired difference of
pFedPG to each baseline, bytes per round and prompt similarity, and writes OUT-figure
`pfedpg-PRESET.png`. The backbone checkpoint must exist: `flowerbed pretrain experiment=PRESET ...`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from flowerbed.experiments.runs import finished, history, plus_minus, run_once
from flowerbed.simulations.plots import save_figure

PRESETS = {
    "pfedpg-cifar10-dir": "CIFAR-10, Dir(0.1) over 10 clients",
    "pfedpg-cifar10-disjoint": "CIFAR-10, 2 disjoint classes per client, 5 clients",
    "pfedpg-small": "digits, 5 domains",
}
METHODS = {
    "pFedPG": ["algorithm=pfedpg"],
    "FedVPT": ["algorithm=fedvpt"],
    "SingleSet-VPT": ["algorithm=singleset-vpt"],
    "P_base-only": ["algorithm=pbase-only"],
    "FedAvg fine-tune": ["algorithm=fedavg", "model=tiny-vit"],
}
BASELINES = ("FedVPT", "SingleSet-VPT", "P_base-only")

Histories = dict[str, list[list[dict]]]


def run_dir(out: Path, preset: str, overrides: list[str], seed: int) -> Path:
    return out / preset / f"{'-'.join(o.split('=')[1] for o in overrides)}-seed{seed}"


def run_all(out: Path, preset: str, seeds: list[int], extra: list[str], only: list[str] | None = None) -> Histories:
    """Run (or reuse) every method x seed of a preset; return each finished run's metrics."""
    histories: Histories = {}
    for method, overrides in METHODS.items():
        for seed in seeds:
            path = run_dir(out, preset, overrides, seed)
            if only is None or method in only:
                run_once(path, [f"experiment={preset}", f"seed={seed}", f"output.dir={path}", *overrides, *extra])
            if finished(path):
                histories.setdefault(method, []).append(history(path))
    return histories


def final(runs: list[list[dict]], key: str) -> list[float]:
    return [h[-1][key] for h in runs if key in h[-1]]


def table(histories: Histories) -> str:
    rows = ["| method | mean per-client acc (%) | with generated / global prompt (%) | lowest client (%) "
            "| bytes/round (down + up) | mean pairwise cos of sent prompts |", "|---|---|---|---|---|---|"]
    for method, runs in histories.items():
        last = [h[-1] for h in runs]
        acc, gen = final(runs, "personal/acc"), final(runs, "personal_generated/acc")
        lowest = [min(r["personal/acc_by_client"]) for r in last if "personal/acc_by_client" in r]
        bytes_round = int(np.mean([r["comm/bytes_down"] + r["comm/bytes_up"] for r in last]))
        cos = final(runs, "prompt/pairwise_cos")
        cos_text = f"{np.mean(cos):.4f}" if cos else "–"
        rows.append(f"| {method} | {plus_minus(acc)} | {plus_minus(gen)} | {plus_minus(lowest)} | {bytes_round:,} | {cos_text} |")
    return "\n".join(rows)


def paired(histories: Histories, method: str = "pFedPG") -> str:
    """pFedPG minus each baseline, seed by seed (same partition and backbone): mean ± std and the signs."""
    if method not in histories:
        return ""
    ours = final(histories[method], "personal/acc")
    rows = [f"| {method} − baseline (points, paired by seed) | mean ± std | per seed |", "|---|---|---|"]
    for other in BASELINES:
        theirs = final(histories.get(other, []), "personal/acc")
        if len(theirs) == len(ours) and ours:
            diff = [a - b for a, b in zip(ours, theirs)]
            per_seed = " / ".join(f"{d * 100:+.1f}" for d in diff)
            rows.append(f"| − {other} | {plus_minus(diff)} | {per_seed} |")
    return "\n".join(rows)


def prompt_headroom(preset: str, seed: int, epochs: int, extra: list[str]) -> str:
    """How much training the prompt adds over a personal linear head alone, client by client.

    Each client trains, from the same start, (a) its head only, the prompt frozen at its
    initial value, and (b) prompt and head together, with the preset's local SGD for `epochs`
    epochs on its own data, no federation. (b) - (a) bounds what any prompt method can gain on
    this backbone and data; pFedPG's edge over the other prompt methods is a share of it.
    """
    import torch

    from flowerbed.clients.core import batch_plan, generator, sgd, sgd_train
    from flowerbed.clients.data import local_data
    from flowerbed.simulations import config
    from flowerbed.tasks.metrics import classification_metrics, predict
    from flowerbed.tasks.models import build_model

    cfg = config.load([f"experiment={preset}", f"seed={seed}", *extra])
    torch.set_num_threads(int(cfg["train.num_threads"]))
    accs: dict[str, list[float]] = {"head only": [], "prompt + head": []}
    for client in range(int(cfg["clients.num"])):
        d = local_data(cfg, {"partition-id": client}, torch.device("cpu"))
        for mode in accs:
            model = build_model(str(cfg["model.name"]), d.input_shape, d.num_classes, seed, cfg)
            params = [*model.classifier.parameters(), *([model.features.prompt] if mode != "head only" else [])]
            batches = batch_plan(len(d.y_labeled), int(cfg["train.batch_size"]), epochs, 0, generator(seed, client, "probe"))
            sgd_train(model, d.x_labeled, d.y_labeled, batches, sgd(params, cfg))
            accs[mode].append(classification_metrics(predict(model, d.x_test), d.y_test, d.num_classes)["acc"])
    gain = np.array(accs["prompt + head"]) - np.array(accs["head only"])
    return (f"| {preset}, seed {seed}, {epochs} local epochs | {np.mean(accs['head only']) * 100:.1f} "
            f"| {np.mean(accs['prompt + head']) * 100:.1f} | {gain.mean() * 100:+.1f} ({gain.min() * 100:+.1f} to {gain.max() * 100:+.1f}) |")


def plot(histories: Histories, path: Path, title: str) -> Path:
    """Accuracy per round of the prompt methods, final accuracy against bytes per round (every
    method, FedAvg fine-tuning included), and how far pFedPG's generated prompts drift apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(16, 4.2))
    for method, runs in histories.items():
        evaluated = [{r["round"]: r["personal/acc"] for r in h if "personal/acc" in r} for h in runs]
        rounds = sorted(set.intersection(*(set(e) for e in evaluated)))  # runs may evaluate at different rounds
        curves = np.array([[e[t] for t in rounds] for e in evaluated])
        if method != "FedAvg fine-tune":  # tens of points lower: it would flatten the prompt methods' curves
            mean, std = curves.mean(0), curves.std(0)
            ax.plot(rounds, mean * 100, marker="o", markersize=3, label=method)
            ax.fill_between(rounds, (mean - std) * 100, (mean + std) * 100, alpha=0.2)
        last = [h[-1] for h in runs]
        sent = max(np.mean([r["comm/bytes_down"] + r["comm/bytes_up"] for r in last]), 1.0)  # SingleSet-VPT: 0 bytes
        final = [r["personal/acc"] * 100 for r in last]
        bx.errorbar(sent, np.mean(final), yerr=np.std(final), fmt="o", capsize=3, label=method)
        if method.startswith("pFedPG"):
            cos = np.array([[1 - r["prompt/pairwise_cos"] for r in h if "prompt/pairwise_cos" in r] for h in runs])
            cx.plot(range(1, cos.shape[1] + 1), np.maximum(cos.mean(0), 1e-9), label=method)
    ax.set_xlabel("round")
    ax.set_ylabel("mean per-client accuracy (%)")
    ax.set_title(f"{title}, mean ± std over seeds", fontsize=10)
    ax.legend(fontsize=8)
    bx.set_xscale("log")
    bx.set_xlabel("bytes per round, down + up (SingleSet-VPT: 0, drawn at 1)")
    bx.set_ylabel("final mean per-client accuracy (%)")
    bx.set_title("accuracy against communication", fontsize=10)
    bx.legend(fontsize=8)
    cx.set_yscale("log")
    cx.set_xlabel("round")
    cx.set_ylabel("1 - mean pairwise cosine of generated prompts")
    cx.set_title("how far the clients' prompts drift apart", fontsize=10)
    cx.legend(fontsize=8)
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--out", default="/tmp/pfedpg")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", help="run only these rows (the table shows every finished run)")
    parser.add_argument("--plots", help="folder for pfedpg-PRESET.png (default: OUT; docs/results only when named)")
    parser.add_argument("--headroom", type=int, metavar="EPOCHS", help="instead of runs: prompt_headroom() per preset, seed 0")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    if args.headroom:
        print("| setting | head only (%) | prompt + head (%) | gain, mean (client range) |\n|---|---|---|---|")
        for preset in args.preset:
            print(prompt_headroom(preset, 0, args.headroom, args.overrides), flush=True)
        return
    for preset in args.preset:
        histories = run_all(Path(args.out), preset, args.seeds, args.overrides, args.methods)
        print(f"\n### {preset}: {PRESETS[preset]}\n")
        print(table(histories))
        print()
        print(paired(histories))
        if histories:
            print(f"\nfigure: {plot(histories, Path(args.plots or args.out) / figure_name(preset), PRESETS[preset])}")


def figure_name(preset: str) -> str:
    """The names docs/results/pfedpg.md shows: the preset's own, pfedpg.png for the digits one."""
    return "pfedpg.png" if preset == "pfedpg-small" else f"{preset}.png"


if __name__ == "__main__":
    main()
