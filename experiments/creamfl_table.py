"""Regenerate docs/results/creamfl.md's tables and figures: CreamFL, its baselines and ablations on
captioned images, in a federation of image-text clients (`--federation pairs`:
`experiment=creamfl-pairs-flickr8k-cpu`) or of image-text, image-only and text-only clients
(`--federation mixed`: `experiment=creamfl-flickr8k-cpu`).

    python -m flowerbed.experiments.creamfl_table --out runs/creamfl-table \\
        --plot docs/results/creamfl-rsum.png --retrievals docs/results/creamfl-retrievals.png \\
        dataset.path=../shared/data/flickr8k-64.tar.gz

Runs `flowerbed run experiment=<preset> ... seed=...` per method and seed (finished runs are skipped,
interrupted ones resumed), then prints a Markdown table of the server model's final-round recall@1/5/10
image->text and text->image and rsum, mean ± std over seeds, with the MB a round sends and receives
and its seconds (median over rounds), and whether CreamFL's rsum is above the public-only server's
by more than 2 std (the larger of the two methods' std) and at or above the representation mean's.
It draws rsum per round (mean over seeds, a band of ± 1 std) and, for three test images evenly
spaced in the test set (not chosen by how well they do), the five captions CreamFL's server model
ranks first, the image's own captions marked. Overrides after the options reach every run;
`partition.public_images` and `algorithm.*` ones do not reach FedAvg (its clients hold every
training image, the public ones included).
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np

from flowerbed.experiments.runs import finished, plus_minus, run_once
from flowerbed.experiments.runs import history as run_history
from flowerbed.simulations.plots import save_figure

FEDERATIONS: dict[str, dict[str, list[str]]] = {  # federation: {preset: its overrides}
    "pairs": {"creamfl": ["experiment=creamfl-pairs-flickr8k-cpu"], "fedavg": ["experiment=retrieval-flickr8k-cpu"]},
    # FedAvg averages the image-text clients' dual encoders: the uni-modal clients are left out
    "mixed": {"creamfl": ["experiment=creamfl-flickr8k-cpu"],
              "fedavg": ["experiment=creamfl-flickr8k-cpu", "algorithm=fedavg", "clients.num=2", "partition.image_clients=0",
                         "partition.text_clients=0", "model.name=cnn", "model.text=gru"]},
}
METHODS: dict[str, tuple[str, list[str]]] = {  # name: (preset, its overrides)
    "creamfl": ("creamfl", []),
    "public-only": ("creamfl", ["algorithm.distill_weight=0"]),
    "fedavg": ("fedavg", []),
    "mean": ("creamfl", ["algorithm.ensemble=mean"]),
    "no-inter": ("creamfl", ["algorithm.inter_weight=0"]),
    "no-intra": ("creamfl", ["algorithm.intra_weight=0"]),
    "mean-local": ("creamfl", ["algorithm.ensemble=mean", "algorithm.inter_weight=0", "algorithm.intra_weight=0"]),
}
LABELS = {"creamfl": "CreamFL", "public-only": "server on public pairs only", "fedavg": "FedAvg of the image-text clients",
          "mean": "representation mean (CreamFL, mean instead of ensemble weights)",
          "no-inter": "CreamFL without inter-modal contrast", "no-intra": "CreamFL without intra-modal contrast",
          "mean-local": "representation mean, clients on their local task only (FedMD-style)"}
RECALLS = ["r1_i2t", "r5_i2t", "r10_i2t", "r1_t2i", "r5_t2i", "r10_t2i", "rsum"]
NOT_FOR_FEDAVG = ("partition.public_images", "algorithm.")


def run_dir(out: Path, method: str, seed: int) -> Path:
    return out / f"{method}-seed{seed}"


def overrides_for(method: str, extra: list[str], federation: str = "pairs") -> list[str]:
    preset, own = METHODS[method]
    kept = [o for o in extra if preset != "fedavg" or not o.startswith(NOT_FOR_FEDAVG)]
    return [*FEDERATIONS[federation][preset], *own, *kept]


def run_all(out: Path, methods: list[str], seeds: list[int], extra: list[str], federation: str = "pairs") -> None:
    for seed in seeds:  # every method once before the next seed: early comparisons are complete
        for method in methods:
            target = run_dir(out, method, seed)
            run_once(target, [*overrides_for(method, extra, federation), f"seed={seed}", f"output.dir={target}"])


def finals(out: Path, method: str, seeds: list[int]) -> list[dict]:
    """Each seed's last line with the server model's metrics (the final round's)."""
    return [[m for m in run_history(run_dir(out, method, s)) if "global/rsum" in m][-1] for s in seeds]


def table(out: Path, methods: list[str], seeds: list[int]) -> str:
    """Final-round server R@K both ways and rsum, mean ± std; MB up/down and seconds per round."""
    head = ["method", "R@1 i2t", "R@5 i2t", "R@10 i2t", "R@1 t2i", "R@5 t2i", "R@10 t2i", "rsum",
            "MB up / round", "MB down / round", "s / round"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        runs, last = [run_history(run_dir(out, method, s))[1:] for s in seeds], finals(out, method, seeds)
        cells = [plus_minus([f[f"global/{k}"] for f in last], 1.0) for k in RECALLS]
        cells[-1] = f"**{cells[-1]}**"
        cells += [f"{np.mean([np.mean([m['comm/bytes_up'] for m in r]) for r in runs]) / 1e6:.2f}",
                  f"{np.mean([np.mean([m['comm/bytes_down'] for m in r]) for r in runs]) / 1e6:.2f}",
                  plus_minus([float(np.median([m["time/round_s"] for m in r])) for r in runs], 1.0, 1)]
        lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def orderings(out: Path, methods: list[str], seeds: list[int]) -> list[str]:
    """The issue's two orderings on final-round rsum, each as one line saying whether it holds."""
    rsum = {m: np.array([f["global/rsum"] for f in finals(out, m, seeds)]) for m in methods}
    lines = []
    if {"creamfl", "public-only"} <= set(rsum):
        gap, spread = rsum["creamfl"].mean() - rsum["public-only"].mean(), max(rsum["creamfl"].std(), rsum["public-only"].std())
        verdict = "holds" if gap > 2 * spread else "fails"
        lines.append(f"CreamFL - public-only = {gap:+.2f} rsum; 2 std = {2 * spread:.2f}: {verdict}")
    if {"creamfl", "mean"} <= set(rsum):
        gap = rsum["creamfl"].mean() - rsum["mean"].mean()
        lines.append(f"CreamFL - representation mean = {gap:+.2f} rsum: {'holds' if gap >= 0 else 'fails'}")
    return lines


def plot(out: Path, methods: list[str], seeds: list[int], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, method in enumerate(methods):
        runs = [[m for m in run_history(run_dir(out, method, s)) if "global/rsum" in m] for s in seeds]
        rounds = [m["round"] for m in runs[0]]
        value = np.array([[m["global/rsum"] for m in r] for r in runs])
        style = "-" if method == "creamfl" else "--" if method in ("public-only", "fedavg", "mean-local") else ":"
        ax.plot(rounds, value.mean(0), style, color=f"C{i}", label=LABELS.get(method, method), lw=2 if method == "creamfl" else 1.3)
        ax.fill_between(rounds, value.mean(0) - value.std(0), value.mean(0) + value.std(0), color=f"C{i}", alpha=0.12)
    ax.set(xlabel="round", ylabel="server model's test rsum (max 600)", title=f"rsum per round ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}: mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def retrievals(run: Path, path: Path, images: int = 3, top: int = 5) -> Path:
    """Test images (evenly spaced in the test set) and the `top` captions the run's final server model
    ranks first among every test caption; the image's own captions in green with a check mark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    import yaml

    from flowerbed.server.results import initial_weights
    from flowerbed.tasks.registry import task_of
    from flowerbed.tasks.retrieval import embed, read_captioned, split, test_captions

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    task = task_of(cfg)
    data = task.federation(cfg).data
    model = task.build_model(cfg, data)
    model.load_state_dict(initial_weights(str(run), model, cfg))  # the run's last server model
    image_emb, text_emb, owner = embed(model, torch.as_tensor(data.x_test), torch.as_tensor(data.y_test))
    texts = [c for caps in test_captions(cfg) for c in caps]
    assert len(texts) == len(text_emb), "the test captions and their embeddings must line up"
    picks = np.linspace(0, len(data.x_test) - 1, images).round().astype(int)
    larger = read_captioned({**cfg, "dataset.image_shape": "3x64x64"})  # for the eye; the model saw the run's shape
    shown = larger.images[split(cfg, len(larger.names))[0]]
    fig, axes = plt.subplots(images, 2, figsize=(9, 2.1 * images), gridspec_kw={"width_ratios": [1, 4]}, squeeze=False)
    for row, k in enumerate(picks):
        ranked = torch.argsort(image_emb[k] @ text_emb.T, descending=True)[:top].tolist()
        axes[row][0].imshow(np.transpose(shown[k], (1, 2, 0)))
        axes[row][0].set_axis_off()
        axes[row][0].set_title(f"test image {k}", fontsize=8)
        ax = axes[row][1]
        ax.set_axis_off()
        for rank, m in enumerate(ranked):
            correct = int(owner[m]) == int(k)
            line = textwrap.shorten(texts[m], 95, placeholder="...")
            ax.text(0, 1 - (rank + 0.5) / top, f"{rank + 1}. {'✓' if correct else '✗'} {line}", va="center", fontsize=8,
                    color="green" if correct else "black", transform=ax.transAxes)
    fig.suptitle(f"top-{top} captions retrieved by the final server model ({run.name}; green ✓: the image's own caption)", fontsize=9)
    return save_figure(fig, path, dpi=100, rect=(0, 0, 1, 0.96))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/creamfl-table"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--federation", choices=list(FEDERATIONS), default="pairs")
    parser.add_argument("--plot", type=Path, help="rsum per round (default: OUT/rsum.png)")
    parser.add_argument("--retrievals", type=Path, help="top-5 captions of three test images (default: OUT/retrievals.png)")
    parser.add_argument("--no-run", action="store_true", help="only read finished runs")
    parser.add_argument("extra", nargs="*", help="more overrides for every run, e.g. dataset.path=../shared/data/flickr8k-64.tar.gz")
    args = parser.parse_args()
    if not args.no_run:
        run_all(args.out, args.methods, args.seeds, args.extra, args.federation)
    done = [m for m in args.methods if all(finished(run_dir(args.out, m, s)) for s in args.seeds)]  # a partial table while runs go
    if not done:
        print("no method has finished every seed")
        return
    print(table(args.out, done, args.seeds))
    print("\n" + "\n".join(orderings(args.out, done, args.seeds)))
    figure = plot(args.out, done, args.seeds, args.plot or args.out / "rsum.png")
    print(f"\nwrote {figure}")
    if "creamfl" in done:
        picture = retrievals(run_dir(args.out, "creamfl", args.seeds[0]), args.retrievals or args.out / "retrievals.png")
        print(f"wrote {picture}")


if __name__ == "__main__":
    main()
