"""Shared helpers: run the real `flowerbed` command in-process and read what it wrote."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # the checkout the tests run in (an installed flowerbed has none)

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("FLOWERBED_CACHE", tempfile.mkdtemp(prefix="flowerbed-cache-"))  # splits and partitions stay out of ~


def flowerbed(*args: str) -> int:
    from flowerbed.simulations.cli import main

    return main(list(args))


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def untimed(metrics: list[dict]) -> list[dict]:
    """Metrics lines without their wall-clock `time/*` keys: what must repeat exactly."""
    return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in metrics]


def run(run_dir: Path, *overrides: str) -> list[dict]:
    """A smoke-sized run into `run_dir`; returns its metrics lines."""
    code = flowerbed("run", "experiment=smoke", f"output.dir={run_dir}", *overrides)
    assert code == 0
    return read_metrics(run_dir)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


def strategy_state(run_dir: Path) -> dict:
    """The server half's attributes as the run's checkpoint holds them."""
    import pickle

    from flowerbed.server.results import RunDirectory

    return pickle.loads(RunDirectory(run_dir).load_checkpoint()["strategy"])


def client_state(run_dir: Path, client: int, server_round: int, key: str) -> dict:
    """One record of a client's state as written after `server_round` (clients/state.py), as tensors."""
    import torch

    from flowerbed.clients.state import _decode

    blob = torch.load(run_dir / "checkpoints" / "clients" / str(client) / f"round-{server_round}.pt", weights_only=False)
    return _decode(blob)[key].to_torch_state_dict()


def sample_shares(*overrides: str) -> list[float]:
    """p_k = n_k / n: each client's share of the labeled samples of a smoke run with `overrides`."""
    from flowerbed.simulations import config
    from flowerbed.tasks.partitions import build_federation

    sizes = [len(c.labeled) for c in build_federation(config.load(["experiment=smoke", *overrides])).clients]
    return [n / sum(sizes) for n in sizes]
