"""FedLoGe's server half: FedAvg on (backbone, psi), and three global models to evaluate.

Aggregation is Flower's FedAvg weighted by `num-examples`, which is exactly the paper's
theta, psi <- sum_k n_k (theta_k, psi_k) / sum_k n_k (BatchNorm buffers included). The personal
heads never arrive here. What differs is central evaluation, through the loop's
`central_evaluation` hook: the balanced test set is scored with
- `global/*`: the generic model, psi with class rows normalised (GLA-FR's global realignment);
- `global_raw/*`: psi as trained (to show what the realignment changes, tail classes first);
- `global_universal/*`: the frozen SSE-C, rebuilt here from the seed exactly as on the clients.
All three share the backbone, so the test set's features are computed once.
"""

from __future__ import annotations

from typing import Callable

import torch
from flwr.app import Array, ArrayRecord

from flowerbed.strategies.flower import FedAvg
from flowerbed.tasks import etf
from flowerbed.tasks.records import shallow_copy


class FedLoGe(FedAvg):
    def __init__(self, etf: dict, **common) -> None:
        super().__init__(**common)
        self.etf = etf

    def central_evaluation(self, evaluate: Callable[..., dict]) -> Callable[[ArrayRecord], dict]:
        def evaluate_all(arrays: ArrayRecord) -> dict:
            psi = torch.from_numpy(arrays["classifier.weight"].numpy().copy())
            bias = torch.from_numpy(arrays["classifier.bias"].numpy().copy())
            universal = etf.sse_c_for(arrays, self.seed, **self.etf)
            generic = with_head(arrays, etf.row_normalized(psi))
            return evaluate(generic, heads={"global_raw": (psi, bias), "global_universal": (universal, torch.zeros_like(bias))})

        return evaluate_all


def with_head(arrays: ArrayRecord, weight: torch.Tensor) -> ArrayRecord:
    """A copy of `arrays` whose linear head's weight is `weight`."""
    out = shallow_copy(arrays)
    out["classifier.weight"] = Array(weight.float().numpy())
    return out


def options(cfg: dict) -> dict:
    """SSE-C construction knobs, the same keys the clients read."""
    return {"etf": etf.options(cfg)}
