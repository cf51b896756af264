"""What a run prints and scores beyond its numbers (issue 31, defects 5 and 7)."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from flwr.app import MetricRecord, RecordDict

from tests.conftest import read_metrics, run


def test_clients_without_a_local_test_set_leave_the_personal_mean(run_dir):
    """Dir(0.1) over 20 clients leaves clients 0 and 2 no local test sample: they have no accuracy,
    so they must not count as 0% (the mean and the per-client list are over the 18 others)."""
    from flowerbed.simulations import config
    from flowerbed.tasks.partitions import build_federation

    overrides = ["partition.alpha=0.1", "clients.num=20", "rounds=1"]
    tested = [len(c.test) > 0 for c in build_federation(config.load(["experiment=smoke", *overrides], load_data=False)).clients]
    assert not all(tested) and sum(tested) >= 10
    last = run(run_dir, *overrides)[-1]
    assert len(last["personal/acc_per_client"]) == sum(tested)
    assert last["personal/acc"] == pytest.approx(np.mean(last["personal/acc_per_client"]))


def test_the_mean_over_clients_skips_replies_without_samples():
    from flowerbed.strategies.sampling import mean_over_clients

    def reply(acc: float, n: int) -> RecordDict:
        return RecordDict({"metrics": MetricRecord({"personal/acc": acc, "num-examples": n})})

    assert mean_over_clients([reply(1.0, 5), reply(0.0, 0), reply(0.5, 50)], "num-examples")["personal/acc"] == 0.75
    assert "personal/acc" not in mean_over_clients([reply(0.0, 0)], "num-examples")


def test_rounds_that_were_not_evaluated_say_whose_accuracy_they_show(run_dir, capsys):
    """evaluate.every=2 over 3 rounds: round 1 shows round 0's numbers marked as such; 2 and 3 are evaluated."""
    run(run_dir, "rounds=3", "evaluate.every=2")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("round ")]
    assert len(lines) == 3
    assert "(round 0)" in lines[0] and "acc " in lines[0]
    assert "(round" not in lines[1] and "(round" not in lines[2]
    evaluated = {m["round"] for m in read_metrics(run_dir) if "global/acc" in m}
    assert evaluated == {0, 2, 3}


def test_the_results_path_is_printed_whole_in_a_narrow_terminal(tmp_path, monkeypatch):
    from rich.console import Console

    from flowerbed.simulations import runner

    out = tmp_path / ("a-long-folder-name-" * 4) / "run"
    out.mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"rounds": 2, "final/global/acc": 0.5}))
    monkeypatch.setattr(runner, "console", Console(file=(buffer := io.StringIO()), width=40))
    runner._print_summary(out)
    assert f"results in {out}" in buffer.getvalue().splitlines()


def test_gitignore_covers_a_venv_symlink(tmp_path):
    """`make` may link .venv to a shared environment; `.venv/` matches only a folder."""
    root = Path(__file__).resolve().parents[1]
    (tmp_path / ".gitignore").write_text((root / ".gitignore").read_text())
    (tmp_path / "env").mkdir()
    (tmp_path / ".venv").symlink_to(tmp_path / "env")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert subprocess.run(["git", "check-ignore", "-q", ".venv"], cwd=tmp_path).returncode == 0
