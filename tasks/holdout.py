"""Training samples held out for pretraining a backbone, which the federation then never uses.

`flowerbed pretrain` trains the tiny ViT on `pretrain_indices(n, f)`; a run with
`partition.pretrain_fraction=f` removes the same indices from every client's pool. The split is
a fixed permutation (seed 0), independent of the run seed, so one checkpoint serves all seeds.
"""

from __future__ import annotations

import numpy as np


def pretrain_indices(num_train: int, fraction: float) -> np.ndarray:
    count = int(round(fraction * num_train))
    return np.sort(np.random.default_rng([0, 5]).permutation(num_train)[:count])
