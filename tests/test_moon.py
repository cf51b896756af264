"""MOON: at mu = 0 it is FedAvg; the contrastive term pulls toward the global model, away from the previous one."""

import math

import torch

from flowerbed.clients.moon import contrastive
from tests.conftest import client_state, run, untimed


def test_at_mu_0_moon_is_fedavg_and_not_otherwise(tmp_path):
    fedavg = untimed(run(tmp_path / "fedavg", "algorithm=fedavg", "rounds=3"))
    assert untimed(run(tmp_path / "zero", "algorithm=moon", "algorithm.contrastive_mu=0", "rounds=3")) == fedavg
    moon = untimed(run(tmp_path / "moon", "algorithm=moon", "algorithm.contrastive_mu=5", "rounds=3"))
    # no previous model yet: the term is log 2 and its gradient zero (up to the rounding of two equal halves)
    assert math.isclose(moon[1]["train/loss"], fedavg[1]["train/loss"] + 5 * math.log(2), rel_tol=1e-5)
    assert math.isclose(moon[1]["global/loss"], fedavg[1]["global/loss"], rel_tol=1e-5)
    assert moon[2]["global/loss"] != fedavg[2]["global/loss"]
    # the previous local model is kept per client, and it is the model that client trained
    assert set(client_state(tmp_path / "moon", 0, 3, "moon/previous")) == set(client_state(tmp_path / "moon", 0, 2, "moon/previous"))


def test_contrastive_term_is_low_near_the_global_and_high_near_the_previous_representation():
    torch.manual_seed(0)
    z_glob, z_prev = torch.randn(8, 16), torch.randn(8, 16)
    assert math.isclose(float(contrastive(z_glob, z_glob, z_glob, 0.5)), math.log(2), rel_tol=1e-6)
    assert contrastive(z_glob, z_glob, z_prev, 0.5) < math.log(2) < contrastive(z_prev, z_glob, z_prev, 0.5)
