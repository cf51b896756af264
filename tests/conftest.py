"""Shared helpers: run the real `flowerbed` command in-process and read what it wrote."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # the checkout the tests run in (an installed flowerbed has none)

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


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
