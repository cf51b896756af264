"""A client's own data as tensors on its device, loaded once per process."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from tasks import domains
from tasks.partitions import build_federation


@dataclass(frozen=True)
class LocalData:
    """Labeled and unlabeled training data and the local test set of one client.

    `y_unlabeled` holds the true labels of the unlabeled part: only diagnostics read it.
    """

    x_labeled: torch.Tensor
    y_labeled: torch.Tensor
    x_unlabeled: torch.Tensor
    y_unlabeled: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]


def client_index(node_config: dict) -> int:
    """The simulated partition this node holds."""
    return int(node_config["partition-id"])


def local_data(run_config: dict, node_config: dict, device: torch.device) -> LocalData:
    keys = tuple(sorted(run_config.items()))
    return _local_data(keys, client_index(node_config), str(device))


@functools.lru_cache(maxsize=512)
def _local_data(keys: tuple, index: int, device: str) -> LocalData:
    fed = build_federation(dict(keys))
    split, d = fed.clients[index], fed.data
    as_x = lambda a: torch.as_tensor(np.ascontiguousarray(a)).to(device)  # noqa: E731
    # partition.domain_shift: this client's own image transform, on its training and test data
    view = (lambda a: domains.shift(a, index)) if dict(keys).get("partition.domain_shift") else (lambda a: a)  # noqa: E731
    return LocalData(
        as_x(view(d.x_train[split.labeled])), as_x(d.y_train[split.labeled]),
        as_x(view(d.x_train[split.unlabeled])), as_x(d.y_train[split.unlabeled]),
        as_x(view(d.x_test[split.test])), as_x(d.y_test[split.test]),
        d.num_classes, d.input_shape,
    )
