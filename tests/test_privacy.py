"""Differential privacy (central, adaptive, local) and secure aggregation, on smoke-sized runs."""

from __future__ import annotations

import json
import math

import pytest
from scipy.stats import norm

from flowerbed.strategies.privacy import Accountant
from tests.conftest import flowerbed, read_metrics, run
from tests.test_deploy import processes  # noqa: F401 (the fixture that stops every process started)

BAD_INPUTS = [
    (["privacy=central", "privacy.noise_multiplier=-1"], "privacy.noise_multiplier=-1 is not valid: a number >= 0"),
    (["privacy=central", "privacy.clipping_norm=0"], "privacy.clipping_norm=0 is not valid: a number > 0"),
    (["privacy=local", "privacy.clipping_norm=-0.5"], "privacy.clipping_norm=-0.5 is not valid: a number > 0"),
    (["privacy=central", "privacy.delta=0"], "privacy.delta=0 is not valid: auto or a number in (0, 1)"),
    (["privacy=central", "privacy.delta=1"], "privacy.delta=1 is not valid: auto or a number in (0, 1)"),
    (["privacy=central", "privacy.delta=1.5"], "privacy.delta=1.5 is not valid: auto or a number in (0, 1)"),
    (["privacy=central", "privacy.target_epsilon=0"], "privacy.target_epsilon=0 is not valid: none or a number > 0"),
    (["privacy=local", "privacy.target_epsilon=-2"], "privacy.target_epsilon=-2 is not valid: none or a number > 0"),
    (["privacy=central", "algorithm=krum"], "privacy.name='central' is not valid: none for krum: its server does not average"),
    (["privacy=local", "algorithm=pfedpg"], "privacy.name='local' is not valid: none for pfedpg: it has no global model"),
    (["privacy=central", "algorithm.aggregation=median"], "algorithm.aggregation='median' is not valid: mean with privacy.name=central"),
    (["privacy=central", "model=resnet8"], "model.name='resnet8' is not valid: a model without integer buffers"),
    (["privacy=central", "privacy.secagg=true"], "privacy.clipping='server' is not valid: client with privacy.secagg=true"),
    (["privacy.target_epsilon=3"], "privacy.target_epsilon=3.0 is not valid: none with privacy=none (no budget is spent)"),
    (["privacy=central-adaptive", "clients.num=4"], "privacy.noise_multiplier=1.0 is not valid: below 2 * privacy.clipped_count_stddev"),
]


@pytest.mark.parametrize("overrides,message", BAD_INPUTS)
def test_bad_privacy_settings_are_one_line_and_exit_2(overrides, message, capsys, tmp_path):
    assert flowerbed("run", "experiment=smoke", *overrides, f"output.dir={tmp_path}/r") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()  # nothing written


def gaussian_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """The exact epsilon of `releases` Gaussian mechanisms (Balle & Wang 2018; a composition of
    Gaussians is the Gaussian with mu = sqrt(releases) / noise_multiplier), by bisection."""
    mu = math.sqrt(releases) / noise_multiplier

    def delta_at(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)

    low, high = 0.0, 500.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if delta_at(mid) > delta else (low, mid)
    return high


@pytest.mark.parametrize("z,releases", [(1.0, 10), (2.0, 30), (4.0, 30)])
def test_the_accountant_bounds_the_exact_gaussian_epsilon_closely(z, releases):
    """Full participation is the Gaussian mechanism composed: RDP is an upper bound, within 35%."""
    accountant = Accountant(z, 100, 100, amplified=False)
    accountant.delta = 1e-3
    exact = gaussian_epsilon(z, releases, 1e-3)
    assert exact <= accountant.epsilon(releases) <= 1.35 * exact


def test_sampling_clients_amplifies_privacy():
    """Ten of a hundred clients a round spend less than all of them, and more as the share grows: the
    sampled accountant is wired to the sample, not to the whole population."""
    def sampled(k: int) -> float:
        accountant = Accountant(1.0, k, 100, amplified=True)
        accountant.delta = 1e-3
        return accountant.epsilon(30)

    everyone = Accountant(1.0, 100, 100, amplified=False)
    everyone.delta = 1e-3
    assert sampled(5) < sampled(10) < sampled(50) < everyone.epsilon(30)
    assert sampled(10) < everyone.epsilon(30) / 3


