"""A client's own data as tensors on its device, loaded once per process.

In simulation a node holds partition `partition-id` of the run's federation. A SuperNode on a
device names its own files instead (`--node-config 'client-id=3 data-path=...'`, tasks/local_data.py);
`client-id` is then its stable identity for the server's per-client state and for its state-dir.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import torch

from flowerbed.tasks.config_key import config_key
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.local_data import ClientArrays, load_local, partition_arrays

NODE_OPTIONS = ("num-classes", "test-fraction", "image-shape", "classes")  # read with data-path


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
    """This node's stable client id: its configured `client-id` on a device, else its partition."""
    for key in ("client-id", "partition-id"):
        value = node_config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not str(value).strip().isdigit():
            raise ConfigError.invalid(key, value, "a non-negative integer, different on every node of the federation")
        return int(str(value).strip())
    raise ConfigError("the node has no client-id: start the SuperNode with --node-config 'client-id=N data-path=\"...\"'")


def local_data(run_config: dict, node_config: dict, device: torch.device) -> LocalData:
    if node_config.get("data-path"):
        path = os.path.expanduser(str(node_config["data-path"]))
        stamp = os.stat(path).st_mtime_ns if os.path.isfile(path) else 0  # a replaced file is read again
        dataset = tuple(sorted((k, v) for k, v in run_config.items() if k.startswith("dataset.")))
        options = tuple((k, str(node_config[k])) for k in NODE_OPTIONS if k in node_config)
        return _node_data(path, stamp, dataset, options, str(device))
    return _local_data(config_key(run_config), client_index(node_config), str(device))


@functools.lru_cache(maxsize=512)
def _local_data(keys: tuple, index: int, device: str) -> LocalData:
    return as_local_data(partition_arrays(dict(keys), index), device)


@functools.lru_cache(maxsize=8)
def _node_data(path: str, stamp: int, dataset: tuple, options: tuple, device: str) -> LocalData:
    return as_local_data(load_local(path, dict(dataset), dict(options)), device)


def as_local_data(a: ClientArrays, device: str) -> LocalData:
    """A client's arrays as tensors on `device`."""
    as_x = lambda v: torch.as_tensor(np.ascontiguousarray(v)).to(device)  # noqa: E731
    return LocalData(
        as_x(a.x_labeled), as_x(a.y_labeled), as_x(a.x_unlabeled), as_x(a.y_unlabeled),
        as_x(a.x_test), as_x(a.y_test), a.num_classes, tuple(a.x_labeled.shape[1:]),
    )
