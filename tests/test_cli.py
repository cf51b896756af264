"""The `flowerbed` command line itself: usage errors in one line, overrides anywhere, paths checked first."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import flowerbed


@pytest.mark.parametrize("args,message", [
    (["runn"], "argument command: invalid choice: 'runn'"),
    (["run", "--rounds", "3"], "--rounds is not an option of flowerbed run; settings are written key=value (e.g. rounds=...)"),
    (["pretrain", "--epochs", "abc"], "argument --epochs: invalid int value: 'abc'"),
    (["report"], "the following arguments are required: paths"),
    # "" is the working directory: a report, key files or client files would land among the user's files
    (["report", ""], "argument paths: '' is not a path"),
    (["deploy", "export", "", "rounds=1"], "argument out: '' is not a path"),
    (["deploy", "certs", ""], "argument out: '' is not a path"),
])
def test_usage_errors_are_one_line_and_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        flowerbed(*args)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("flowerbed: error: ") and message in err
    assert list(tmp_path.iterdir()) == []


def test_overrides_may_follow_an_option(tmp_path, capsys):
    """deploy.md's `flowerbed deploy check ~/photos --node-config 'classes="cat,dog"' dataset=cifar10`."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "client.npz", x=rng.random((12, 13), dtype=np.float32), y=np.arange(12) % 3)
    assert flowerbed("deploy", "check", str(tmp_path / "client.npz"), "--node-config", "num-classes=3", "dataset=synthetic") == 0
    assert "3 classes" in capsys.readouterr().out


def test_report_out_that_cannot_be_a_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    assert flowerbed("report", str(tmp_path), "--out", str(tmp_path / "a-file" / "report")) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"flowerbed: error: --out='{tmp_path}/a-file/report' is not valid: a folder that can be created "
                   f"({tmp_path}/a-file is a file, not a folder)")


def test_partitions_out_must_be_an_image_file(tmp_path, capsys):
    assert flowerbed("partitions", "experiment=smoke", "--out", str(tmp_path / "counts.txt")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"flowerbed: error: --out='{tmp_path}/counts.txt' is not valid: an image file ending in .png, .pdf")
    assert list(tmp_path.iterdir()) == []


def test_run_help_names_the_groups(capsys):
    with pytest.raises(SystemExit):
        flowerbed("run", "--help")
    assert "dataset, partition, model, algorithm, engine, privacy, experiment" in " ".join(capsys.readouterr().out.split())
