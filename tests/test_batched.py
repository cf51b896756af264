"""The `batched` engine computes the same rounds as `sequential` (to float tolerance 1e-4)."""

from __future__ import annotations

import math

import pytest

from tests.conftest import run, untimed

TOL = 1e-4  # vmapped gradients sum in another order than one client's backward pass


def assert_same_rounds(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        keys = {k for k in ra if not k.startswith("time/")}
        assert keys == {k for k in rb if not k.startswith("time/")}
        for k in keys:
            va, vb = ra[k], rb[k]
            assert not isinstance(va, list) or len(va) == len(vb), f"round {ra['round']} {k}"
            pairs = zip(va, vb) if isinstance(va, list) else [(va, vb)]
            for x, y in pairs:
                assert math.isclose(x, y, rel_tol=TOL, abs_tol=TOL), f"round {ra['round']} {k}: {x} vs {y}"


# Random continuous pixels: digits' integer pixels make exact max-pool ties, whose tie-break flips
# with a 1e-8 perturbation and can move a trajectory by more than the tolerance (see bench.md).
FAKE = ["dataset=fake-images", "dataset.shape=3x8x8", "dataset.num_train=600", "dataset.num_test=120"]
CASES = {
    # the default smoke run (digits, Dirichlet sizes, short last batches)
    "fedavg-digits": ["algorithm=fedavg"],
    # unequal client sizes (Dirichlet), a short last batch, momentum and weight decay as torch SGD
    "fedavg-momentum": [*FAKE, "algorithm=fedavg", "train.momentum=0.9", "train.weight_decay=0.001", "train.batch_size=7"],
    "fedprox": [*FAKE, "algorithm=fedprox", "algorithm.proximal_mu=0.5", "train.local_steps=5", "train.local_epochs=0"],
    # FedLC: each client's own calibration shift from its label counts
    "fedlc": [*FAKE, "algorithm=fedlc", "algorithm.calibration_tau=0.5", "train.momentum=0.5"],
    # personal heads phi_k in context.state, the frozen SSE-C shared, three losses in one step
    "fedloge": [*FAKE, "algorithm=fedloge", "train.momentum=0.5"],
    # FedLabel: two stacked runs, pseudo-labels and strong views in between, r_k weights
    "fedlabel": [*FAKE, "algorithm=fedlabel", "partition.labeled_fraction=0.3", "algorithm.beta=0.2", "algorithm.tau_l=4", "algorithm.tau_u=5",
                 "train.batch_size=8"],
    "fedlabel-resnet8": [*FAKE, "algorithm=fedlabel", "model=resnet8", "partition.labeled_fraction=0.3", "algorithm.beta=0.15",
                         "algorithm.tau_l=3", "algorithm.tau_u=3", "train.batch_size=8", "clients.fraction_train=0.5"],
    # FedNova: unequal step counts (Dirichlet sizes) and momentum in a_i, normalized in place on the stack
    "fednova": [*FAKE, "algorithm=fednova", "train.momentum=0.5"],
    # FedDyn: anchors and gradient states per client, g_k written back to client state
    "feddyn": [*FAKE, "algorithm=feddyn", "algorithm.dyn_alpha=0.1", "train.momentum=0.5"],
    # SCAFFOLD: c from the message, c_i from client state, partial participation, lr_g != 1
    "scaffold": [*FAKE, "algorithm=scaffold", "clients.fraction_train=0.5", "algorithm.server_lr=0.8", "rounds=4"],
    # MOON and Ditto keep a second model: no batched form, the ClientApp per message (FALLS_BACK)
    "moon": [*FAKE, "algorithm=moon"],
    "ditto": [*FAKE, "algorithm=ditto"],
    # train.augment draws views per client: the engine hands the round to the ClientApp (FALLS_BACK)
    "fedavg-augment": [*FAKE, "algorithm=fedavg", "train.augment=strong"],
    # BatchNorm: running statistics per client
    "fedavg-resnet8": [*FAKE, "algorithm=fedavg", "model=resnet8", "train.local_epochs=1", "clients.fraction_train=0.5"],
}
FALLS_BACK = {"fedavg-augment", "moon", "ditto"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_matches_sequential(tmp_path, case, capsys):
    common = ["rounds=3", "clients.num=6", *CASES[case]]
    sequential = run(tmp_path / "sequential", "engine=sequential", *common)
    capsys.readouterr()
    batched = run(tmp_path / "batched", "engine=batched", *common)
    # the batched form ran (or, for FALLS_BACK, the engine said it did not): not sequential against itself
    assert ("one after another" in capsys.readouterr().err) == (case in FALLS_BACK)
    assert sequential[-1]["round"] >= 3 and batched[-1]["clients/trained"] == sequential[-1]["clients/trained"] > 0
    assert_same_rounds(sequential, batched)


def test_batched_really_batches_and_falls_back(tmp_path, monkeypatch, capsys):
    """With the batched form removed the engine runs the ClientApp per message: the same numbers
    bit for bit, and a one-line notice; with it, no notice and the same numbers to float tolerance."""
    import flowerbed.clients.batched

    common = [*FAKE, "rounds=2", "train.momentum=0.5"]
    sequential = run(tmp_path / "sequential", "engine=sequential", *common)
    capsys.readouterr()
    batched = run(tmp_path / "batched", "engine=batched", *common)
    assert "one after another" not in capsys.readouterr().err
    monkeypatch.setattr(flowerbed.clients.batched, "BATCHED", {})
    fallback = run(tmp_path / "fallback", "engine=batched", *common)
    assert "has no batched form" in capsys.readouterr().err
    assert untimed(fallback) == untimed(sequential)
    assert_same_rounds(batched, sequential)


def test_engine_compile_must_be_boolean(tmp_path):
    from tests.conftest import flowerbed

    assert flowerbed("run", "experiment=smoke", "engine=batched", "engine.compile=maybe", f"output.dir={tmp_path}") == 2


def test_bench_runs_engines_in_children_and_rejects_bad_input(tmp_path):
    """A two-round B2 on 4 clients in a child process, and once more under cProfile: the row, the
    framework time per client call and the profile are filled (no timing is asserted)."""
    import json

    from tests.conftest import flowerbed

    out = tmp_path / "bench"
    args = ["bench", "b2", "--rounds", "2", "--engines", "batched", "--set", "clients.num=4", "--out", str(out), "--profile"]
    assert flowerbed(*args) == 0
    rows = json.loads((out / "bench.json").read_text())["b2"]
    assert set(rows) == {"batched"}
    row = rows["batched"]
    assert row["runs"] == 1 and row["s_round"] > 0 and row["rss_mib"] > 0 and row["setup_s"] > 0
    assert 0.0 <= row["acc"] <= 1.0
    assert row["compute_ms"] > 0 and row["framework_ms"] is not None  # round 2: its wall minus compute, per call
    assert row["profile"]["local training compute (sgd_train / train_stacked)"] > 0
    assert "| batched |" in (out / "bench.md").read_text()
    assert flowerbed("bench", "b9", "--out", str(out)) == 2
    assert flowerbed("bench", "b2", "--engines", "ray", "--out", str(out)) == 2
