"""Regenerate docs/results/fedsto.md's tables and figures: FedSTO, its ablations and baselines on the
generated weather-shapes set and on DAWN's fog photographs.

    python -m flowerbed.experiments.fedsto_table --out runs/fedsto-table --datasets shapes dawn \\
        --plot docs/results/fedsto-map.png --boxes docs/results/fedsto-boxes.png \\
        dataset.path=../shared/data/dawn-fog-512.tar.gz \\
        model.weights=../shared/weights/tf_efficientnet_lite0.imagenet.safetensors

Runs `flowerbed run experiment=<preset> algorithm=... seed=...` per dataset, method and seed (finished
runs are skipped, interrupted ones resumed), then prints per dataset a Markdown table of the final
round's global mAP@0.5 on each domain's test split and overall, mean ± std over seeds, with the bytes
a round sends and receives and the seconds it takes. `dataset.path=...` and `model.weights=...` (the
ImageNet EfficientNet-Lite0 file the DAWN preset's detector starts from, results tables only) reach
only the DAWN runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from flowerbed.experiments.runs import finished, plus_minus, run_once
from flowerbed.experiments.runs import history as run_history
from flowerbed.simulations.plots import save_figure

PRESETS = {"shapes": "experiment=fedsto-shapes-cpu", "dawn": "experiment=fedsto-dawn-cpu"}
METHODS = ["fedsto", "fedsto-no-ortho", "fedsto-stage1", "fedavg-pseudo", "server-only", "centralized"]
LABELS = {"fedsto": "FedSTO", "fedsto-no-ortho": "FedSTO without orthogonality", "fedsto-stage1": "FedSTO stage 1 only",
          "fedavg-pseudo": "FedAvg on pseudo-labels", "server-only": "server only", "centralized": "centralized (ceiling)"}


def run_dir(out: Path, dataset: str, method: str, seed: int) -> Path:
    return out / dataset / f"{method}-seed{seed}"


DAWN_ONLY = ("dataset.path", "model.weights")  # the archive and the ImageNet backbone file reach only the DAWN runs


def overrides_for(dataset: str, extra: list[str]) -> list[str]:
    return [o for o in extra if dataset == "dawn" or not o.startswith(DAWN_ONLY)]


def run_all(out: Path, datasets: list[str], methods: list[str], seeds: list[int], extra: list[str]) -> None:
    for dataset in datasets:
        for seed in seeds:  # every method once before the next seed: early comparisons are complete
            for method in methods:
                target = run_dir(out, dataset, method, seed)
                run_once(target, [PRESETS[dataset], f"algorithm={method}", f"seed={seed}", f"output.dir={target}",
                                  *overrides_for(dataset, extra)])


def domains_of(record: dict) -> list[str]:
    return sorted(k.split("/", 2)[2] for k in record if k.startswith("global/map50/"))


def server_domain(out: Path, dataset: str, method: str, seed: int, names: list[str]) -> str:
    """The labeled domain of a run: partition.server_domain, else the data's first (tasks/detection.py)."""
    import yaml

    cfg = yaml.safe_load((run_dir(out, dataset, method, seed) / "config.yaml").read_text())
    return str(cfg.get("partition.server_domain") or (str(cfg.get("partition.domains") or "").split("+")[0] or names[0]))


