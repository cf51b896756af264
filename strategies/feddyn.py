"""FedDyn's server half: the clients' mean, corrected by the server state h.

h <- h - alpha (|P| / m) sum p_k (theta_k^t - theta^{t-1}), then theta^t = sum p_k theta_k^t - h / alpha,
with P the replies aggregated, m the number of clients and p_k = n_k / sum over P. h is an attribute,
so the round's checkpoint holds it. At alpha = 0 the step is the mean: FedAvg.

Choices where the paper is silent: its means over P are unweighted; here they are weighted by samples,
as FedAvg's is (so that alpha = 0 is flowerbed's FedAvg, and with every client taking part h is
sum_k p_k g_k, the clients' gradient states averaged as the objective weights them); BatchNorm running
statistics are plain averages (the clients keep no gradient state for them).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

from flowerbed.strategies.flower import FedAvg, StepFromSent, is_float

STATISTICS = ("running_mean", "running_var")  # BatchNorm buffers: averaged, never corrected


class FedDyn(StepFromSent, FedAvg):
    def __init__(self, alpha: float, **common) -> None:
        super().__init__(**common)
        self.alpha = alpha
        self.h: dict[str, np.ndarray] = {}

    def step(self, sent, mean, metrics):
        if self.alpha == 0:
            return mean
        share, stepped = self.participation(), ArrayRecord()
        for key, array in mean.items():
            if not is_float(array) or key.endswith(STATISTICS):
                stepped[key] = array
                continue
            average = array.numpy()
            self.h[key] = self.h.get(key, 0.0) - self.alpha * share * (average - sent[key].numpy())
            stepped[key] = Array(average - self.h[key] / self.alpha)
        return stepped
