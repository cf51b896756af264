"""FedNova's server half: FedAvg's weighted mean of the normalized updates, scaled by tau_eff.

Clients reply w + d_i with d_i = (w_i - w) / a_i and report a_i as `fednova/a`. Flower's FedAvg
averages both by num-examples (p_i = n_i / n): the mean model is w + sum p_i d_i and the mean
metric is tau_eff = sum p_i a_i. The new global model is w + tau_eff * sum p_i d_i.
"""

from __future__ import annotations

from flwr.app import Array, ArrayRecord

from flowerbed.strategies.flower import FedAvg, StepFromSent, is_float


class FedNova(StepFromSent, FedAvg):
    def step(self, sent, mean, metrics):
        tau_eff = float(metrics["fednova/a"])
        stepped = {}
        for key, array in mean.items():
            w, average = sent[key].numpy(), array.numpy()
            stepped[key] = Array(w + tau_eff * (average - w) if is_float(array) else average)
        return ArrayRecord(stepped)
