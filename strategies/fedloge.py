"""FedLoGe's server half: FedAvg on (backbone, psi), and three global models to evaluate.

Aggregation is Flower's FedAvg weighted by `num-examples`, which is exactly the paper's
theta, psi <- sum_k n_k (theta_k, psi_k) / sum_k n_k (BatchNorm buffers included). The personal
heads never arrive here. What differs is central evaluation: the balanced test set is scored with
- `global/*`: the generic model, psi with class rows normalised (GLA-FR's global realignment);
- `global_raw/*`: psi as trained (to show what the realignment changes, tail classes first);
- `global_universal/*`: the frozen SSE-C, rebuilt here from the seed exactly as on the clients.
The three models are `heads`; two paths score them. flowerbed's loop uses `central_evaluation`,
which computes the test set's features once for all three (they share the backbone). Flower's
`Strategy.start(..., evaluate_fn=f)` gets `central_evaluate_fn(f)`: `f` is called on each of the
three models, its keys renamed as above (`global/x` -> `global_raw/x`, any other `x` ->
`global_raw/x`). The personal heads are scored by the clients (`personal/acc` in their replies).
"""

from __future__ import annotations

from typing import Callable

import torch
from flwr.app import Array, ArrayRecord, MetricRecord

from flowerbed.strategies.flower import FedAvg
from flowerbed.tasks import etf
from flowerbed.tasks.records import shallow_copy


class FedLoGe(FedAvg):
    def __init__(self, etf: dict, **common) -> None:
        super().__init__(**common)
        self.etf = etf

    def heads(self, arrays: ArrayRecord) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The three global models' linear heads (weight, bias) on the aggregated backbone, by metric prefix."""
        psi = torch.from_numpy(arrays["classifier.weight"].numpy().copy())
        bias = torch.from_numpy(arrays["classifier.bias"].numpy().copy())
        universal = etf.sse_c_for(arrays, self.seed, **self.etf)
        return {"global": (etf.row_normalized(psi), bias), "global_raw": (psi, bias),
                "global_universal": (universal, torch.zeros_like(bias))}

    def central_evaluation(self, evaluate: Callable[..., dict]) -> Callable[[ArrayRecord], dict]:
        """flowerbed's loop: one pass of the backbone over the test set, three heads on its features."""
        def evaluate_all(arrays: ArrayRecord) -> dict:
            heads = self.heads(arrays)
            generic = with_head(arrays, *heads.pop("global"))
            return evaluate(generic, heads=heads)

        return evaluate_all

    def central_evaluate_fn(self, evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None]):
        """Flower's `evaluate_fn`, called on each of the three global models and merged into one record."""
        def evaluate_all(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            merged: dict = {}
            for prefix, head in self.heads(arrays).items():
                scores = evaluate_fn(server_round, with_head(arrays, *head))
                merged.update({renamed(key, prefix): value for key, value in (scores or {}).items()})
            return MetricRecord(merged) if merged else None

        return evaluate_all


def renamed(key: str, prefix: str) -> str:
    """A metric of the model `prefix` names: `global/acc` -> `global_raw/acc`, `accuracy` -> `global_raw/accuracy`."""
    if prefix == "global":
        return key
    return prefix + key[len("global"):] if key.startswith("global/") else f"{prefix}/{key}"


def with_head(arrays: ArrayRecord, weight: torch.Tensor, bias: torch.Tensor | None = None) -> ArrayRecord:
    """A copy of `arrays` whose linear head is `weight` (and `bias`, if given)."""
    out = shallow_copy(arrays)
    out["classifier.weight"] = Array(weight.float().numpy())
    if bias is not None:
        out["classifier.bias"] = Array(bias.float().numpy())
    return out


def options(cfg: dict) -> dict:
    """SSE-C construction knobs, the same keys the clients read."""
    return {"etf": etf.options(cfg)}
