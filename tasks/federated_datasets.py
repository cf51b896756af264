"""Flower Datasets (`flwr-datasets`) as a user's dataset: a `FederatedDataset` or a partitioner.

A loader named by `dataset.name=mypkg.data:load` may return either. Its samples become flowerbed's
arrays (an image column as float NCHW in [0, 1], an array column as it is, number columns side by
side; the label column is the one with a `ClassLabel` feature, else `label`/`labels`/`fine_label`/`y`). The train split's
partitioner decides who holds what: each sample's partition becomes its natural client (`groups`),
which `partition=natural` uses, so a flwr-datasets partitioner (Dirichlet, pathological, ...)
partitions a flowerbed run. Other `partition=` choices re-partition the same arrays flowerbed's way.

Where the rows went is read from the partitions themselves: the split is handed to the partitioner
with one extra column holding each row's index. A partitioner that already holds its dataset is
copied and given the tagged one (the copy keeps any partition it has computed, which holds for the
same rows in the same order).
"""

from __future__ import annotations

import copy

import numpy as np

from flowerbed.tasks.errors import ConfigError

ROW = "_flowerbed_row"
LABEL_NAMES = ("label", "labels", "fine_label", "y")


def is_flower_dataset(obj: object) -> bool:
    """A `FederatedDataset` or a flwr-datasets `Partitioner`, by what they offer (no import needed)."""
    return hasattr(obj, "load_partition") and (hasattr(obj, "load_split") or hasattr(obj, "num_partitions"))


def from_flower_dataset(obj, cfg: dict, where: str) -> dict[str, object]:
    """The arrays `tasks.datasets.as_array_dataset` reads: x/y of train and test, `groups` (each train
    sample's partition), `num_classes`, `class_names`."""
    if hasattr(obj, "load_split"):  # FederatedDataset
        train, partitioner = obj.load_split("train"), obj.partitioners.get("train")
        test = _split_or_none(obj, "test")
    else:
        train, partitioner, test = _assigned(obj, where), obj, None
    label = label_column(train, where)
    x, y = arrays(train, label, where), np.asarray(train[label])
    groups = partition_of_rows(partitioner, train, where) if partitioner is not None else None
    if test is None:  # no test split of its own: a share of the train split, its rows' clients kept
        from sklearn.model_selection import train_test_split

        train_rows, test_rows = train_test_split(np.arange(len(y)), test_size=float(cfg.get("test_fraction", 0.2)), random_state=0)
        x_te, y_te, x, y = x[test_rows], y[test_rows], x[train_rows], y[train_rows]
        groups = groups[train_rows] if groups is not None else None
    else:
        x_te, y_te = arrays(test, label, where), np.asarray(test[label])
    feature = train.features[label]
    found = {"x_train": x, "y_train": y, "x_test": x_te, "y_test": y_te, "groups": groups,
             "class_names": tuple(getattr(feature, "names", ()) or ())}
    if getattr(feature, "num_classes", None):
        found["num_classes"] = int(feature.num_classes)
    return found


def _split_or_none(fds, split: str):
    try:
        return fds.load_split(split)
    except ValueError:  # the dataset has no such split
        return None


def _assigned(partitioner, where: str):
    if not partitioner.is_dataset_assigned():
        raise ConfigError(f"{where}: the partitioner holds no dataset; set `partitioner.dataset = <datasets.Dataset>` "
                          "in the loader, or return a FederatedDataset")
    return partitioner.dataset


def label_column(ds, where: str) -> str:
    from datasets import ClassLabel

    found = [name for name, feature in ds.features.items() if isinstance(feature, ClassLabel)]
    found += [name for name in LABEL_NAMES if name in ds.features]
    if not found:
        raise ConfigError(f"{where}: no label column (a ClassLabel feature or one named {', '.join(LABEL_NAMES)}); "
                          f"its columns are {', '.join(ds.features)}")
    return found[0]


def arrays(ds, label: str, where: str) -> np.ndarray:
    """The samples: one image column as float32 NCHW in [0, 1], one array column as it is, or several
    number columns (a CSV's) side by side."""
    from datasets import Image, Value

    columns = [name for name in ds.features if name not in (label, ROW)]
    if len(columns) == 1 and isinstance(ds.features[columns[0]], Image):
        images = np.stack([np.asarray(image) for image in ds[columns[0]]])
        images = images[..., None] if images.ndim == 3 else images
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
    numpy = ds.with_format("numpy")
    if len(columns) == 1:
        return np.asarray(numpy[columns[0]])
    if columns and all(isinstance(ds.features[c], Value) for c in columns):
        return np.stack([np.asarray(numpy[c]) for c in columns], axis=1)
    raise ConfigError(f"{where}: the samples must be one image or array column, or number columns, besides the label "
                      f"{label!r}; found {', '.join(columns) or 'none'}")


def partition_of_rows(partitioner, train, where: str) -> np.ndarray:
    """Each train row's partition id (-1: in none), read from the partitions of the tagged split."""
    tagged = train.add_column(ROW, np.arange(len(train)))
    if partitioner.is_dataset_assigned():
        partitioner = copy.deepcopy(partitioner)
        partitioner._dataset = None  # Partitioner.dataset may be set once; the copy gets the tagged rows
    partitioner.dataset = tagged
    groups = np.full(len(train), -1, dtype=np.int64)
    for pid in range(partitioner.num_partitions):
        groups[np.asarray(partitioner.load_partition(pid)[ROW], dtype=np.int64)] = pid
    if (groups < 0).any():
        raise ConfigError(f"{where}: {int((groups < 0).sum())} train samples are in no partition of "
                          f"{type(partitioner).__name__}; flowerbed's natural partition gives every sample a client")
    return groups
