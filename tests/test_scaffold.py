"""SCAFFOLD: with zero control variates it is FedAvg; after a round, c is the clients' c_i averaged."""

import numpy as np

from tests.conftest import client_state, run, sample_shares, strategy_state, untimed


def test_first_round_with_zero_control_variates_is_fedavg_and_later_rounds_are_not(tmp_path):
    fedavg = untimed(run(tmp_path / "fedavg", "algorithm=fedavg", "rounds=3"))
    scaffold = untimed(run(tmp_path / "scaffold", "algorithm=scaffold", "rounds=3"))
    model_only = {k: v for k, v in scaffold[1].items() if not k.startswith("comm/")}
    assert model_only == {k: v for k, v in fedavg[1].items() if not k.startswith("comm/")}  # c = c_i = 0: bit for bit
    assert scaffold[2]["global/loss"] != fedavg[2]["global/loss"]  # the correction acts from round 2
    # c travels down from round 2 and dc_i up every round: each twice the model's bytes
    assert scaffold[1]["comm/bytes_down"] == fedavg[1]["comm/bytes_down"]
    assert scaffold[2]["comm/bytes_down"] > 1.9 * fedavg[2]["comm/bytes_down"]
    assert scaffold[1]["comm/bytes_up"] > 1.9 * fedavg[1]["comm/bytes_up"]


def test_with_every_client_taking_part_c_is_the_sample_weighted_mean_of_the_c_i(tmp_path):
    run(tmp_path / "scaffold", "algorithm=scaffold", "rounds=2")
    c = strategy_state(tmp_path / "scaffold")["c"]
    shares = sample_shares()
    own = [client_state(tmp_path / "scaffold", k, 2, "scaffold/c_i") for k in range(len(shares))]
    assert set(c) == set(own[0]) and "classifier.weight" in c
    for name, value in c.items():
        assert np.abs(value).max() > 0
        np.testing.assert_allclose(value, sum(p * o[name].numpy() for p, o in zip(shares, own)), rtol=1e-4, atol=1e-6)
