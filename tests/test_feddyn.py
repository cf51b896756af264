"""FedDyn: at alpha = 0 it is FedAvg; otherwise the server state h is the clients' gradient states averaged."""

import numpy as np

from tests.conftest import client_state, run, sample_shares, strategy_state, untimed


def test_at_alpha_0_feddyn_is_fedavg_and_not_otherwise(tmp_path):
    fedavg = untimed(run(tmp_path / "fedavg", "algorithm=fedavg", "rounds=3"))
    assert untimed(run(tmp_path / "zero", "algorithm=feddyn", "algorithm.dyn_alpha=0", "rounds=3")) == fedavg
    feddyn = untimed(run(tmp_path / "feddyn", "algorithm=feddyn", "algorithm.dyn_alpha=0.1", "rounds=3"))
    assert feddyn[1]["global/loss"] != fedavg[1]["global/loss"]  # the drift term and h act from round 1


def test_with_every_client_taking_part_h_is_the_sample_weighted_mean_of_the_gradient_states(tmp_path):
    run(tmp_path / "feddyn", "algorithm=feddyn", "algorithm.dyn_alpha=0.1", "rounds=2")
    h = strategy_state(tmp_path / "feddyn")["h"]
    shares = sample_shares()
    grads = [client_state(tmp_path / "feddyn", k, 2, "feddyn/grad") for k in range(len(shares))]
    assert set(h) == set(grads[0]) and "classifier.weight" in h
    for name, value in h.items():
        assert np.abs(value).max() > 0
        np.testing.assert_allclose(value, sum(p * g[name].numpy() for p, g in zip(shares, grads)), rtol=1e-4, atol=1e-7)
