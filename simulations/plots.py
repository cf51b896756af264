"""Figures: a partition heat map, and the report's figures (simulations/report.py prepares their data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def partition_heatmap(counts: np.ndarray, title: str, path: Path, class_names: tuple[str, ...] = ()) -> Path:
    """Clients x classes heat map of training-sample counts, each cell labelled; columns named by class if known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients, classes = counts.shape
    fig, ax = plt.subplots(figsize=(max(5, 0.55 * classes + 2), max(3, 0.35 * clients + 1.5)))
    image = ax.imshow(counts, aspect="auto", cmap="viridis")
    ax.set_xlabel("class")
    ax.set_ylabel("client (partition id)")
    named = len(class_names) == classes and classes <= 40
    if named:  # matplotlib takes label styles only together with labels
        ax.set_xticks(range(classes), [f"{c} {n}" for c, n in enumerate(class_names)], rotation=45, ha="right")
    else:
        ax.set_xticks(range(classes))
    ax.set_yticks(range(clients) if clients <= 40 else np.linspace(0, clients - 1, 10, dtype=int))
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="training samples")
    if clients * classes <= 600:
        threshold = counts.max() / 2
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7, color="black" if value > threshold else "white")
    return save_figure(fig, path)


def save_figure(fig, path: Path, dpi: int = 120, rect: tuple[float, float, float, float] | None = None) -> Path:
    """The end of every figure: lay it out (within `rect`, if given), write the PNG and its folder, close it."""
    fig.tight_layout(rect=rect)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _plt().close(fig)
    return path


# -- report figures: each takes plain arrays, returns the PNG path (None when there is nothing to plot)
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(names: list[str]) -> dict[str, tuple]:
    """One stable colour per line name across every panel and figure."""
    cmap = _plt().get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(sorted(names))}


def _line_styles(panels: dict[str, dict]) -> tuple[list[str], dict[str, tuple]]:
    """Every line name across the panels, sorted, and its colour: a name keeps its colour in every panel."""
    names = sorted({n for lines in panels.values() for n in lines})
    return names, _colors(names)


def _dashes(names: list[str]) -> dict[str, str]:
    """With more than 10 lines tab20 pairs a dark and a light shade: dash the light one."""
    return {name: "--" if len(names) > 10 and i % 2 else "-" for i, name in enumerate(sorted(names))}


