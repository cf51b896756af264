"""Training samples held out for pretraining a backbone, which the federation then never uses.

`flowerbed pretrain` trains the tiny ViT on `pretrain_indices(n, f)`; a run with
`partition.pretrain_fraction=f` removes the same indices from every client's pool. The split is
a fixed permutation (seed 0), independent of the run seed, so one checkpoint serves all seeds.
Indices are positions, so they name the same images only in the same copy of the data in the same
order (the Hub's CIFAR-10 and an image-folder copy order their samples differently):
`fingerprint` identifies the held-out images themselves, and a checkpoint records it.
"""

from __future__ import annotations

import hashlib

import numpy as np


def pretrain_indices(num_train: int, fraction: float) -> np.ndarray:
    count = int(round(fraction * num_train))
    return np.sort(np.random.default_rng([0, 5]).permutation(num_train)[:count])


def fingerprint(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> str:
    """A digest of the held-out samples: all their labels and every k-th image (about 256 of them)."""
    digest = hashlib.sha256(np.ascontiguousarray(y[idx]).tobytes())
    digest.update(np.ascontiguousarray(x[idx[:: max(1, len(idx) // 256)]]).tobytes())
    return digest.hexdigest()[:16]
