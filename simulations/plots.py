"""Figures: a partition heat map (more figures arrive with `flowerbed report`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def partition_heatmap(counts: np.ndarray, title: str, path: Path) -> Path:
    """Clients x classes heat map of training-sample counts, each cell labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients, classes = counts.shape
    fig, ax = plt.subplots(figsize=(max(5, 0.55 * classes + 2), max(3, 0.35 * clients + 1.5)))
    image = ax.imshow(counts, aspect="auto", cmap="viridis")
    ax.set_xlabel("class")
    ax.set_ylabel("client (partition id)")
    ax.set_xticks(range(classes))
    ax.set_yticks(range(clients) if clients <= 40 else np.linspace(0, clients - 1, 10, dtype=int))
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="training samples")
    if clients * classes <= 600:
        threshold = counts.max() / 2
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7, color="black" if value > threshold else "white")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
