"""`flowerbed sweep`: comma lists expand through Hydra's parser; a rerun skips and resumes."""

from __future__ import annotations

import json
import shutil

from flowerbed.simulations.sweep import expand, split_args
from tests.conftest import flowerbed, read_metrics, untimed


def test_comma_lists_expand_to_their_product(tmp_path):
    args = ["algorithm=fedavg,fedprox", "seed=0,1,2", "rounds=3", f"sweep.dir={tmp_path}", "jobs=2"]
    overrides, sweep_dir, jobs = split_args(args)
    assert (sweep_dir, jobs) == (tmp_path.resolve(), 2)
    points = expand(overrides, sweep_dir)
    assert len(points) == 6
    assert points[0].overrides == ["rounds=3", "algorithm=fedavg", "seed=0"]
    assert points[-1].path == tmp_path.resolve() / "algorithm-fedprox_seed-2"
    assert len({p.name for p in points}) == 6


def test_bad_sweep_keys_exit_2(tmp_path, capsys, monkeypatch):
    assert flowerbed("sweep", "experiment=smoke", "jobs=0", f"sweep.dir={tmp_path}") == 2
    assert flowerbed("sweep", "experiment=smoke", f"output.dir={tmp_path}") == 2
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # sweep.dir= would be the working directory
    assert flowerbed("sweep", "experiment=smoke", "seed=0,1", "sweep.dir=") == 2
    assert capsys.readouterr().err.strip() == "flowerbed: error: sweep.dir='' is not valid: a folder (default runs/sweep)"
    assert list(tmp_path.iterdir()) == []


def test_an_override_that_does_not_parse_is_named(tmp_path, capsys):
    assert flowerbed("sweep", "experiment=smoke", "seed=[0,1", f"sweep.dir={tmp_path}/s") == 2
    assert capsys.readouterr().err.strip() == ("flowerbed: error: 'seed=[0,1' is not an override Hydra can read: "
                                               "no viable alternative at input '[0,1'")


def test_a_key_swept_twice_is_refused(tmp_path, capsys):
    """`seed=0,1 seed=2,3` would run seeds 2 and 3 twice each, under the names seed-0_seed-2 ... seed-1_seed-3."""
    assert flowerbed("sweep", "experiment=smoke", "seed=0,1", "seed=2,3", f"sweep.dir={tmp_path}/s") == 2
    assert capsys.readouterr().err.strip() == "flowerbed: error: seed is swept twice (seed=0,1 and seed=2,3): give one comma list"
    assert not (tmp_path / "s").exists()
    points = expand(["seed=0,1", "seed=2"], tmp_path)  # a fixed value and a list: the list's value wins in each point
    assert [p.overrides for p in points] == [["seed=2", "seed=0"], ["seed=2", "seed=1"]]


def test_every_point_is_checked_before_the_first_runs(tmp_path, capsys):
    """The bad value is in the last point: one line, exit 2, and the valid point has not run."""
    assert flowerbed("sweep", "experiment=smoke", "partition.alpha=0.5,0", f"sweep.dir={tmp_path}/s") == 2
    err = capsys.readouterr().err.strip()
    assert err == "flowerbed: error: sweep point partition.alpha-0: partition.alpha=0 is not valid: a number > 0"
    assert not (tmp_path / "s").exists()  # nothing written, not even the index
    assert flowerbed("sweep", "experiment=smoke", "algoritm=fedavg,fedprox", f"sweep.dir={tmp_path}/s") == 2
    assert "did you mean algorithm?" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert flowerbed("sweep", "experiment=smoke", "seed=0,1", f"sweep.dir={tmp_path}/a-file/s") == 2
    assert "sweep.dir=" in capsys.readouterr().err


def test_rerun_skips_finished_runs_and_resumes_the_half_done_one(tmp_path):
    args = ["sweep", "experiment=smoke", "seed=0,1", f"sweep.dir={tmp_path}"]
    assert flowerbed(*args) == 0
    index = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert [row["name"] for row in index] == ["seed-0", "seed-1"]
    done, half = tmp_path / "seed-0", tmp_path / "seed-1"
    finished_at = (done / "summary.json").stat().st_mtime_ns
    straight = untimed(read_metrics(half))
    # seed-1 interrupted after round 1: its checkpoint at round 1, no summary, a metrics line past the checkpoint
    shutil.rmtree(half)
    assert flowerbed("run", "experiment=smoke", "seed=1", "rounds=1", f"output.dir={half}") == 0
    (half / "summary.json").unlink()
    first_rows = (half / "metrics.jsonl").read_text()
    with (half / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"round": 2, "global/acc": 0.0}) + "\n")

    assert flowerbed(*args) == 0
    assert (done / "summary.json").stat().st_mtime_ns == finished_at  # untouched
    assert (half / "summary.json").exists()
    assert (half / "metrics.jsonl").read_text().startswith(first_rows)  # rounds 0-1 kept, not trained again
    assert untimed(read_metrics(half)) == straight  # round 2 from the checkpoint, as the run without a stop
    assert set(json.loads((tmp_path / "times.json").read_text())) == {"seed-0", "seed-1"}
