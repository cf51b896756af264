"""CCVR: summed client statistics are the pooled Gaussians; calibration changes only the head; training is FedAvg's."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from flowerbed.clients.ccvr import feature_statistics
from flowerbed.strategies.ccvr import CCVR, virtual_features
from tests.conftest import run


def _features(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=gen) * torch.arange(1.0, 7.0) + seed, torch.randint(0, 3, (n,), generator=gen)


def test_summed_client_statistics_give_the_pooled_mean_and_covariance():
    clients = [_features(s, n) for s, n in [(0, 40), (1, 300), (2, 7)]]
    summed = {}
    for h, y in clients:
        for k, v in feature_statistics(h, y, 3).items():
            summed[k] = summed.get(k, 0) + v
    h, y = torch.cat([c[0] for c in clients]).double(), torch.cat([c[1] for c in clients])
    x, labels = virtual_features(summed, 20000, torch.Generator().manual_seed(0))
    for c in range(3):
        pooled = h[y == c]
        assert summed["count"][c] == len(pooled)
        drawn = x[labels == c].double()
        assert torch.allclose(drawn.mean(0), pooled.mean(0), atol=0.1)
        assert torch.allclose(torch.cov(drawn.T), torch.cov(pooled.T), atol=0.1 * float(torch.cov(pooled.T).abs().max()))


def test_calibration_changes_the_head_and_leaves_the_body_bit_identical():
    body = {"features.0.weight": np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32), "features.0.bias": np.zeros(6, np.float32)}
    head = {"classifier.weight": np.zeros((3, 6), np.float32), "classifier.bias": np.zeros(3, np.float32)}
    arrays = ArrayRecord({k: Array(v) for k, v in {**body, **head}.items()})
    strategy = CCVR(virtual_per_class=50, calibration_epochs=2, calibration_lr=0.1)
    strategy.seed = 0
    h, y = _features(0, 90)
    strategy.stats, strategy.stats_round = feature_statistics(h, y, 3), 5
    seen = {}
    strategy.central_evaluation(lambda a, heads: seen.update(arrays=a, heads=heads) or {})(arrays)
    calibrated = seen["arrays"]
    for key in body:
        assert calibrated[key] is arrays[key]  # the same arrays, so the same bits
    assert not np.array_equal(calibrated["classifier.weight"].numpy(), head["classifier.weight"])
    assert np.array_equal(seen["heads"]["global_raw"][0].numpy(), head["classifier.weight"])  # FedAvg's own head scored beside it
    assert strategy.stats is None  # used once, not carried into the checkpoint


def test_training_is_fedavgs_and_the_calibrated_head_is_only_scored(tmp_path):
    fedavg = run(tmp_path / "fedavg", "algorithm=fedavg")
    ccvr = run(tmp_path / "ccvr", "algorithm=ccvr")
    for a, c in zip(fedavg, ccvr):
        assert c["global_raw/loss"] == a["global/loss"] and c.get("personal/acc") == a.get("personal/acc")
    assert ccvr[0]["global/acc"] == ccvr[0]["global_raw/acc"]  # round 0: nothing to calibrate from
    assert ccvr[-1]["global/acc"] != ccvr[-1]["global_raw/acc"]
