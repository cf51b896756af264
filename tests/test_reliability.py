"""Failing clients, poisoned updates, interrupted runs: the run goes on, or stops cleanly and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flowerbed.clients import faults
from tests.conftest import flowerbed, read_metrics, run, untimed

ROOT = Path(__file__).resolve().parents[1]


def test_faults_are_drawn_per_seed_round_and_client():
    cfg = {"seed": 3, "faults.raise_fraction": 0.3, "faults.poison_fraction": 0.2}
    draws = [[faults.draw(cfg, r, c) for c in range(50)] for r in range(1, 5)]
    assert draws == [[faults.draw(cfg, r, c) for c in range(50)] for r in range(1, 5)]
    flat = sum(draws, [])
    assert 0.15 < flat.count("raise") / len(flat) < 0.45 and 0.05 < flat.count("poison") / len(flat) < 0.35
    assert draws[0] != draws[1]  # a different set of clients fails each round
    assert all(faults.draw({"seed": 3}, r, c) is None for r in range(5) for c in range(50))  # off by default


def test_raising_and_dropping_clients_are_counted_and_the_run_goes_on(run_dir):
    metrics = run(run_dir, "rounds=3", "faults.raise_fraction=0.15", "faults.dropout_fraction=0.15")
    rounds = metrics[1:]
    expected = [sum(faults.draw({"seed": 0, "faults.raise_fraction": 0.15, "faults.dropout_fraction": 0.15}, r, c) is not None
                    for c in range(4)) for r in (1, 2, 3)]
    assert [m["clients/failures"] for m in rounds] == expected and sum(expected) > 0
    assert [m["clients/trained"] for m in rounds] == [4 - e for e in expected]
    assert np.isfinite(metrics[-1]["global/loss"])


def test_a_client_slower_than_the_timeout_is_dropped(run_dir):
    cfg = {"seed": 0, "faults.timeout_fraction": 0.25}
    late = sum(faults.draw(cfg, 1, c) == "timeout" for c in range(4))
    metrics = run(run_dir, "rounds=1", "clients.timeout=4", "faults.timeout_fraction=0.25")
    assert metrics[1]["clients/failures"] == late == 1
    assert metrics[1]["clients/trained"] == 3  # the late reply never reached the strategy


def test_every_client_failing_stops_with_one_line(run_dir, capsys):
    code = flowerbed("run", "experiment=smoke", f"output.dir={run_dir}", "rounds=10", "faults.raise_fraction=1.0",
                     "clients.max_failed_rounds=2")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    last = err.splitlines()[-1]  # before it: one progress line per round
    assert last.startswith("flowerbed: error: stopped after round 2") and "clients.max_failed_rounds=2" in last
    assert [m.get("clients/failures") for m in read_metrics(run_dir)][1:] == [4, 4]


@pytest.mark.parametrize("kind,extra,counter", [
    ("nonfinite", [], "clients/rejected"),
    ("huge", ["clients.max_update_norm=100"], "clients/rejected_norm"),
])
def test_poisoned_updates_are_rejected_before_aggregation(tmp_path, kind, extra, counter):
    clean = run(tmp_path / "clean", "rounds=3", "partition=iid")
    poisoned = run(tmp_path / kind, "rounds=3", "partition=iid", "faults.poison_fraction=0.25", f"faults.poison={kind}", *extra)
    assert sum(m[counter] for m in poisoned[1:]) > 0
    assert np.isfinite(poisoned[-1]["global/loss"])
    assert poisoned[-1]["global/acc"] > clean[-1]["global/acc"] - 0.15


def test_without_a_bound_a_huge_update_wrecks_the_mean_but_not_the_median(tmp_path):
    args = ("rounds=3", "partition=iid", "seed=2", "faults.poison_fraction=0.25", "faults.poison=huge")  # one attacker a round
    mean = run(tmp_path / "mean", *args)
    median = run(tmp_path / "median", *args, "algorithm.aggregation=median")
    assert median[-1]["global/acc"] > mean[-1]["global/acc"] + 0.3


@pytest.mark.parametrize("algorithm,aggregation", [("fedavgm", "trimmed"), ("fedadam", "krum")])
def test_robust_aggregation_composes_with_other_strategies(tmp_path, algorithm, aggregation):
    """Under the server optimizers too, the robust rule keeps one huge update a round (of 4) out."""
    args = (f"algorithm={algorithm}", "rounds=3", "partition=iid", "seed=2", "faults.poison_fraction=0.25", "faults.poison=huge")
    plain = run(tmp_path / "plain", *args)
    robust = run(tmp_path / "robust", *args, f"algorithm.aggregation={aggregation}", "algorithm.trim_beta=0.25")
    assert np.isfinite(robust[-1]["global/loss"])
    assert robust[-1]["global/acc"] > plain[-1]["global/acc"] + 0.3


def test_median_of_replies_is_the_aggregate():
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    from flwr.serverapp.strategy import FedAvg

    from flowerbed.strategies import robust

    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0  # what a Grid sets before messages exist
    strategy = FedAvg()
    values = [0.0, 1.0, 2.0, 100.0]
    replies = [Message(RecordDict({"arrays": ArrayRecord({"w": Array(np.full(3, v, np.float32))}),
                                   "metrics": MetricRecord({"num-examples": 1 + i})}), dst_node_id=i + 1, message_type="train")
               for i, v in enumerate(values)]
    median = robust.robust_replies(robust.aggregator({"algorithm.aggregation": "median"}), 1, replies)
    arrays, _ = strategy.aggregate_train(1, median)
    assert np.allclose(arrays["w"].numpy(), 1.5)
    assert np.allclose(replies[3].content["arrays"]["w"].numpy(), 100.0)  # the originals are untouched


# -- interrupted runs ------------------------------------------------------------------------------
def _start(run_dir: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "flowerbed.simulations.cli", "run", "experiment=smoke", f"output.dir={run_dir}", *overrides],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_rounds(run_dir: Path, child: subprocess.Popen, rounds: int) -> None:
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) > rounds):
        assert child.poll() is None, child.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)


ARGS = ("rounds=12", "algorithm=fedavgm", "train.local_epochs=0", "train.local_steps=2")


def test_kill_9_then_resume_ends_with_the_same_numbers(tmp_path):
    full = run(tmp_path / "full", *ARGS)
    child = _start(tmp_path / "cut", *ARGS)
    _wait_for_rounds(tmp_path / "cut", child, 2)
    child.kill()  # SIGKILL: no handler runs
    child.wait()
    done = len(read_metrics(tmp_path / "cut")) - 1
    assert 2 <= done < 12  # really stopped mid-run
    resumed = run(tmp_path / "cut", *ARGS, "resume=true")
    assert untimed(resumed) == untimed(full)


def test_sigterm_exits_143_and_says_how_to_resume(tmp_path):
    child = _start(tmp_path / "cut", *ARGS)
    _wait_for_rounds(tmp_path / "cut", child, 1)
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 143, out
    assert "resume=true" in out and "Traceback" not in out
    assert 1 <= len(read_metrics(tmp_path / "cut")) - 1 < 12  # finished rounds kept; resuming is tested above


def test_truncated_checkpoint_is_refused(tmp_path, capsys):
    run(tmp_path / "r")
    checkpoint = tmp_path / "r" / "checkpoints" / "server.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 3])
    capsys.readouterr()
    assert flowerbed("run", "experiment=smoke", f"output.dir={tmp_path / 'r'}", "resume=true", "rounds=3") == 2
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and len(err.strip().splitlines()) == 1


def test_a_kill_between_the_two_renames_still_resumes(tmp_path):
    """save_checkpoint renames the checkpoint, then its digest: dying in between must not strand the run."""
    run(tmp_path / "r")
    digest = tmp_path / "r" / "checkpoints" / "server.sha256"
    digest.rename(digest.with_suffix(".sha256.tmp"))
    digest.write_text("0" * 64)  # the digest of the round before
    resumed = run(tmp_path / "r", "resume=true", "rounds=3")
    assert untimed(resumed) == untimed(run(tmp_path / "straight", "rounds=3"))  # continued from round 2, not restarted

