"""`flowerbed report` on run directories written here by hand (no training)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from flowerbed.simulations.report import find_runs, mean_std, swept_keys, table
from tests.conftest import flowerbed


def fake_run(path: Path, algorithm: str, seed: int, accs: list[float], extra: dict | None = None, finished: bool = True) -> None:
    """A run directory as the server writes it: config.yaml, metrics.jsonl, summary.json."""
    path.mkdir(parents=True)
    config = {"algorithm.name": algorithm, "seed": seed, "output.dir": str(path), "rounds": 2,
              "dataset.name": "digits", "partition.name": "dirichlet", "partition.alpha": 0.5, **(extra or {})}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    lines = [{"round": r, "global/acc": a, "personal/acc": a, "personal/acc_per_client": [a - 0.1, a + 0.1],
              "comm/bytes_up": 1000 * (r > 0), "comm/bytes_down": 1000 * (r > 0)} for r, a in enumerate(accs)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if finished:
        summary = {"rounds": len(accs) - 1, "train_time_s": 1.0, "final/global/acc": accs[-1], "best/global/acc": max(accs),
                   "final/personal/acc": accs[-1], "best/personal/acc": max(accs)}
        (path / "summary.json").write_text(json.dumps(summary))


def make_sweep(root: Path) -> None:
    fake_run(root / "a0", "fedavg", 0, [0.1, 0.8, 0.5])
    fake_run(root / "a1", "fedavg", 1, [0.1, 0.6, 0.7])
    # proximal_mu only exists in fedprox's config: it restates algorithm.name and must not become a column
    fake_run(root / "p0", "fedprox", 0, [0.1, 0.4, 0.6], {"algorithm.proximal_mu": 0.01})
    fake_run(root / "p1", "fedprox", 1, [0.1, 0.5, 0.6], {"algorithm.proximal_mu": 0.01})
    fake_run(root / "p2", "fedprox", 2, [0.1, 0.2], {"algorithm.proximal_mu": 0.01}, finished=False)


def test_mean_std_is_sample_std_and_skips_missing():
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, math.sqrt(0.02)))
    assert mean_std([0.3]) == (0.3, 0.0)
    assert mean_std([0.3, None])[0] == 0.3
    assert math.isnan(mean_std([])[0])


def test_groups_by_swept_keys_with_mean_and_std_over_seeds(tmp_path):
    make_sweep(tmp_path)
    runs = find_runs([tmp_path])
    assert len(runs) == 5
    keys = swept_keys(runs)
    assert keys == ["algorithm.name"]  # seed and output.dir differ too, but are not groups
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table(runs, keys).splitlines()[2:]}
    assert rows["fedavg"][1:4] == ["2", "60.0 ± 14.1", "75.0 ± 7.1"]  # final 0.5/0.7, best 0.8/0.7
    assert rows["fedprox"][1:4] == ["2", "60.0 ± 0.0", "60.0 ± 0.0"]  # the unfinished seed is left out
    assert rows["fedavg"][6] == "0.00 ± 0.00"  # 4 kB up+down -> 0.00 MB


def test_two_swept_keys_form_groups(tmp_path):
    for alpha in (0.1, 0.5):
        for seed in (0, 1):
            fake_run(tmp_path / f"a{alpha}-{seed}", "fedavg", seed, [0.1, alpha + 0.01 * seed], {"partition.alpha": alpha})
    runs = find_runs([tmp_path])
    assert swept_keys(runs) == ["partition.alpha"]
    body = table(runs, swept_keys(runs)).splitlines()[2:]
    assert [row.split(" | ")[2] for row in body] == ["10.5 ± 0.7", "50.5 ± 0.7"]


def test_report_command_writes_markdown_and_figures(tmp_path):
    make_sweep(tmp_path / "sweep")
    assert flowerbed("report", str(tmp_path / "sweep"), "--out", str(tmp_path / "out")) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| fedavg | 2 | 60.0 ± 14.1" in text
    assert "Unfinished" in text and "p2" in text
    for png in ("accuracy.png", "accuracy_vs_bytes.png", "personal_accuracy.png"):
        assert f"]({png})" in text  # linked relative: the report reads on GitHub
        assert (tmp_path / "out" / png).stat().st_size > 1000
    assert "per_class.png" not in text  # no long-tailed run


def test_report_of_a_missing_directory_exits_2(tmp_path):
    assert flowerbed("report", str(tmp_path / "nothing")) == 2


def test_private_runs_get_an_epsilon_column_and_an_accuracy_vs_epsilon_figure(tmp_path):
    for z, accs in ((1.0, [0.1, 0.6, 0.8]), (4.0, [0.1, 0.3, 0.5])):
        for seed in (0, 1):
            path = tmp_path / "sweep" / f"z{z}-{seed}"
            fake_run(path, "fedavg", seed, accs, {"privacy.name": "central", "privacy.noise_multiplier": z})
            lines = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
            for line in lines:
                line["privacy/epsilon"] = line["round"] * 10 / z  # what the accountant would write
            (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
            summary = json.loads((path / "summary.json").read_text())
            (path / "summary.json").write_text(json.dumps({**summary, "privacy/epsilon": 20 / z, "privacy/delta": 1e-3}))
    fake_run(tmp_path / "sweep" / "plain", "fedavg", 0, [0.1, 0.7, 0.9], {"privacy.name": "none", "privacy.noise_multiplier": 1.0})
    assert flowerbed("report", str(tmp_path / "sweep"), "--out", str(tmp_path / "out")) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "ε (at δ)" in text and "| 5.00 ± 0.00 (δ 1e-03) |" in text and "| 20.00 ± 0.00 (δ 1e-03) |" in text
    assert "](accuracy_vs_epsilon.png)" in text and (tmp_path / "out" / "accuracy_vs_epsilon.png").stat().st_size > 1000

    from flowerbed.simulations.report import accuracy_vs_epsilon

    runs = find_runs([tmp_path / "sweep"])
    panel = next(iter(accuracy_vs_epsilon(runs, swept_keys(runs)).values()))
    assert sorted(panel) == ["central, noise_multiplier=1.0", "central, noise_multiplier=4.0", "fedavg, no DP"]
    eps, mean, _ = panel["central, noise_multiplier=4.0"]
    assert list(eps) == [2.5, 5.0] and list(mean) == pytest.approx([0.3, 0.5])
    assert panel["fedavg, no DP"][0] is None and panel["fedavg, no DP"][1] == pytest.approx(0.9)


def test_a_key_that_changes_the_data_is_never_hidden_behind_another(tmp_path):
    """Issue 31, defect 6: a long-tailed run (imbalance_factor=20, also 20 rounds) beside balanced
    10-round runs; `rounds` alone tells the groups apart, yet the imbalance must name its panel or line."""
    from flowerbed.simulations.report import accuracy_curves, one_panel_per_setting

    fake_run(tmp_path / "avg", "fedavg", 0, [0.1, 0.5], {"rounds": 10, "partition.imbalance_factor": 1.0})
    fake_run(tmp_path / "prox", "fedprox", 0, [0.1, 0.4], {"rounds": 10, "partition.imbalance_factor": 1.0, "algorithm.proximal_mu": 0.01})
    fake_run(tmp_path / "lt", "fedavg", 0, [0.1, 0.3], {"rounds": 20, "partition.imbalance_factor": 20.0})
    runs = find_runs([tmp_path])
    keys = swept_keys(runs)
    assert "partition.imbalance_factor" in keys and "algorithm.proximal_mu" not in keys
    assert "partition.imbalance_factor" in table(runs, keys).splitlines()[0]
    for panel_of in (None, one_panel_per_setting):
        names = [f"{panel} / {line}" for panel, lines in accuracy_curves(runs, keys, panel_of).items() for line in lines]
        print(names)
        long_tailed = [n for n in names if "imbalance_factor=20" in n or "IF=20" in n]
        assert len(names) == 3 and len(long_tailed) == 1 and "fedavg" in long_tailed[0], names


def test_one_seed_shows_its_value_without_a_spread(tmp_path):
    """Issue 31, defect 7: `± 0.0` for a single seed reads as a measured spread of zero."""
    fake_run(tmp_path / "a0", "fedavg", 0, [0.1, 0.6])
    fake_run(tmp_path / "p0", "fedprox", 0, [0.1, 0.5])
    fake_run(tmp_path / "p1", "fedprox", 1, [0.1, 0.7])
    runs = find_runs([tmp_path])
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table(runs, swept_keys(runs)).splitlines()[2:]}
    assert rows["fedavg"][1:4] == ["1", "60.0", "60.0"]
    assert rows["fedprox"][1:4] == ["2", "60.0 ± 14.1", "60.0 ± 14.1"]
