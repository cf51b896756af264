"""FedNova: with equal local steps it is FedAvg; with local epochs it weights steps by samples."""

import math

from flowerbed.simulations import config
from flowerbed.tasks.partitions import build_federation
from tests.conftest import run


def test_with_equal_local_steps_fednova_is_fedavg(tmp_path):
    steps = ("train.local_epochs=0", "train.local_steps=5")
    fedavg = run(tmp_path / "fedavg", "algorithm=fedavg", *steps)
    fednova = run(tmp_path / "fednova", "algorithm=fednova", *steps)
    assert [r["fednova/a"] for r in fednova[1:]] == [5.0, 5.0]
    for a, b in zip(fedavg, fednova):
        assert math.isclose(a["global/loss"], b["global/loss"], rel_tol=1e-4)


def test_with_local_epochs_tau_eff_weights_each_clients_steps_by_its_samples(tmp_path):
    overrides = ["experiment=smoke", "train.local_epochs=2", "train.batch_size=16"]
    fednova = run(tmp_path / "fednova", "algorithm=fednova", *overrides[1:])
    sizes = [len(c.labeled) for c in build_federation(config.load(overrides)).clients]
    steps = [2 * math.ceil(n / 16) for n in sizes]
    assert len(set(steps)) > 1  # the clients really take different numbers of steps
    tau_eff = sum(n * s for n, s in zip(sizes, steps)) / sum(sizes)
    assert math.isclose(fednova[1]["fednova/a"], tau_eff, rel_tol=1e-6)
    assert fednova[-1]["global/acc"] > 0.2  # it learns (10 classes: 0.1 is chance)
