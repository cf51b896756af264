"""Training samples held out for pretraining a backbone, which the federation then never uses.

`flowerbed pretrain` trains a model (the tiny ViT, or any other) on `pretrain_indices(n, f)`; a run with
`partition.pretrain_fraction=f` removes the same indices from every client's pool. The split is
a fixed permutation (seed 0), independent of the run seed, so one checkpoint serves all seeds.
Indices are positions, so they name the same images only in the same copy of the data in the same
order (the Hub's CIFAR-10 and an image-folder copy order their samples differently):
`fingerprint` identifies the held-out images themselves, and a checkpoint records it;
`pretrained_part` reads a checkpoint and refuses one whose held-out samples are not the run's.
"""

from __future__ import annotations

import hashlib

import numpy as np

from flowerbed.tasks.errors import ConfigError


def pretrain_indices(num_train: int, fraction: float) -> np.ndarray:
    count = int(round(fraction * num_train))
    return np.sort(np.random.default_rng([0, 5]).permutation(num_train)[:count])


def fingerprint(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> str:
    """A digest of the held-out samples: all their labels and every k-th image (about 256 of them)."""
    digest = hashlib.sha256(np.ascontiguousarray(y[idx]).tobytes())
    digest.update(np.ascontiguousarray(x[idx[:: max(1, len(idx) // 256)]]).tobytes())
    return digest.hexdigest()[:16]


def _held_out(cfg: dict, fraction: float) -> str | None:
    """The fingerprint of the samples this run's federation leaves out; None where the dataset is not
    here (a device with its own data-path has no federation to leak into)."""
    from flowerbed.tasks.datasets import load_dataset

    try:
        data = load_dataset({k[len("dataset."):]: v for k, v in cfg.items() if k.startswith("dataset.")})
    except ConfigError:
        return None
    return fingerprint(data.x_train, data.y_train, pretrain_indices(len(data.y_train), fraction))


def check_pretrained(key: str, path, meta: dict, cfg: dict) -> None:
    """Refuse (one ConfigError line naming `key`) weights pretrained on samples this run's clients hold:
    another dataset, another `partition.pretrain_fraction`, or another copy or order of the data."""
    if not meta:
        return
    fraction = float(cfg.get("partition.pretrain_fraction", 0.0))
    if meta["dataset"] != cfg.get("dataset.name") or meta["pretrain_fraction"] != fraction:
        raise ConfigError(f"{key}={str(path)!r} was pretrained on {meta['dataset']} with partition.pretrain_fraction="
                          f"{meta['pretrain_fraction']}; this run has {cfg.get('dataset.name')} and {fraction} "
                          "(the federation must exclude those samples)")
    here = _held_out(cfg, fraction) if meta.get("held_out") else None
    if here is not None and here != meta["held_out"]:
        raise ConfigError(f"{key}={str(path)!r} was pretrained on other {meta['dataset']} samples than this run "
                          "holds out (another copy or order of the data: dataset.path or the Hub); run `flowerbed pretrain` "
                          "again with this run's dataset settings")


def pretrained_part(saved: dict, part: str, key: str, path, cfg: dict) -> dict:
    """The state dict `flowerbed pretrain` saved under `part` ("backbone" for the tiny ViT, "model"
    otherwise), checked against the run's held-out samples; any other dict (a plain state dict) as it is."""
    if not isinstance(saved.get(part), dict):
        return saved
    check_pretrained(key, path, saved.get("meta", {}), cfg)
    return saved[part]