def _grid(n: int, width: float = 4.6, height: float = 3.6):
    plt = _plt()
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.8), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _finish(fig, axes, names: list[str], colors: dict, path: Path, dashed: tuple[str, ...] = ()) -> Path:
    """One shared legend under the panels (readable with many algorithms), then save."""
    dashes = {**_dashes(names), **{n: "--" for n in dashed}}
    handles = [_plt().Line2D([], [], color=colors[n], ls=dashes[n], lw=2, label=n) for n in sorted(names)]
    label_in = 0.6 + 0.075 * max(len(n) for n in names)  # a handle and its text at fontsize 9
    fits = max(1, int(fig.get_figwidth() // label_in))
    ncol = min(len(handles), 7 if len(axes) >= 3 else 3 * len(axes) + 1, fits)
    legend_in = 0.3 + 0.25 * -(-len(handles) // ncol)  # inches the legend rows take
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    return save_figure(fig, path, dpi=110, rect=(0, legend_in / fig.get_figheight(), 1, 1))


def accuracy_curves(panels: dict[str, dict[str, tuple]], path: Path) -> Path | None:
    """Accuracy (%) vs round, one panel per setting, mean line and ± std band per algorithm."""
    if not any(panels.values()):
        return None
    names, colors = _line_styles(panels)
    fig, axes = _grid(len(panels))
    for ax, (panel, lines) in zip(axes, panels.items()):
        for name, (rounds, mean, std) in sorted(lines.items()):
            ax.plot(rounds, 100 * mean, color=colors[name], ls=_dashes(names)[name], lw=1.6)
            band = 0.18 if len(names) <= 4 else 0.08  # many overlapping bands: fainter
            ax.fill_between(rounds, 100 * (mean - std), 100 * (mean + std), color=colors[name], alpha=band, lw=0)
        ax.set(title=panel, xlabel="round", ylabel="test accuracy (%)")
        ax.xaxis.set_major_locator(_plt().MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return _finish(fig, axes, names, colors, path)


def accuracy_vs_bytes(panels: dict[str, dict[str, tuple]], path: Path) -> Path | None:
    """Accuracy (%) vs cumulative megabytes communicated (up + down)."""
    return _accuracy_against(panels, path, "communicated, up + down (MB, cumulative)")


def accuracy_vs_time(panels: dict[str, dict[str, tuple]], path: Path, target: float | None = None) -> Path | None:
    """Accuracy (%) vs the virtual clock's cumulative seconds (server/clock.py); `target` dotted."""
    return _accuracy_against(panels, path, "virtual time (s, cumulative)", target)


def _accuracy_against(panels: dict[str, dict[str, tuple]], path: Path, xlabel: str, target: float | None = None) -> Path | None:
    if not any(panels.values()):
        return None
    names, colors = _line_styles(panels)
    fig, axes = _grid(len(panels))
    for ax, (panel, lines) in zip(axes, panels.items()):
        for name, (x, acc) in sorted(lines.items()):
            ax.plot(x, 100 * acc, color=colors[name], ls=_dashes(names)[name], lw=1.6, marker=".", ms=4)
        if target is not None:
            ax.axhline(100 * target, color="grey", ls=":", lw=1)
        ax.set(title=panel, xlabel=xlabel, ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
    return _finish(fig, axes, names, colors, path)


def accuracy_vs_epsilon(panels: dict[str, dict[str, tuple]], path: Path) -> Path | None:
    """Accuracy (%) vs epsilon (log x): one line per privacy setting, runs without DP as dashed levels."""
    if not any(panels.values()):
        return None
    names, colors = _line_styles(panels)
    fig, axes = _grid(len(panels), width=8.0 if len(panels) == 1 else 5.6, height=4.2)
    for ax, (panel, lines) in zip(axes, panels.items()):
        for name, (eps, mean, std) in sorted(lines.items()):
            if eps is None:
                ax.axhline(100 * mean, color=colors[name], ls="--", lw=1.4)
                continue
            finite = np.isfinite(eps) & (eps > 0)
            eps, mean, std = eps[finite], mean[finite], std[finite]
            ax.plot(eps, 100 * mean, color=colors[name], lw=1.6, marker=".", ms=4)
            ax.fill_between(eps, 100 * (mean - std), 100 * (mean + std), color=colors[name], alpha=0.15, lw=0)
        ax.set_xscale("log")
        for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
            axis(_plt().FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set(title=panel, xlabel="ε spent (accountant, log scale)", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3, which="both")
    reference = tuple(n for lines in panels.values() for n, v in lines.items() if v[0] is None)
    return _finish(fig, axes, names, colors, path, dashed=reference)


def personal_boxes(panels: dict[str, dict[str, list[float]]], path: Path) -> Path | None:
    """Per-client personalized accuracy (%): one panel per setting, one box per algorithm, clients as dots."""
    if not panels:
        return None
    names, colors = _line_styles(panels)
    fig, axes = _grid(len(panels), width=max(4.6, 0.42 * len(names) + 1.5))
    rng = np.random.default_rng(0)
    for ax, (panel, lines) in zip(axes, panels.items()):
        order = sorted(lines)
        values = [100 * np.asarray(lines[n]) for n in order]
        box = ax.boxplot(values, showfliers=False, patch_artist=True, medianprops={"color": "black"})
        for patch, name in zip(box["boxes"], order):
            patch.set(facecolor=colors[name], alpha=0.35)
        for i, (name, v) in enumerate(zip(order, values), 1):
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=7, alpha=0.6, color=colors[name])
        ax.set_xticks(range(1, len(order) + 1), order, rotation=45 if len(order) > 3 else 0,
                      ha="right" if len(order) > 3 else "center", fontsize=8)
        ax.set(title=panel, ylabel="personalized accuracy per client (%)")
        ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path, dpi=110)


def per_class(panels: dict[str, tuple], path: Path) -> Path | None:
    """Final per-class accuracy (%) against the class's training samples (log x), per algorithm.

    Each panel is (class counts, line -> per-class accuracy, class names); with names (and at most
    20 classes) every class is a labelled tick ("cat 1077") at its sample count.
    """
    if not panels:
        return None
    names = sorted({n for _, lines, _ in panels.values() for n in lines})
    colors = _colors(names)
    fig, axes = _grid(len(panels), width=6.5 if len(panels) == 1 else 4.6, height=4.2 if len(panels) == 1 else 3.6)
    for ax, (panel, (counts, lines, class_names)) in zip(axes, panels.items()):
        order = np.argsort(counts)
        for name, acc in sorted(lines.items()):
            ax.plot(counts[order], 100 * np.asarray(acc)[order], color=colors[name], ls=_dashes(names)[name],
                    lw=1.4, marker="o", ms=3)
        ax.set_xscale("log")
        xlabel = "training samples of the class (log scale)"
        if len(class_names) == len(counts) <= 20:
            _class_ticks(ax, counts, class_names)
            xlabel = "class and its training samples (log scale)"
        ax.set(title=panel or "long-tailed", xlabel=xlabel, ylabel="per-class test accuracy (%)")
        ax.grid(alpha=0.3, which="both")
    return _finish(fig, axes, names, colors, path)


def _class_ticks(ax, counts: np.ndarray, class_names: tuple[str, ...]) -> None:
    """One x tick per distinct class count, labelled with the classes that have it."""
    from matplotlib.ticker import NullFormatter, NullLocator

    at: dict[float, list[str]] = {}
    for count, name in zip(counts, class_names):
        at.setdefault(float(count), []).append(name)
    ticks = sorted(at)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(ticks, [f"{'/'.join(at[t])} {t:.0f}" for t in ticks], rotation=60, ha="right", fontsize=7)