def table(out: Path, dataset: str, methods: list[str], seeds: list[int]) -> str:
    """Final-round global mAP@0.5 per domain, on the clients' domains (their mean, per seed) and
    overall; bytes and seconds per round."""
    first = run_history(run_dir(out, dataset, methods[0], seeds[0]))[-1]
    names = domains_of(first)
    clients = [n for n in names if n != server_domain(out, dataset, methods[0], seeds[0], names)]
    head = ["method", *(f"mAP@0.5 {n}" for n in names), "mAP@0.5 clients' domains", "mAP@0.5 all", "mAP@0.5:0.95 all",
            "MB up / round", "MB down / round", "s / round"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        runs = [run_history(run_dir(out, dataset, method, s)) for s in seeds]
        finals = [r[-1] for r in runs]
        cells = [plus_minus([f[f"global/map50/{n}"] for f in finals]) for n in names]
        cells += [plus_minus([float(np.mean([f[f"global/map50/{n}"] for n in clients])) for f in finals])]
        cells += [f"**{plus_minus([f['global/map50'] for f in finals])}**", plus_minus([f["global/map"] for f in finals])]
        cells += [f"{np.mean([np.mean([m['comm/bytes_up'] for m in r[1:]]) for r in runs]) / 1e6:.2f}",
                  f"{np.mean([np.mean([m['comm/bytes_down'] for m in r[1:]]) for r in runs]) / 1e6:.2f}",
                  plus_minus([float(np.median([m["time/round_s"] for m in r[1:]])) for r in runs], 1, 1)]
        lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(out: Path, datasets: list[str], methods: list[str], seeds: list[int], path: Path) -> None:
    """Global mAP@0.5 per round, on every test image (top) and on the clients' domains (their mean, bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(datasets), figsize=(6 * len(datasets), 7), squeeze=False, sharex="col")
    for col, dataset in enumerate(datasets):
        names = domains_of(run_history(run_dir(out, dataset, methods[0], seeds[0]))[-1])
        clients = [n for n in names if n != server_domain(out, dataset, methods[0], seeds[0], names)]
        for i, method in enumerate(methods):
            runs = [[m for m in run_history(run_dir(out, dataset, method, s)) if "global/map50" in m] for s in seeds]
            rounds = [m["round"] for m in runs[0]]
            for row, score in enumerate((lambda m: m["global/map50"], lambda m: np.mean([m[f"global/map50/{n}"] for n in clients]))):
                value = np.array([[score(m) for m in r] for r in runs]) * 100
                ax = axes[row][col]
                ax.plot(rounds, value.mean(0), "-" if method.startswith("fedsto") else "--", color=f"C{i}", label=LABELS.get(method, method))
                ax.fill_between(rounds, value.min(0), value.max(0), color=f"C{i}", alpha=0.12)
        axes[0][col].set(ylabel="global mAP@0.5, all domains (%)", title=f"{dataset} ({len(seeds)} seeds: mean, min-max)")
        axes[1][col].set(xlabel="round", ylabel=f"mAP@0.5, clients' domains (%)\n({', '.join(clients)})")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    save_figure(fig, path)


def boxes_figure(out: Path, dataset: str, methods: list[str], seed: int, path: Path, images: int = 6, min_score: float = 0.3) -> None:
    """Test images with each method's final-model boxes (score >= min_score) over the true ones (white)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    import yaml

    from flowerbed.server.results import initial_weights
    from flowerbed.tasks.detection import build_federation, build_model, detect
    from flowerbed.tasks.voc import PAD

    cfg = yaml.safe_load((run_dir(out, dataset, methods[0], seed) / "config.yaml").read_text())
    data = build_federation(cfg).data
    picks = [int(np.flatnonzero(data.test_groups == k)[j]) for j in range(images // len(data.group_names) + 1)
             for k in range(len(data.group_names)) if (data.test_groups == k).sum() > j][:images]
    x = torch.as_tensor(data.x_test[picks])
    fig, axes = plt.subplots(len(methods), images, figsize=(2.2 * images, 2.3 * len(methods)), squeeze=False)
    for row, method in enumerate(methods):
        model = build_model(cfg, data.num_classes)
        model.load_state_dict(initial_weights(str(run_dir(out, dataset, method, seed)), model, cfg))  # its last global model
        for col, (image, found) in enumerate(zip(x, detect(model, x))):
            ax = axes[row][col]
            ax.imshow(image.permute(1, 2, 0).numpy())
            for r in data.y_test[picks[col]]:
                if r[0] != PAD:
                    ax.add_patch(plt.Rectangle((r[1], r[2]), r[3] - r[1], r[4] - r[2], fill=False, color="white", lw=1.5))
            for box, score, label in zip(found["boxes"], found["scores"], found["labels"]):
                if score >= min_score:
                    x1, y1, x2, y2 = box.tolist()
                    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=f"C{int(label)}", lw=1.2))
                    ax.text(x1, y1, f"{data.class_names[int(label)]} {score:.2f}", color=f"C{int(label)}", fontsize=5)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(data.group_names[data.test_groups[picks[col]]], fontsize=7)
        axes[row][0].set_ylabel(LABELS.get(method, method), fontsize=8)
    save_figure(fig, path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/fedsto-table"))
    parser.add_argument("--datasets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--plot", type=Path, help="mAP per round (default: OUT/map.png)")
    parser.add_argument("--boxes", type=Path, help="also draw test images with server-only's and FedSTO's boxes (per dataset)")
    parser.add_argument("--no-run", action="store_true", help="only read finished runs")
    parser.add_argument("extra", nargs="*", help="more overrides for every run, e.g. dataset.path=../shared/data/dawn-fog-512.tar.gz")
    args = parser.parse_args()
    if not args.no_run:
        run_all(args.out, args.datasets, args.methods, args.seeds, args.extra)

    def done(datasets: list[str]) -> list[str]:  # a partial table while other runs still go
        return [m for m in args.methods if all(finished(run_dir(args.out, d, m, s)) for d in datasets for s in args.seeds)]

    for dataset in args.datasets:
        methods = done([dataset])
        print(f"\n### {dataset}\n\n{table(args.out, dataset, methods, args.seeds) if methods else 'no method has finished every seed'}")
    figure = args.plot or args.out / "map.png"
    if done(args.datasets):
        plot(args.out, args.datasets, done(args.datasets), args.seeds, figure)
        print(f"\nwrote {figure}")
    for dataset in args.datasets if args.boxes else []:  # one picture a dataset: PATH, or PATH-<dataset>.png for several
        path = args.boxes if len(args.datasets) == 1 else args.boxes.with_name(f"{args.boxes.stem}-{dataset}{args.boxes.suffix}")
        if {"server-only", "fedsto"} <= set(done([dataset])):
            boxes_figure(args.out, dataset, ["server-only", "fedsto"], args.seeds[0], path)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
