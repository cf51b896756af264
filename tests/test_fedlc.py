"""FedLC: zero calibration is FedAvg; the shift follows n_c^(-1/4); calibration lifts the rare classes."""

from __future__ import annotations

import pytest
import torch

from flowerbed.clients.fedlc import ABSENT_COUNT, calibrated_cross_entropy, calibration, label_counts
from tests.conftest import run, untimed


def test_with_zero_calibration_fedlc_is_fedavg(tmp_path):
    fedavg = run(tmp_path / "fedavg", "algorithm=fedavg", "train.momentum=0.5")
    fedlc = run(tmp_path / "fedlc", "algorithm=fedlc", "algorithm.calibration_tau=0", "train.momentum=0.5")
    assert untimed(fedlc) == untimed(fedavg)
    calibrated = run(tmp_path / "fedlc-1", "algorithm=fedlc", "algorithm.calibration_tau=1", "train.momentum=0.5")
    assert calibrated[-1]["global/loss"] != fedavg[-1]["global/loss"]  # tau really enters the loss


def test_shift_is_tau_times_count_to_the_minus_quarter_and_absent_classes_drop_out():
    counts = label_counts(torch.tensor([0] * 16 + [1] * 81 + [3]), 4)
    assert counts.tolist() == pytest.approx([16.0, 81.0, ABSENT_COUNT, 1.0])
    shift = calibration(counts, 2.0)
    assert torch.allclose(shift[[0, 1, 3]], torch.tensor([1.0, 2 / 3, 2.0]))
    assert shift[2] > 100  # the absent class is pushed out of the local softmax
    logits = torch.zeros(1, 4, requires_grad=True)
    calibrated_cross_entropy(logits, torch.tensor([0]), shift).backward()
    assert abs(logits.grad[0, 2].item()) < 1e-30  # ... and gets no gradient from this client
    assert logits.grad[0, 1] > 0 and logits.grad[0, 3] > 0  # present classes are still negatives


def test_calibration_lifts_the_rare_classes_of_a_long_tailed_federation(tmp_path):
    setting = ("experiment=fedloge-small", "rounds=20")  # long-tailed digits: IF 20, Dir(0.5) over 10 clients
    fedavg = run(tmp_path / "fedavg", *setting, "algorithm=fedavg")
    fedlc = run(tmp_path / "fedlc", *setting, "algorithm=fedlc")
    assert fedlc[-1]["global/acc_few"] > fedavg[-1]["global/acc_few"]
