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

from clients.registry import CLIENTS
from simulations.config import group_options
from strategies.pfedpg import PromptStrategy
from strategies.registry import LOCAL_BATCHNORM, STRATEGIES
from tests.conftest import flowerbed, read_metrics

ROUNDS = 6  # the slowest starters (Krum, FedMedian, FedAdam on Dir(0.5)) need about this many
ALGORITHMS = sorted(set(CLIENTS) & set(STRATEGIES) & set(group_options("algorithm")))
CHANCE = 0.1  # ten balanced classes
GLOBAL_MIN = 2.5 * CHANCE  # round 0 scores ~10%; a model that does not learn stays there
PERSONAL_MARGIN = 0.2  # above the mean majority-class share of the local test sets


def prompt_method(name: str) -> bool:
    from simulations import config

    cfg = config.load([f"algorithm={name}"], load_data=False)
    return isinstance(STRATEGIES[name](cfg), PromptStrategy)


def model_overrides(name: str, checkpoint: Path) -> list[str]:
    """What an algorithm needs besides its name: FedBN/FRAug a model with BatchNorm (the one their
    refusal of `cnn` names); the prompt methods the prompted tiny ViT on a backbone pretrained for 10
    epochs on the held-out half of digits' training set (64% test accuracy), into `checkpoint` on
    first use."""
    if name in LOCAL_BATCHNORM:
        return ["model=cnn_bn"]
    if not prompt_method(name):
        return []
    if not checkpoint.exists():
        from simulations import config
        from simulations.pretrain import pretrain

        pretrain(config.load(["partition.pretrain_fraction=0.5"], load_data=False), epochs=10, out=str(checkpoint))
    return ["model=prompted-tiny-vit", "partition.pretrain_fraction=0.5", f"model.weights={checkpoint}"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ckpt") / "tiny-vit-digits.pt"


def majority_share(overrides: list[str]) -> float:
    """What predicting each client's most frequent class scores on its local test set, on average."""
    from clients.data import local_data
    from simulations import config

    cfg = config.load(overrides)
    shares = []
    for k in range(int(cfg["clients.num"])):
        y = local_data(cfg, {"partition-id": k, "num-partitions": int(cfg["clients.num"])}, torch.device("cpu")).y_test
        shares.append(torch.bincount(y).max().item() / len(y))
    return float(np.mean(shares))


@pytest.mark.parametrize("name", ALGORITHMS)
def test_algorithm_learns_with_its_defaults(name, tmp_path, checkpoint):
    overrides = [f"algorithm={name}", *model_overrides(name, checkpoint)]
    assert flowerbed("run", *overrides, f"rounds={ROUNDS}", f"evaluate.every={ROUNDS}", f"output.dir={tmp_path / 'run'}") == 0
    last = read_metrics(tmp_path / "run")[-1]
    assert last["round"] == ROUNDS
    if "global/acc" in last:
        assert last["global/acc"] >= GLOBAL_MIN, f"{name}: global accuracy {last['global/acc']:.3f} after {ROUNDS} rounds"
    else:  # personalized only: beat every client predicting its own majority class
        floor = majority_share(overrides) + PERSONAL_MARGIN
        assert last["personal/acc"] >= floor, f"{name}: personal accuracy {last['personal/acc']:.3f} < {floor:.3f}"
