"""The client types of a multimodal federation (CreamFL): image-text, image-only and text-only.

`clients.num` counts every client. `partition.image_clients` of them hold labeled images
(`dataset.image_path`: the ImageFolder layout, e.g. CIFAR-10's `train/<class>/*.jpg`), and
`partition.text_clients` labeled text (`dataset.text_path`: AG News's CSV layout,
tasks/labeled_text.py); the others hold image-text pairs (the captions dataset, tasks/retrieval.py).
Client ids: the image-text clients first (as in a run without uni-modal clients), then the image
clients, then the text clients.

Uni-modal data [choices]: `dataset.image_samples` / `dataset.text_samples` rows drawn at random
(seeded; 0: all; images from the folder's train/ split where it has one), split over the type's
clients by a Dirichlet over classes (`partition.unimodal_alpha`; Flower Datasets' partitioner, as
`partition=dirichlet`), then each client's rows split into its training rows and a local test set
(`dataset.test_fraction` of them, seeded). Images are resized to `dataset.image_shape` and
standardized with their own channel statistics. Text is tokenized with the vocabulary of the
training captions (tasks/retrieval.py's `caption_vocabulary`), cut to `dataset.max_words`: a word
has the same id for a text client's encoder as in the public captions, and a word the captions do
not have is the unknown id (one vocabulary for the federation, as the code's shared GloVe table).

Bad input is one `ConfigError` line: uni-modal clients without their data path, a file in another
layout (the readers' own messages), a client left with no rows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from flowerbed.tasks import imagefolder, labeled_text
from flowerbed.tasks.config_key import data_key
from flowerbed.tasks.datasets import cache_dir, channel_stats, scale
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.local_data import ClientArrays
from flowerbed.tasks.partitions import dirichlet_partitions, section
from flowerbed.tasks.retrieval import caption_vocabulary, image_text_clients
from flowerbed.tasks.text import encode

IMAGE_TEXT, IMAGE, TEXT = "image-text", "image", "text"
TYPES = (IMAGE_TEXT, IMAGE, TEXT)
PATH_KEYS = {IMAGE: "dataset.image_path", TEXT: "dataset.text_path"}
COUNT_KEYS = {IMAGE: "partition.image_clients", TEXT: "partition.text_clients"}


@dataclass(frozen=True)
class LabeledRows:
    """One modality's labeled rows (images (n, C, H, W) float32 or word ids (n, L) int64) and their classes."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int


def client_type(cfg: dict, index: int) -> str:
    """Client `index`'s type in a simulated federation (ids as the module docstring orders them)."""
    pairs, images = image_text_clients(cfg), int(cfg.get(COUNT_KEYS[IMAGE], 0))
    return IMAGE_TEXT if index < pairs else IMAGE if index < pairs + images else TEXT


def check(cfg: dict) -> None:
    """Read and partition every uni-modal type the config asks for: its errors before any work."""
    for kind in (IMAGE, TEXT):
        if int(cfg.get(COUNT_KEYS[kind], 0)) > 0:
            _partition(data_key(cfg), kind)


def unimodal_arrays(cfg: dict, index: int) -> ClientArrays:
    """Uni-modal client `index`'s training rows and local test set."""
    kind = client_type(cfg, index)
    rows, shares = _partition(data_key(cfg), kind)
    first = image_text_clients(cfg) + (int(cfg.get(COUNT_KEYS[IMAGE], 0)) if kind == TEXT else 0)
    train, test = shares[index - first]
    return ClientArrays(rows.x[train], rows.y[train], rows.x[:0], rows.y[:0], rows.x[test], rows.y[test], rows.num_classes)


def read_rows(cfg: dict, kind: str, path: str, key: str) -> LabeledRows:
    """The labeled rows of the file or folder at `path` (`key` names it in errors), as `kind` reads them."""
    d = section(cfg, "dataset")
    if kind == IMAGE:
        shape = imagefolder.image_shape(str(d.get("image_shape") or "3x32x32"), "dataset.image_shape")
        images = imagefolder.load_cached(path, shape, cache_dir(d), key, "dataset.image_shape")
        return LabeledRows(scale(images.x_train, *channel_stats(images.x_train)), images.y_train.astype(np.int64),
                           len(images.classes))
    text = labeled_text.read(path, key)
    ids = encode(text.texts, caption_vocabulary(cfg), int(d.get("max_words", 16)))
    return LabeledRows(ids, text.labels, text.num_classes)


@functools.lru_cache(maxsize=4)
def _partition(keys: tuple, kind: str) -> tuple[LabeledRows, list[tuple[np.ndarray, np.ndarray]]]:
    cfg = dict(keys)
    count, seed = int(cfg.get(COUNT_KEYS[kind], 0)), int(cfg["seed"])
    path = str(cfg.get(PATH_KEYS[kind], "")).strip()
    if not path:
        layout = imagefolder.LAYOUT if kind == IMAGE else labeled_text.LAYOUT
        raise ConfigError.invalid(PATH_KEYS[kind], path, f"the {kind} clients' data for {COUNT_KEYS[kind]}={count}: {layout}")
    rows = read_rows(cfg, kind, path, PATH_KEYS[kind])
    wanted = int(cfg.get(f"dataset.{kind}_samples", 0))
    if 0 < wanted < len(rows.y):
        keep = np.sort(np.random.default_rng([seed, 11, TYPES.index(kind)]).permutation(len(rows.y))[:wanted])
        rows = LabeledRows(rows.x[keep], rows.y[keep], rows.num_classes)
    alpha, min_size = float(cfg.get("partition.unimodal_alpha", 0.1)), int(cfg.get("partition.min_size", 2))
    if count > len(rows.y):
        raise ConfigError.invalid(COUNT_KEYS[kind], count, f"at most the {len(rows.y)} rows of {PATH_KEYS[kind]}")
    positions = dirichlet_partitions(rows.y, alpha, min_size, count, seed) if count > 1 else [np.arange(len(rows.y))]
    test_fraction = float(cfg.get("dataset.test_fraction", 0.2))
    shares = []
    for k, pos in enumerate(positions):
        train, test = holdout(np.asarray(pos, np.int64), test_fraction, np.random.default_rng([seed, 12, TYPES.index(kind), k]))
        if len(train) == 0:
            raise ConfigError(f"{COUNT_KEYS[kind]}={count}: {kind} client {k} received no training rows of {PATH_KEYS[kind]} "
                              f"({len(pos)} in all); use fewer clients, more rows or a larger partition.unimodal_alpha")
        shares.append((train, test))
    return rows, shares


def holdout(rows: np.ndarray, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`rows` split at random into sorted training rows and a `test_fraction` of them as a local test set."""
    order = rng.permutation(rows)
    n_test = int(round(test_fraction * len(order)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])
