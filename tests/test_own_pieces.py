"""A user's own model, dataset and algorithm, named in the config, from a folder outside the repository;
and `flowerbed.run`, the Python API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flowerbed.tasks.errors import ConfigError
from tests.conftest import ROOT as PROJECT_ROOT
from tests.conftest import flowerbed, read_metrics

NETS = '''
from torch import nn


def build_net(input_shape, num_classes):
    """A user's model: any torch.nn.Module from (input_shape, num_classes)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], 16), nn.ReLU(), nn.Linear(16, num_classes))
'''

DATA = '''
import numpy as np


def load(cfg):
    """A user's dataset: three well-separated blobs in 6 dimensions, x and y (flowerbed splits them)."""
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(3), 200)
    centres = rng.normal(0.0, 4.0, size=(3, 6))
    return {"x": centres[y] + rng.normal(size=(600, 6)), "y": y}
'''


def user_package(root: Path, name: str) -> Path:
    """`name/nets.py` and `name/data.py` under `root`, a folder outside the repository."""
    assert not root.resolve().is_relative_to(PROJECT_ROOT)
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    (root / name / "nets.py").write_text(NETS)
    (root / name / "data.py").write_text(DATA)
    return root


def test_flowerbed_run_trains_a_users_model_on_a_users_dataset_from_outside_the_repository(tmp_path):
    """The must-show: `flowerbed run model.name=mylab.nets:build_net dataset.name=mylab.data:load`, the
    folder on PYTHONPATH, started from that folder; two rounds learn the blobs."""
    user = user_package(tmp_path / "user", "mylab")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(user), str(PROJECT_ROOT)])}
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "flowerbed.simulations.cli", "run", "model.name=mylab.nets:build_net",
                           "dataset.name=mylab.data:load", "rounds=2", "clients.num=4", "train.num_threads=1", f"output.dir={out}"],
                          cwd=user, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = read_metrics(out)
    assert [m["round"] for m in metrics] == [0, 1, 2]
    assert len(metrics[0]["global/acc_per_class"]) == 3  # the user's three classes
    assert metrics[2]["global/acc"] > 0.9 > metrics[0]["global/acc"]
    assert (out / "config.yaml").read_text().count("mylab.") == 2


@pytest.mark.parametrize("override, says", [
    ("model.name=nosuchlab.nets:build_net", "model.name='nosuchlab.nets:build_net' is not valid: package.module:function of an "
                                            "importable module: no module named 'nosuchlab' (is its folder on PYTHONPATH?)"),
    ("dataset.name=errlab.data:lod", "dataset.name='errlab.data:lod' is not valid: package.module:function: module errlab.data has no 'lod'"),
    ("model.name=errlab.nets:", "model.name='errlab.nets:' is not valid: package.module:function, both parts given"),
    ("model.name=mynett", "model.name='mynett' is not valid: one of cnn, "),
    ("model.name=errlab.nets:build_net", "model.name='errlab.nets:build_net' is not valid: a model that takes this dataset's "
                                         "samples of shape (1, 8, 8) (RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
])
def test_a_bad_reference_is_one_line_naming_key_value_and_what_is_wrong(override, says, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(user_package(tmp_path / "user", "errlab")))
    assert flowerbed("run", "experiment=smoke", override, f"output.dir={tmp_path}/run") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"flowerbed: error: {says}") and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_entry_points_name_a_users_model_and_dataset(tmp_path, monkeypatch):
    """An installed package's `flowerbed.models` / `flowerbed.datasets` entry points, by plain name."""
    from flowerbed import run

    user = user_package(tmp_path / "site", "eplab")
    info = user / "eplab-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: eplab\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[flowerbed.models]\nblobnet = eplab.nets:build_net\n\n"
                                           "[flowerbed.datasets]\nblobs = eplab.data:load\n")
    monkeypatch.syspath_prepend(str(user))
    results = run({"experiment": "smoke", "model.name": "blobnet", "dataset.name": "blobs", "output.dir": str(tmp_path / "run")})
    assert results.metrics[-1]["global/acc"] > 0.9


ALGORITHM = '''
from flowerbed.clients.fedavg import FedAvgClient
from flowerbed.strategies.flower import FedAvg
from flowerbed.strategies.registry import common
from flowerbed.tasks.plugins import Algorithm


class CountingFedAvg(FedAvg):
    """FedAvg that reports how many replies it averaged."""

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        metrics["mine/replies"] = len(replies)
        return arrays, metrics


