"""FedLoGe's server half: FedAvg on (backbone, psi), and three global models to evaluate.

Aggregation is Flower's FedAvg weighted by `num-examples`, which is exactly the paper's
theta, psi <- sum_k n_k (theta_k, psi_k) / sum_k n_k (BatchNorm buffers included). The personal
heads never arrive here. What differs is central evaluation, through the loop's
`central_evaluation` hook: the balanced test set is scored with
- `global/*`: the generic model, psi with class rows normalised (GLA-FR's global realignment);
- `global_raw/*`: psi as trained (to show what the realignment changes, tail classes first);
- `global_universal/*`: the frozen SSE-C, rebuilt here from the seed exactly as on the clients.
"""

from __future__ import annotations

from typing import Callable

import torch
from flwr.app import Array, ArrayRecord

from strategies.flower import FedAvg
from tasks.etf import row_normalized, sse_c
from tasks.records import shallow_copy


class FedLoGe(FedAvg):
    def __init__(self, etf: dict, **common) -> None:
        super().__init__(**common)
        self.etf = etf

    def central_evaluation(self, evaluate: Callable[[ArrayRecord], dict]) -> Callable[[ArrayRecord], dict]:
        def evaluate_all(arrays: ArrayRecord) -> dict:
            psi = arrays["classifier.weight"].numpy()
            out_dim, dim = psi.shape
            universal = sse_c(dim, out_dim, self.seed, **self.etf).numpy()
            metrics = evaluate(with_head(arrays, row_normalized(torch.from_numpy(psi.copy())).numpy()))
            metrics.update(renamed(evaluate(arrays), "global_raw"))
            metrics.update(renamed(evaluate(with_head(arrays, universal, bias=0.0)), "global_universal"))
            return metrics

        return evaluate_all


def with_head(arrays: ArrayRecord, weight, bias: float | None = None) -> ArrayRecord:
    """A copy of `arrays` whose linear head is `weight` (and, if given, a constant bias)."""
    out = shallow_copy(arrays)
    out["classifier.weight"] = Array(weight.astype("float32"))
    if bias is not None:
        out["classifier.bias"] = Array((arrays["classifier.bias"].numpy() * 0 + bias).astype("float32"))
    return out


def renamed(metrics: dict, prefix: str) -> dict:
    return {prefix + key[len("global"):]: value for key, value in metrics.items()}


def options(cfg: dict) -> dict:
    """SSE-C construction knobs, the same keys the clients read."""
    return {"etf": {"sparsity": float(cfg["algorithm.etf_sparsity"]), "norm": float(cfg["algorithm.etf_norm"]),
                    "steps": int(cfg["algorithm.etf_steps"]), "lr": float(cfg["algorithm.etf_lr"])}}
