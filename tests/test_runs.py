"""Whole runs on the sequential engine: results, determinism, resume, checkpoints."""

import json

import numpy as np
import pytest

from tests.conftest import flowerbed, read_metrics, run, untimed


def test_a_run_writes_config_metrics_summary_and_checkpoint(run_dir):
    metrics = run(run_dir)
    assert [m["round"] for m in metrics] == [0, 1, 2]
    last = metrics[-1]
    for key in ("global/acc", "global/loss", "personal/acc", "train/loss", "comm/bytes_up", "comm/bytes_down", "time/round_s"):
        assert key in last, key
    assert len(last["global/acc_per_class"]) == 10
    assert last["clients/trained"] == 4 and last["clients/failures"] == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["final/global/acc"] == last["global/acc"]
    assert (run_dir / "config.yaml").exists() and (run_dir / "checkpoints" / "server.pt").exists()


def test_bytes_counted_are_the_model_each_way(run_dir):
    from flowerbed.tasks.models import build_model

    metrics = run(run_dir)
    model_bytes = sum(t.numel() * t.element_size() for t in build_model("cnn", (1, 8, 8), 10, 0).state_dict().values())
    # Flower counts the serialized arrays: the tensors plus a small header per array
    for key in ("comm/bytes_down", "comm/bytes_up"):
        assert 4 * model_bytes <= metrics[1][key] <= 4 * model_bytes * 1.01, key


def test_federated_training_learns(run_dir):
    metrics = run(run_dir, "rounds=4", "partition=iid")
    assert metrics[-1]["global/acc"] > metrics[0]["global/acc"] + 0.3


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    a = untimed(run(tmp_path / "a", "seed=5", "clients.fraction_train=0.5"))
    b = untimed(run(tmp_path / "b", "seed=5", "clients.fraction_train=0.5"))
    c = untimed(run(tmp_path / "c", "seed=6", "clients.fraction_train=0.5"))
    assert a == b
    assert a != c


def test_fedprox_is_fedavg_at_mu_0_and_differs_from_it_otherwise(tmp_path):
    avg = untimed(run(tmp_path / "avg"))
    assert untimed(run(tmp_path / "prox0", "algorithm=fedprox", "algorithm.proximal_mu=0")) == avg  # the same loop
    prox = run(tmp_path / "prox", "algorithm=fedprox", "algorithm.proximal_mu=1.0")
    assert avg[-1]["train/loss"] != prox[-1]["train/loss"]


@pytest.mark.parametrize("view", ["crop-flip", "strong"])
def test_train_augment_draws_seeded_views_that_change_training(tmp_path, view):
    plain = untimed(run(tmp_path / "plain", "algorithm=fedprox"))
    a = untimed(run(tmp_path / "a", "algorithm=fedprox", f"train.augment={view}"))
    b = untimed(run(tmp_path / "b", "algorithm=fedprox", f"train.augment={view}"))
    assert a == b  # the views come from (seed, round, client), not from torch's global RNG
    assert a[-1]["train/loss"] != plain[-1]["train/loss"]


@pytest.mark.parametrize("algorithm", ["fedavgm", "fedadam", "fedyogi", "fedtrimmedavg", "krum", "fedmedian"])
def test_flower_strategies_run_by_name(tmp_path, algorithm):
    metrics = run(tmp_path / algorithm, f"algorithm={algorithm}")
    assert np.isfinite(metrics[-1]["global/loss"])
    # server optimizers compute in float64, but the model goes out in its own dtype every round
    assert len({m["comm/bytes_down"] for m in metrics[1:]}) == 1


def test_resume_after_interruption_ends_with_the_same_numbers(tmp_path):
    full = run(tmp_path / "full", "rounds=4", "algorithm=fedavgm")  # server state (momentum) must survive too
    run(tmp_path / "cut", "rounds=2", "algorithm=fedavgm")  # stopped after round 2
    # a round that was half written when the process died: its line is dropped and recomputed
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"round": 3, "global/acc": -1}) + "\n")
    resumed = run(tmp_path / "cut", "rounds=4", "algorithm=fedavgm", "resume=true")
    assert untimed(resumed) == untimed(full)


def test_resume_refuses_a_changed_config(tmp_path, capsys):
    run(tmp_path / "r")
    assert flowerbed("run", "experiment=smoke", f"output.dir={tmp_path / 'r'}", "resume=true", "train.lr=0.5") == 2
    assert "train.lr" in capsys.readouterr().err


def test_damaged_checkpoint_is_refused(tmp_path, capsys):
    run(tmp_path / "r")
    checkpoint = tmp_path / "r" / "checkpoints" / "server.pt"
    blob = bytearray(checkpoint.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(blob))
    capsys.readouterr()
    assert flowerbed("run", "experiment=smoke", f"output.dir={tmp_path / 'r'}", "resume=true", "rounds=3") == 2
    err = capsys.readouterr().err
    assert "damaged (checksum mismatch)" in err and len(err.strip().splitlines()) == 1


def test_a_run_starts_from_another_runs_global_model(tmp_path):
    first = run(tmp_path / "first", "rounds=3")
    warm = run(tmp_path / "warm", "model.init=" + str(tmp_path / "first"), "rounds=1", "seed=1")
    cold = run(tmp_path / "cold", "rounds=1", "seed=1")
    # round 0 scores the starting weights: the first run's last global model, not seed 1's initialisation
    assert warm[0]["global/acc"] == first[-1]["global/acc"] and warm[0]["global/loss"] == first[-1]["global/loss"]
    assert cold[0]["global/acc"] != first[-1]["global/acc"]
    import torch

    from flowerbed.tasks.models import build_model

    state = tmp_path / "weights.pt"
    torch.save(build_model("cnn", (1, 8, 8), 10, 7).state_dict(), state)
    from_file = run(tmp_path / "file", f"model.init={state}", "rounds=1")
    seeded = run(tmp_path / "seed7", "seed=7", "rounds=1")
    assert from_file[0]["global/loss"] == seeded[0]["global/loss"]


@pytest.mark.parametrize("init, says", [("missing", "an existing run folder or .pt file"), ("mlp", "first mismatch")])
def test_model_init_that_does_not_fit_is_one_line(tmp_path, capsys, init, says):
    if init == "mlp":  # a finished run of another architecture
        run(tmp_path / "mlp", "model=mlp", "rounds=1")
    capsys.readouterr()
    assert flowerbed("run", "experiment=smoke", f"output.dir={tmp_path / 'r'}", f"model.init={tmp_path / init}") == 2
    err = capsys.readouterr().err
    assert "model.init=" in err and says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_partitions_command_prints_and_plots(tmp_path, capsys):
    out = tmp_path / "heat.png"
    assert flowerbed("partitions", "experiment=smoke", "partition.alpha=0.1", "--out", str(out)) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "labeled" in printed and "heat map" in printed
