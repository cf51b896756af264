"""Every registered algorithm learns with its own defaults on the default data and model.

`flowerbed run algorithm=<name>` and nothing else (the prompt methods also get the prompted tiny
ViT they need, on a backbone pretrained here; FedBN and FRAug a model with BatchNorm) must end a short run well above chance: a
broken algorithm (a model that does not train, an aggregation that averages into noise, a frozen
classifier the backbone cannot learn through) scores about 10% on digits' balanced test set, and
a client model that predicts its own majority class about 30% on the local test sets. The list
comes from the registries, so a new algorithm is covered without an edit here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flowerbed.experiments.defaults_table import ALGORITHMS, model_overrides, rounds_for
from tests.conftest import flowerbed, read_metrics

CHANCE = 0.1  # ten balanced classes
GLOBAL_MIN = 2.5 * CHANCE  # round 0 scores ~10%; a model that does not learn stays there
PERSONAL_MARGIN = 0.2  # above the mean majority-class share of the local test sets


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ckpt") / "tiny-vit-digits.pt"


def majority_share(overrides: list[str]) -> float:
    """What predicting each client's most frequent class scores on its local test set, on average."""
    from flowerbed.clients.data import local_data
    from flowerbed.simulations import config

    cfg = config.load(overrides)
    shares = []
    for k in range(int(cfg["clients.num"])):
        y = local_data(cfg, {"partition-id": k, "num-partitions": int(cfg["clients.num"])}, torch.device("cpu")).y_test
        shares.append(torch.bincount(y).max().item() / len(y))
    return float(np.mean(shares))


@pytest.mark.parametrize("name", ALGORITHMS)
def test_algorithm_learns_with_its_defaults(name, tmp_path, checkpoint):
    overrides, rounds = [f"algorithm={name}", *model_overrides(name, checkpoint)], rounds_for(name)
    assert flowerbed("run", *overrides, f"rounds={rounds}", f"evaluate.every={rounds}", f"output.dir={tmp_path / 'run'}") == 0
    last = read_metrics(tmp_path / "run")[-1]
    assert last["round"] == rounds
    if "global/acc" in last:
        assert last["global/acc"] >= GLOBAL_MIN, f"{name}: global accuracy {last['global/acc']:.3f} after {rounds} rounds"
    else:  # personalized only: beat every client predicting its own majority class
        floor = majority_share(overrides) + PERSONAL_MARGIN
        assert last["personal/acc"] >= floor, f"{name}: personal accuracy {last['personal/acc']:.3f} < {floor:.3f}"