counting = Algorithm(strategy=lambda cfg: CountingFedAvg(**common(cfg)), client=FedAvgClient)
'''


def test_python_api_runs_a_users_algorithm_and_returns_the_metrics(tmp_path, monkeypatch):
    """`flowerbed.run(...)` returns the per-round metrics and the summary; `algorithm.name` names a
    user's `Algorithm` (server and client half) as module:attribute."""
    from flowerbed import run

    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "algolab.py").write_text(ALGORITHM)
    monkeypatch.syspath_prepend(str(tmp_path / "user"))
    results = run(["experiment=smoke", "algorithm.name=algolab:counting", f"output.dir={tmp_path / 'run'}"])
    assert [m["round"] for m in results.metrics] == [0, 1, 2]
    assert [m["mine/replies"] for m in results.metrics[1:]] == [4, 4]
    assert results.summary["rounds"] == 2 and results.summary["final/global/acc"] == results.metrics[-1]["global/acc"]
    assert results.metrics[-1]["global/loss"] < results.metrics[0]["global/loss"]
    assert results.config["algorithm.name"] == "algolab:counting" and results.output_dir == tmp_path / "run"


def test_python_api_raises_the_commands_one_line(tmp_path):
    from flowerbed import run

    with pytest.raises(ConfigError, match=r"^partition.alpha=0.0 is not valid: "):
        run({"partition.alpha": 0.0, "output.dir": str(tmp_path / "run")})
    with pytest.raises(ValueError, match="^flowerbed.run takes a list of key=value strings or a dict"):
        run("algorithm=fedavg")
    assert not (tmp_path / "run").exists()


def test_importing_flowerbed_stays_light():
    code = "import sys, flowerbed; assert callable(flowerbed.run); print(sorted(m for m in ('torch', 'flwr') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


FLOWER_DATASETS = '''
import numpy as np
from datasets import ClassLabel, Dataset, Features, Sequence, Value
from flwr_datasets import FederatedDataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner


def blobs():
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(3), 100)
    return rng.normal(0.0, 4.0, size=(3, 4))[y] + rng.normal(size=(300, 4)), y


def partitioner(cfg):
    """A flwr-datasets partitioner holding a datasets.Dataset: its partitions are the clients."""
    x, y = blobs()
    features = Features({"x": Sequence(Value("float32")), "label": ClassLabel(num_classes=3)})
    part = DirichletPartitioner(num_partitions=4, partition_by="label", alpha=0.5, seed=1, min_partition_size=5)
    part.dataset = Dataset.from_dict({"x": x.tolist(), "label": y.tolist()}, features=features)
    return part


def federated(cfg):
    """A FederatedDataset over a local CSV (Hugging Face's packaged csv builder: no download)."""
    import csv
    import tempfile

    x, y = blobs()
    path = tempfile.mkdtemp() + "/blobs.csv"
    with open(path, "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["a", "b", "c", "d", "label"])
        rows.writerows([*map(float, xi), int(yi)] for xi, yi in zip(x, y))
    return FederatedDataset(dataset="csv", data_files={"train": path}, partitioners={"train": IidPartitioner(4)})
'''


@pytest.mark.parametrize("loader", ["partitioner", "federated"])
def test_flower_datasets_partitions_are_the_natural_clients(loader, tmp_path, monkeypatch):
    from flowerbed.tasks.partitions import build_federation
    from flowerbed.simulations import config

    (tmp_path / "user").mkdir()
    (tmp_path / "user" / f"fdslab_{loader}.py").write_text(FLOWER_DATASETS)
    monkeypatch.syspath_prepend(str(tmp_path / "user"))
    cfg = config.load(["experiment=smoke", f"dataset.name=fdslab_{loader}:{loader}", "partition=natural", "model=mlp"])
    fed = build_federation(cfg)
    data = fed.data
    assert data.num_classes == 3 and data.input_shape == (4,) and len(data.y_train) + len(data.y_test) == 300
    by_partition = np.array([np.bincount(data.y_train[data.groups == k], minlength=3) for k in range(4)])
    assert (fed.label_counts() == by_partition).all()  # client k holds exactly partition k's samples
    if loader == "partitioner":  # Dirichlet(0.5) by label: clients of unequal class mixes
        assert len(set(map(tuple, by_partition.tolist()))) == 4
    else:  # IID: 75 samples each, less the ones drawn into the test split
        assert (abs(by_partition.sum(1) - 60) <= 6).all()