def test_central_dp_spends_epsilon_round_by_round_and_its_noise_is_the_runs(tmp_path):
    """Clipped on the server or by Flower's fixedclipping_mod on the clients: the same clipping and the
    same noise, drawn from the run's seed; the accountant's epsilon after every round."""
    overrides = ("privacy=central", "privacy.noise_multiplier=0.5", "privacy.clipping_norm=0.5", "rounds=3")
    server = run(tmp_path / "a", *overrides)
    client = run(tmp_path / "b", *overrides, "privacy.clipping=client")
    clean = run(tmp_path / "c", *overrides, "privacy.noise_multiplier=0")
    assert [r["global/loss"] for r in server] == pytest.approx([r["global/loss"] for r in client], abs=1e-6)
    assert server[-1]["global/loss"] != pytest.approx(clean[-1]["global/loss"], abs=1e-3)  # and there is noise
    accountant = Accountant(0.5, 4, 4, amplified=False)  # smoke: 4 clients, all every round
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    accountant.delta = summary["privacy/delta"]
    assert summary["privacy/delta"] == pytest.approx(1 / 1437)  # 1 / the federation's training samples
    assert [r["privacy/epsilon"] for r in server] == [accountant.epsilon(k) for k in range(4)]
    assert summary["privacy/epsilon"] == server[-1]["privacy/epsilon"] > 0
    assert all(r["privacy/epsilon"] is None for r in clean[1:])  # no noise: no finite epsilon


@pytest.mark.parametrize("mode", [("privacy=central", "privacy.clipping=client"), ("privacy=local",)])
def test_client_side_privacy_gives_the_same_numbers_on_the_batched_engine(tmp_path, mode, capsys):
    overrides = (*mode, "privacy.noise_multiplier=0.1", "privacy.clipping_norm=0.3")
    sequential, batched = run(tmp_path / "s", *overrides), run(tmp_path / "b", *overrides, "engine=batched")
    assert len(sequential) == len(batched) == 3 and capsys.readouterr().err.count("one after another") == 0
    for a, b in zip(sequential, batched):
        assert a["global/loss"] == pytest.approx(b["global/loss"], abs=1e-4), a["round"]
        assert a["privacy/epsilon"] == b["privacy/epsilon"]


def test_local_dp_accounts_the_most_sampled_client(tmp_path):
    metrics = run(tmp_path / "r", "privacy=local", "privacy.noise_multiplier=2", "clients.fraction_train=0.5", "rounds=3")
    sampled = {}  # the clients of each round, as the server draws them
    import random

    for rnd in (1, 2, 3):
        for c in random.Random(f"0/{rnd}/train").sample(range(4), 2):
            sampled[c] = sampled.get(c, 0) + 1
    accountant = Accountant(1.0, 1, 1, amplified=False)  # each client's own release: z / 2 (replace-one)
    accountant.delta = 1 / 1437
    assert metrics[-1]["privacy/epsilon"] == accountant.epsilon(max(sampled.values()))


def test_target_epsilon_stops_the_run_and_a_larger_budget_resumes_it(tmp_path, capsys):
    overrides = ("privacy=central-adaptive", "privacy.noise_multiplier=0.1", "privacy.clipped_count_stddev=1", "rounds=3")
    accountant = Accountant(0.1, 4, 4, amplified=False)
    accountant.delta = 1 / 1437
    target = (accountant.epsilon(1) + accountant.epsilon(2)) / 2
    stopped = run(tmp_path / "r", *overrides, f"privacy.target_epsilon={target}")
    assert [r["round"] for r in stopped] == [0, 1]
    err = [line for line in capsys.readouterr().err.splitlines() if "privacy budget" in line]
    assert len(err) == 1 and "stopped before round 2" in err[0], err
    assert (tmp_path / "r" / "summary.json").exists() and (tmp_path / "r" / "checkpoints" / "server.pt").exists()
    resumed = run(tmp_path / "r", *overrides, "resume=true")
    straight = run(tmp_path / "s", *overrides)
    assert [r["global/loss"] for r in resumed] == [r["global/loss"] for r in straight]  # noise and clip norm resumed
    assert [r["privacy/clipping_norm"] for r in resumed[1:]] == [r["privacy/clipping_norm"] for r in straight[1:]]


