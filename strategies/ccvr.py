"""CCVR's server half: FedAvg, and at each evaluation the head recalibrated on virtual features.

Training is FedAvg's and the checkpointed global model stays FedAvg's (CCVR is post-hoc: the
calibrated head is only scored, never sent). At each evaluation round the clients reply with
per-class feature statistics of the global model (clients/ccvr.py); summed here they give each
class's pooled mean mu_c and covariance Sigma_c. The server then draws `algorithm.virtual_per_class`
virtual features per class from N(mu_c, Sigma_c) and retrains the linear head (`classifier`) on
them with cross-entropy, starting from the averaged head; the body is untouched. `global/*` scores
that calibrated model, `global_raw/*` FedAvg's own (one pass over the test set's features).

Choices where the paper is silent or loose:
- the same number of virtual features for every class seen by any client (balanced, as the paper's
  experiments use); a class no client holds gets none (its row is still trained as a negative);
- Sigma_c is the unbiased pooled covariance ((n_c - 1) in the denominator; n_c = 1 gives a point
  mass), sampled through its eigendecomposition with negative eigenvalues (round-off) clamped to 0;
- the head is retrained for `algorithm.calibration_epochs` passes of mini-batches of 64 by SGD with
  `algorithm.calibration_lr` and momentum 0.9; the draws and the shuffles are seeded by
  (seed, round), so a run repeats exactly;
- round 0 (no statistics yet) scores the uncalibrated model under both names;
- the statistics travel in the clear, as in the paper: `privacy.*` protects the trained models only.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from flowerbed.strategies.flower import FedAvg
from flowerbed.tasks.records import shallow_copy, tensors

STATS = "ccvr"  # the evaluate replies' record of feature statistics (clients/ccvr.py writes it)
BATCH, MOMENTUM = 64, 0.9
HEAD = ("classifier.weight", "classifier.bias")


class CCVR(FedAvg):
    def __init__(self, virtual_per_class: int, calibration_epochs: int, calibration_lr: float, **common) -> None:
        super().__init__(**common)
        self.virtual_per_class, self.calibration_epochs, self.calibration_lr = virtual_per_class, calibration_epochs, calibration_lr
        self.stats: dict[str, torch.Tensor] | None = None  # this evaluation's summed statistics
        self.stats_round = 0

    def aggregate_evaluate(self, server_round, replies):
        replies = list(replies)
        records = [tensors(m.content[STATS]) for m in replies if not m.has_error() and STATS in m.content]
        self.stats = {k: sum(r[k] for r in records) for k in records[0]} if records else None
        self.stats_round = server_round
        return super().aggregate_evaluate(server_round, replies)

    def central_evaluation(self, evaluate: Callable[..., dict]) -> Callable[[ArrayRecord], dict]:
        def evaluate_calibrated(arrays: ArrayRecord) -> dict:
            raw = tuple(torch.from_numpy(arrays[k].numpy().copy()) for k in HEAD)
            stats, self.stats = self.stats, None  # used once; not worth a place in the checkpoint
            calibrated = arrays
            if stats is not None:
                gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.stats_round]).generate_state(1)[0]))
                x, y = virtual_features(stats, self.virtual_per_class, gen)
                calibrated = with_head(arrays, *retrain_head(*raw, x, y, self.calibration_epochs, self.calibration_lr, gen))
            return evaluate(calibrated, heads={"global_raw": raw})

        return evaluate_calibrated


def virtual_features(stats: dict[str, torch.Tensor], per_class: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` draws from N(mu_c, Sigma_c) for every class with samples, and their labels."""
    xs, ys = [], []
    for c, n in enumerate(stats["count"].tolist()):
        if n < 1:
            continue
        mean = stats["sum"][c] / n
        cov = (stats["outer"][c] - n * torch.outer(mean, mean)) / max(n - 1, 1)
        values, vectors = torch.linalg.eigh((cov + cov.T) / 2)
        scale = vectors * values.clamp(min=0).sqrt()
        z = torch.randn(per_class, len(mean), generator=gen, dtype=torch.float64)
        xs.append((mean + z @ scale.T).float())
        ys.append(torch.full((per_class,), c))
    return torch.cat(xs), torch.cat(ys)


def retrain_head(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear head (weight, bias) after `epochs` of SGD with cross-entropy on (x, y)."""
    head = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight), head.bias.copy_(bias)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=MOMENTUM)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(BATCH):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(head(x[idx]), y[idx]).backward()
            optimizer.step()
    return head.weight.detach(), head.bias.detach()


def with_head(arrays: ArrayRecord, weight: torch.Tensor, bias: torch.Tensor) -> ArrayRecord:
    """A copy of `arrays` holding the same body arrays and the given head."""
    out = shallow_copy(arrays)
    out[HEAD[0]], out[HEAD[1]] = Array(weight.float().numpy()), Array(bias.float().numpy())
    return out


def options(cfg: dict) -> dict:
    return {"virtual_per_class": int(cfg["algorithm.virtual_per_class"]), "calibration_epochs": int(cfg["algorithm.calibration_epochs"]),
            "calibration_lr": float(cfg["algorithm.calibration_lr"])}
