"""The optional metric sinks: off by default, one call per round, a clear error when missing."""

from __future__ import annotations

import importlib.util

import pytest

from flowerbed.server import loggers
from flowerbed.tasks.errors import ConfigError
from tests.conftest import flowerbed, run


def test_off_by_default_means_no_sinks():
    assert loggers.build_logger({"output.dir": "/nowhere"}).sinks == []


def test_missing_package_is_one_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"logging.tensorboard=true needs the `tensorboard` package"):
        loggers.build_logger({"output.dir": "/tmp/x", "logging.tensorboard": True})


@pytest.mark.parametrize("sink", ["tensorboard", "mlflow", "wandb"])
def test_a_missing_sink_package_stops_the_run_before_anything_is_written(sink, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == sink else real(name, *a))
    assert flowerbed("run", "experiment=smoke", f"logging.{sink}=true", f"output.dir={tmp_path}/r") == 2
    out = capsys.readouterr()
    assert out.err.strip().startswith(f"flowerbed: error: logging.{sink}=true needs the `{sink}` package")
    assert out.out == ""  # not even the run's banner
    assert list(tmp_path.iterdir()) == []  # no config.yaml that a second try would call an earlier run


def test_the_loop_logs_each_round_once(run_dir, monkeypatch):
    seen = []

    class Recorder:
        def log(self, rnd, record):
            seen.append((rnd, "global/acc" in record))

        def close(self):
            seen.append(("closed", True))

    monkeypatch.setattr("flowerbed.server.loop.build_logger", lambda cfg: Recorder())
    metrics = run(run_dir)
    assert seen == [(1, True), (2, True), ("closed", True)]
    assert len(metrics[-1]["personal/acc_per_client"]) == 4  # smoke: 4 clients, each one's own accuracy


def test_wandb_offline_run_lands_in_the_run_folder(run_dir, monkeypatch):
    """With wandb installed (`pip install flowerbed[wandb]`): W&B's offline mode writes the run's
    metrics under output.dir/wandb for a later `wandb sync`."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run(run_dir, "logging.wandb=true", "logging.wandb_project=flowerbed-test")
    logs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    data = logs[0].read_bytes()
    assert b"flowerbed-test" in data and b"global/acc" in data and b"personal/acc" in data
