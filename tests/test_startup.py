"""Start-up: a run imports what it uses and nothing more (issue "Speed a user feels").

What start-up skips must give the same numbers: flowerbed's SGD is torch.optim.SGD's update to the
bit, the digits read from scikit-learn's file are scikit-learn's, and a split or partition read from
disk (tasks/stored.py) is the one the library computes. No test here times anything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from flowerbed.tasks.stored import stored
from flowerbed.tasks.training import SGD
from tests.conftest import ROOT


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.5, 1e-3)])
def test_flowerbeds_sgd_is_torch_sgd_to_the_bit(momentum, weight_decay):
    torch.manual_seed(0)
    ours, theirs = (torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3)) for _ in range(2))
    theirs.load_state_dict(ours.state_dict())
    start = {k: v.clone() for k, v in ours.state_dict().items()}
    for model in (ours, theirs):
        model[2].bias.requires_grad_(False)  # no gradient: left as it was
    steppers = [(ours, SGD(ours.parameters(), lr=0.05, momentum=momentum, weight_decay=weight_decay)),
                (theirs, torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=momentum, weight_decay=weight_decay))]
    for _ in range(15):
        x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
        for model, optimizer in steppers:
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    assert torch.equal(ours[2].bias, start["2.bias"]) and not torch.equal(ours[0].weight, start["0.weight"])


def test_digits_read_from_the_shipped_file_are_scikit_learns():
    from sklearn.datasets import load_digits

    from flowerbed.tasks.datasets import load_digits as ours

    data, bunch = ours({"test_fraction": 0.2}), load_digits()
    got = np.concatenate([data.x_train, data.x_test]).reshape(len(bunch.target), 64)
    want = ((bunch.data / 16.0 - 0.5) / 0.5).astype(np.float32)
    assert sorted(map(bytes, got)) == sorted(map(bytes, want))  # the same images, split into train and test
    assert np.array_equal(np.bincount(np.concatenate([data.y_train, data.y_test])), np.bincount(bunch.target))


def test_stored_computes_once_and_again_for_other_inputs_or_a_broken_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWERBED_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"rows": np.arange(len(calls) + 2)}

    labels = np.array([0, 1, 1])
    first = stored("kind", [1], [labels], compute)
    assert np.array_equal(stored("kind", [1], [labels], compute)["rows"], first["rows"]) and len(calls) == 1
    stored("kind", [2], [labels], compute)  # another setting
    stored("kind", [1], [labels[::-1].copy()], compute)  # other labels
    stored("kind", [1], [labels.astype(np.int32)], compute)  # the same values in another dtype
    assert len(calls) == 4
    for path in (tmp_path / "kind").glob("*.npz"):
        path.write_bytes(path.read_bytes()[:20])  # cut short
    stored("kind", [1], [labels], compute)
    assert len(calls) == 5


@pytest.mark.parametrize("cfg", [{"name": "dirichlet", "alpha": 0.3, "min_size": 2}, {"name": "pathological", "classes_per_client": 2},
                                 {"name": "iid"}])
def test_partitions_read_from_disk_are_flower_datasets_own(cfg, tmp_path, monkeypatch):
    from flowerbed.tasks.partitions import _flwr_partitions, _stored_partitions

    monkeypatch.setenv("FLOWERBED_CACHE", str(tmp_path))
    labels = np.random.default_rng(0).integers(0, 5, 300)
    computed = _stored_partitions(labels, cfg, 7, 3)
    assert len(list((tmp_path / "partitions").glob("*.npz"))) == 1
    for rows in (_stored_partitions(labels, cfg, 7, 3), _flwr_partitions(labels, cfg, 7, 3)):  # read back; computed anew
        assert all(np.array_equal(a, b) for a, b in zip(computed, rows, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(computed, _stored_partitions(labels, cfg, 7, 4)))  # another seed


def test_a_second_run_imports_neither_scikit_learn_nor_flower_datasets_nor_dynamo(tmp_path):
    """The first run on a dataset and partition computes the split and the partitions; the next one,
    in a fresh process, reads them and never imports the libraries that computed them."""
    script = ("import sys; from flowerbed.simulations.cli import main\n"
              "assert main(['run', 'rounds=1', 'clients.num=3', 'output.dir=' + sys.argv[1]]) == 0\n"
              "print('IMPORTED', [m for m in ('sklearn', 'flwr_datasets', 'datasets', 'torch._dynamo', 'flwr.superlink.grid')"
              " if m in sys.modules])\n")
    env = {"PATH": "/usr/bin:/bin", "FLOWERBED_CACHE": str(tmp_path / "cache"), "FLWR_TELEMETRY_ENABLED": "0",
           "HF_DATASETS_OFFLINE": "1", "HOME": str(tmp_path)}
    imported = []
    for run in ("first", "second"):
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / run)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        imported.append(json.loads(done.stdout.split("IMPORTED ", 1)[1].splitlines()[0].replace("'", '"')))
    assert {"sklearn", "flwr_datasets"} <= set(imported[0])  # computed here ...
    assert imported[1] == []  # ... read here
