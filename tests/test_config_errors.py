"""Bad input: one line naming key, value and what is allowed; exit status 2; no traceback."""

import subprocess
import sys

import pytest

from tests.conftest import flowerbed

BAD_INPUTS = [
    (["algorithm=fedmagic"], "algorithm='fedmagic' is not valid: one of"),
    (["partition.alpha=0"], "partition.alpha=0 is not valid: a number > 0"),
    (["partition.alpha=-1"], "partition.alpha=-1 is not valid"),
    (["partition.labeled_fraction=1.5"], "partition.labeled_fraction=1.5 is not valid: a number in (0, 1]"),
    (["dataset=imagenet42"], "dataset='imagenet42' is not valid: one of"),
    (["clients.num=abc"], "clients.num='abc' is not valid: an integer"),
    (["nonsense_key=3"], "nonsense_key"),
    (["train.device=tpu"], "train.device='tpu' is not valid"),
    # a dict or null in a setting's place must not make the setting vanish (found by test_hostile)
    (["clients.num={a: 1}"], "clients.num={'a': 1} is not valid: a single number, string or boolean"),
    (["seed={a: 1}"], "seed={'a': 1} is not valid: a single number, string or boolean"),
    (["train.lr=null"], "train.lr=None is not valid: a single number, string or boolean"),
    (["dataset=synthetic", "model=mlp", "dataset.num_users=6392295095"],
     "dataset.num_users=6392295095 is not valid: a size whose data fits in memory"),  # not a MemoryError
    (["dataset.test_fraction=0.00390625"], "dataset.test_fraction=0.00390625 is not valid: a share that leaves every class"),
]


@pytest.mark.parametrize("overrides,message", BAD_INPUTS)
def test_bad_value_gives_one_line_and_exit_2(overrides, message, capsys, tmp_path):
    assert flowerbed("run", *overrides, f"output.dir={tmp_path}/r") == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1


def test_offline_cifar10_says_how_to_get_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWERBED_CACHE", str(tmp_path / "empty-cache"))
    assert flowerbed("run", "dataset=cifar10", "model=resnet8", f"output.dir={tmp_path}/r") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "flowerbed fetch cifar10" in err


def test_existing_run_is_never_overwritten_silently(capsys, tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 0\n")
    assert flowerbed("run", "experiment=smoke", f"output.dir={run_dir}") == 2
    assert "resume=true continues it, overwrite=true replaces it" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_text() == "seed: 0\n"


def test_the_installed_command_exits_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "simulations.cli", "run", "partition.alpha=0", f"output.dir={tmp_path}/r"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip().startswith("flowerbed: error: partition.alpha=0")