def test_secure_aggregation_gives_the_plain_mean_up_to_quantization(tmp_path):
    """Flower's SecAgg+ (workflow and mod, unchanged) serving FedAvg: the server only unmasks the sum,
    and the model is FedAvg's to SecAgg+'s 2^22-level quantization."""
    plain, secure = run(tmp_path / "p"), run(tmp_path / "s", "privacy.secagg=true")
    # each weight within ~4e-6 after round 1 (16 / 2^22); training then spreads that a little
    assert [r["global/loss"] for r in secure] == pytest.approx([r["global/loss"] for r in plain], abs=1e-4)
    assert secure[-1]["clients/trained"] == 4
    assert secure[-1]["comm/bytes_up"] > plain[-1]["comm/bytes_up"]  # masked vectors, keys and shares


def test_secure_aggregation_under_central_dp_with_client_clipping(tmp_path):
    overrides = ("privacy=central", "privacy.clipping=client", "privacy.noise_multiplier=0.3", "privacy.clipping_norm=0.2")
    plain, secure = run(tmp_path / "p", *overrides), run(tmp_path / "s", *overrides, "privacy.secagg=true")
    assert [r["global/loss"] for r in secure] == pytest.approx([r["global/loss"] for r in plain], abs=1e-4)
    assert [r["privacy/epsilon"] for r in secure] == [r["privacy/epsilon"] for r in plain]
    assert read_metrics(tmp_path / "s")[-1]["privacy/zero_updates"] == 0


def test_secure_aggregation_with_central_dp_deployed_on_loopback(tmp_path, processes):
    """A real SuperLink (TLS, node authentication) and two SuperNodes: SecAgg+ under central DP
    with client-side clipping gives the sequential engine's numbers. Kept to one round and two
    nodes: every SecAgg+ stage is a fresh ClientApp process on each node."""
    from flowerbed.simulations import config
    from tests.test_deploy import Federation, close

    overrides = ["model=mlp", "clients.num=2", "rounds=1", "train.local_epochs=1", "clients.timeout=120",
                 "privacy=central", "privacy.clipping=client", "privacy.noise_multiplier=0.3", "privacy.clipping_norm=0.2",
                 "privacy.secagg=true"]
    flat = config.load([*overrides, f"output.dir={tmp_path / 'deployed'}"])
    fed = Federation(tmp_path, processes, flat, nodes=2)
    for k in range(2):
        fed.supernode(k, f"node-{k}")
    submitted = fed.submit()
    assert submitted.wait(300) == 0, (fed.logs / "flwr-run.log").read_text()[-3000:]
    assert fed.statuses() == ["finished:completed"]
    assert flowerbed("run", *overrides, f"output.dir={tmp_path / 'seq'}") == 0
    deployed, sequential = read_metrics(tmp_path / "deployed"), read_metrics(tmp_path / "seq")
    assert deployed[-1]["clients/trained"] == 2 and deployed[-1]["privacy/epsilon"] > 0
    # the stochastic quantization is seeded per (run, round, client), so even that agrees
    for a, b in zip(sequential, deployed):
        assert close(a, b) == [], a["round"]


def test_a_client_without_a_usable_update_counts_as_a_zero_update(tmp_path):
    """The fixed-denominator estimator: the noise stays calibrated for the m sampled clients and
    every round releases (and spends), whichever client failed."""
    metrics = run(tmp_path / "r", "privacy=central", "privacy.noise_multiplier=0.5", "faults.raise_fraction=0.25", "rounds=3")
    assert [r["clients/failures"] for r in metrics[1:]] == [r["privacy/zero_updates"] for r in metrics[1:]]
    assert sum(r["privacy/zero_updates"] for r in metrics[1:]) > 0
    accountant = Accountant(0.5, 4, 4, amplified=False)
    accountant.delta = 1 / 1437
    assert [r["privacy/epsilon"] for r in metrics] == [accountant.epsilon(k) for k in range(4)]
