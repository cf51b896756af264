"""Bad input: one line naming key, value and what is allowed; exit status 2; no traceback."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from flowerbed.simulations.config import check_device
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
    # a typo gets the nearest valid name: keys (Hydra's own "Could not override 'algoritm'"), options, values
    (["algoritm=fedavg"], "algoritm is not a configuration key; did you mean algorithm?"),
    (["partition.alpah=0.1"], "partition.alpah is not a configuration key; did you mean partition.alpha?"),
    (["+train.lrr=0.1"], "train.lrr is not a configuration key; did you mean train.lr?"),  # `+` got it past Hydra
    (["clients=3"], "clients is not a configuration key; did you mean clients.num?"),  # a whole group replaced by a value
    (["algorithm=fedavgg"], "algorithm='fedavgg' is not valid: one of centralized, fedadam, fedavg,"),
    (["algorithm=fedavgg"], "; did you mean fedavg?"),
    # a key that only other options of its group have: which ones, not a "did you mean" of itself
    (["dataset.path=/data/cifar10"], "dataset.path is not a key of the chosen dataset; dataset=cifar10, cifar100, fashion-mnist, imagefolder"),
    (["partition=dirichlt"], "; did you mean dirichlet?"),
    (["algorithm=fedlabel", "algorithm.selection=bth"], "algorithm.selection='bth' is not valid: one of both, local, global; did you mean both?"),
    (["train.augment=randaugment"], "train.augment='randaugment' is not valid: one of none, weak, crop-flip, strong"),
    (["algorithm=fedlabel", "train.augment=strong"], "train.augment='strong' is not valid: none with algorithm.name=fedlabel"),
    # Hydra calls a comma list only "ambiguous", and names no key when an override does not parse
    (["seed=0,1"], "seed=0,1 is a list of values: `flowerbed sweep seed=0,1` runs one simulation per value"),
    (["seed=[0,1"], "'seed=[0,1' is not an override Hydra can read: no viable alternative at input '[0,1'"),
    (["resume=true", "overwrite=true"], "resume=true and overwrite=true contradict each other"),
    # flwr-datasets' own multi-sentence message before
    (["partition=pathological", "partition.classes_per_client=11"], "partition.classes_per_client=11 is not valid: at most the 10 classes"),
    # noise or clipping without a DP mode: the user would believe the run is private
    (["privacy.noise_multiplier=2"], "privacy.noise_multiplier=2 has no effect with privacy=none: choose the mode too"),
    (["privacy.clipping=client"], "privacy.clipping='client' has no effect with privacy=none"),
    # a GPU this machine does not have: before any work, not three rounds of failing clients
    ([f"train.device=cuda:{torch.cuda.device_count()}"], f"train.device='cuda:{torch.cuda.device_count()}' is not valid"),
]


@pytest.mark.parametrize("overrides,message", BAD_INPUTS)
def test_bad_value_gives_one_line_and_exit_2(overrides, message, capsys, tmp_path):
    assert flowerbed("run", *overrides, f"output.dir={tmp_path}/r") == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_no_typo_suggestion_for_a_different_word(capsys, tmp_path):
    assert flowerbed("run", "algorithm=fedmagic", f"output.dir={tmp_path}/r") == 2
    assert "did you mean" not in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(capsys, tmp_path):
    assert flowerbed("run", "experiment=smoke", "train.device=cuda", f"output.dir={tmp_path}/r") == 2
    err = capsys.readouterr().err.strip()
    assert err == ("flowerbed: error: train.device='cuda' is not valid: auto or cpu: this machine has no CUDA device "
                   "(torch.cuda.is_available() is False)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("device,count,engine,gpus,message", [
    ("cuda", 0, "sequential", 0.0, "no CUDA device"),
    ("cuda:1", 1, "sequential", 0.0, "cuda:0 to cuda:0 (this machine has 1 CUDA device)"),
    ("cuda:2", 2, "batched", 0.0, "cuda:0 to cuda:1 (this machine has 2 CUDA devices)"),
    ("cuda", 1, "flower", 0.0, "engine.num_gpus=0.0 is not valid: > 0 with train.device=cuda on engine=flower"),
    ("cuda:1", 2, "flower", 0.5, "train.device='cuda:1' is not valid: cuda on engine=flower"),
    ("cuda:1", 2, "sequential", 0.0, None),
    ("cuda", 1, "flower", 0.25, None),
    ("cpu", 0, "flower", 0.0, None),
])
def test_device_must_exist_where_the_clients_run(device, count, engine, gpus, message):
    from flowerbed.tasks.errors import ConfigError

    if message is None:
        check_device(device, count, engine, gpus)
    else:
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_device(device, count, engine, gpus)


def test_output_dir_that_cannot_be_created_is_one_line(capsys, tmp_path):
    (tmp_path / "a-file").write_text("")
    assert flowerbed("run", "experiment=smoke", f"output.dir={tmp_path}/a-file/run") == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"flowerbed: error: output.dir='{tmp_path}/a-file/run' is not valid: a folder that can be created "
                   f"({tmp_path}/a-file is a file, not a folder)")
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in a read-only folder")
def test_output_dir_in_a_read_only_folder_is_one_line(capsys, tmp_path):
    (tmp_path / "locked").mkdir(mode=0o555)
    assert flowerbed("run", "experiment=smoke", f"output.dir={tmp_path}/locked/run") == 2
    assert f"({tmp_path}/locked is not writable)" in capsys.readouterr().err


def test_offline_cifar10_says_how_to_get_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWERBED_CACHE", str(tmp_path / "empty-cache"))
    assert flowerbed("run", "dataset=cifar10", "model=resnet8", f"output.dir={tmp_path}/r") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "flowerbed fetch cifar10" in err


def test_empty_output_dir_is_refused_not_the_working_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert flowerbed("run", "experiment=smoke", "output.dir=") == 2
    assert capsys.readouterr().err.strip() == ("flowerbed: error: output.dir='' is not valid: "
                                               "a folder (default runs/<algorithm>-<dataset>-<partition>-seed<seed>)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exists", [False, True])
def test_resume_without_a_run_to_continue_is_refused(capsys, tmp_path, exists):
    """A mistyped output.dir with resume=true would otherwise train a new run from round 0."""
    if exists:
        (tmp_path / "r").mkdir()
    assert flowerbed("run", "experiment=smoke", f"output.dir={tmp_path}/r", "resume=true") == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"flowerbed: error: resume=true but output.dir='{tmp_path}/r' holds no run to continue (no config.yaml); "
                   "leave resume out to start one there")
    assert not (tmp_path / "r").exists() or list((tmp_path / "r").iterdir()) == []


def test_existing_run_is_never_overwritten_silently(capsys, tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 0\n")
    assert flowerbed("run", "experiment=smoke", f"output.dir={run_dir}") == 2
    assert "resume=true continues it, overwrite=true replaces it" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_text() == "seed: 0\n"


def test_the_installed_command_exits_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "flowerbed.simulations.cli", "run", "partition.alpha=0", f"output.dir={tmp_path}/r"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip().startswith("flowerbed: error: partition.alpha=0")


def test_fetch_of_a_bundled_dataset_says_it_ships(capsys):
    assert flowerbed("fetch", "digits") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "digits, mnist5k, synthetic and fake-images ship with flowerbed" in err


def test_npz_without_labels_is_named_once(capsys, tmp_path):
    np.savez(tmp_path / "x-only.npz", x=np.zeros((6, 3)))
    assert flowerbed("run", "dataset=npz", f"dataset.path={tmp_path}/x-only.npz", "model=mlp", f"output.dir={tmp_path}/r") == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("is not valid: an .npz with arrays x and y (it has x)") and "ConfigError" not in err
