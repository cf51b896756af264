"""A client's data as plain arrays: a simulated partition, or the files on a device.

On a real device there is no federation to partition: the device holds what it holds, named by its
SuperNode's `--node-config data-path=...`. Two forms are read:

- an `.npz` with `x` (samples first) and integer labels `y`, and optionally `x_test`/`y_test` (the
  local test set for personalized accuracy), `x_unlabeled`/`y_unlabeled` (for the semi-supervised
  algorithms; `y_unlabeled` only feeds diagnostics) and `num_classes` (the model's output size).
  `flowerbed deploy export` writes exactly this from a simulated partition, so a deployment and the
  `sequential` engine train on the same arrays in the same order;
- a folder of class-named image folders, `DIR/<class>/*.png|jpg|...`, or split as `DIR/train/<class>/`
  and `DIR/test/<class>/`, read by tasks/imagefolder.py (the reader `dataset=imagefolder` uses too).
  Images are resized and normalised as the run's dataset is (`IMAGE_FORMS`), so that a device's
  photos look to the model like the data it was configured for.

Without a test set, a fixed share of the samples (`test-fraction`, default 0.2) is held out with a
fixed seed. Every way a data path can be unusable is one `ConfigError` line naming `data-path`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowerbed.tasks import domains, imagefolder
from flowerbed.tasks.datasets import HUB_DATASETS, MNIST_MEAN, MNIST_STD, integer_labels, load_dataset, numeric_samples, read_npz, scale
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.partitions import section

KEY = "data-path"


@dataclass(frozen=True)
class ClientArrays:
    """One client's training (labeled, unlabeled) and local test arrays, float32 x and int64 y."""

    x_labeled: np.ndarray
    y_labeled: np.ndarray
    x_unlabeled: np.ndarray
    y_unlabeled: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


@dataclass(frozen=True)
class ImageForm:
    """How a dataset's images look to the model: (channels, height, width) and per-channel mean/std."""

    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


# digits are scaled (x/16 - 0.5)/0.5, i.e. (x/255 - 0.5)/0.5 for an 8-bit image of a digit
IMAGE_FORMS: dict[str, ImageForm] = {
    "digits": ImageForm((1, 8, 8), (0.5,), (0.5,)),
    "mnist5k": ImageForm((1, 28, 28), (MNIST_MEAN,), (MNIST_STD,)),
    **{name: ImageForm(spec.shape, spec.mean, spec.std) for name, spec in HUB_DATASETS.items()},
}


# -- a simulated partition ------------------------------------------------------------------------
def partition_arrays(run_config: dict, index: int) -> ClientArrays:
    """The arrays simulated client `index` trains and tests on (after its domain shift, if any)."""
    from flowerbed.tasks.registry import task_of  # the tasks import models and torch; reading a device's files does not

    fed = task_of(run_config).federation(run_config)
    split, d = fed.clients[index], fed.data
    # partition.domain_shift: this client's own image transform, on its training and test data
    view = (lambda a: a)  # noqa: E731
    if run_config.get("partition.domain_shift"):
        names, form = domains.parse(run_config.get("partition.domains")), IMAGE_FORMS.get(str(run_config.get("dataset.name")))
        scale = (form.mean, form.std) if form else None
        view = lambda a: domains.shift(a, index, names, scale)  # noqa: E731
    return ClientArrays(
        view(d.x_train[split.labeled]), d.y_train[split.labeled],
        view(d.x_train[split.unlabeled]), d.y_train[split.unlabeled],
        view(d.x_test[split.test]), d.y_test[split.test], d.num_classes,
    )


def save_npz(path: Path, arrays: ClientArrays) -> None:
    """Write what `load_npz` reads back bit for bit (written to a temporary name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp, x=arrays.x_labeled, y=arrays.y_labeled, x_unlabeled=arrays.x_unlabeled, y_unlabeled=arrays.y_unlabeled,
        x_test=arrays.x_test, y_test=arrays.y_test, num_classes=np.int64(arrays.num_classes),
    )
    tmp.replace(path)


# -- a device's own files -------------------------------------------------------------------------
KNOWN_NUM_CLASSES = {"digits": 10, "mnist5k": 10, "synthetic": 10}


def dataset_num_classes(run_config: dict) -> int:
    """The class count of the run's dataset: the model's output size the server also builds.

    Known without loading the dataset where possible: a device need not have scikit-learn, the
    embedded datasets or a Hub download just to learn that digits have ten classes.
    """
    name = run_config.get("dataset.name")
    if name in HUB_DATASETS:
        return HUB_DATASETS[name].num_classes
    if name in KNOWN_NUM_CLASSES:
        return KNOWN_NUM_CLASSES[name]
    if name == "fake-images":
        return int(run_config["dataset.num_classes"])
    return load_dataset(section(run_config, "dataset")).num_classes


def load_local(path: str, run_config: dict, options: dict) -> ClientArrays:
    """Read a device's `data-path` (an `.npz` or a folder of class folders).

    `options` are the node's other `--node-config` entries: `num-classes`, `test-fraction`,
    `image-shape` ("3x32x32"), `classes` ("cat,dog,...": label order for non-numeric folder names).
    """
    where = Path(str(path)).expanduser()
    if not where.exists():
        raise ConfigError.invalid(KEY, str(where), "an existing .npz file (arrays x, y) or a folder of class-named image folders")
    if where.is_dir():
        arrays = _load_folder(where, run_config, options)
    else:
        arrays = _load_npz(where, run_config, options)
    _check_labels(where, arrays)
    return arrays


def _num_classes(run_config: dict, options: dict, stored: int | None) -> int:
    if options.get("num-classes") not in (None, ""):
        return int(options["num-classes"])
    return stored if stored is not None else dataset_num_classes(run_config)


def _load_npz(path: Path, run_config: dict, options: dict) -> ClientArrays:
    arrays, where = read_npz(path, KEY), _where(path)
    if "x_test" in arrays and "y_test" not in arrays:  # read_npz holds x and y; x_unlabeled needs no labels
        raise ConfigError(f"{where}: x_test without y_test")
    x = numeric_samples(where, "x", arrays["x"])
    y = integer_labels(where, "y", arrays["y"], len(x))
    if len(x) == 0:
        raise ConfigError(f"{where}: x holds no samples")
    stored = int(arrays["num_classes"]) if "num_classes" in arrays else None
    if "x_test" in arrays:
        x_te = numeric_samples(where, "x_test", arrays["x_test"])
        y_te = integer_labels(where, "y_test", arrays["y_test"], len(x_te))
    else:
        x, y, x_te, y_te = _hold_out(x, y, float(options.get("test-fraction", 0.2)))
    if "x_unlabeled" in arrays:
        x_u = numeric_samples(where, "x_unlabeled", arrays["x_unlabeled"])
        # unknown labels are -1: they only feed pseudo-label diagnostics, never training
        y_u = np.full(len(x_u), -1, np.int64)
        if "y_unlabeled" in arrays:
            y_u = integer_labels(where, "y_unlabeled", arrays["y_unlabeled"], len(x_u), low=-1)
    else:
        x_u, y_u = x[:0], y[:0]
    for name, other in (("x_test", x_te), ("x_unlabeled", x_u)):
        if len(other) and other.shape[1:] != x.shape[1:]:
            raise ConfigError(f"{where}: {name} samples have shape {other.shape[1:]}, x samples {x.shape[1:]}")
    return ClientArrays(x, y, x_u, y_u, x_te, y_te, _num_classes(run_config, options, stored))


def _where(path: Path) -> str:
    """`data-path='...'`: how every message about this file starts."""
    return f"{KEY}={str(path)!r}"


def _check_labels(path: Path, a: ClientArrays) -> None:
    for name, y in (("y", a.y_labeled), ("y_test", a.y_test)):
        if len(y) and (y.min() < 0 or y.max() >= a.num_classes):
            raise ConfigError(f"{_where(path)}: {name} holds labels outside 0..{a.num_classes - 1} "
                              f"(the run's model has {a.num_classes} classes; set num-classes in --node-config if that is wrong)")


def _hold_out(x: np.ndarray, y: np.ndarray, fraction: float) -> tuple[np.ndarray, ...]:
    """A fixed share of the samples as the local test set (fixed seed: the same split every restart)."""
    if not 0 <= fraction < 1:
        raise ConfigError.invalid("test-fraction", fraction, "in [0, 1)")
    order = np.random.default_rng(0).permutation(len(y))
    n_test = int(round(fraction * len(y))) if len(y) > 1 else 0
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return x[train], y[train], x[test], y[test]


def _load_folder(root: Path, run_config: dict, options: dict) -> ClientArrays:
    form = IMAGE_FORMS.get(str(run_config.get("dataset.name")))
    if options.get("image-shape"):
        shape = imagefolder.image_shape(str(options["image-shape"]), "image-shape")
        same = form is not None and form.shape[0] == shape[0]
        form = ImageForm(shape, form.mean if same else (0.5,) * shape[0], form.std if same else (0.5,) * shape[0])
    if form is None:
        raise ConfigError(f"{_where(root)}: dataset.name={run_config.get('dataset.name')!r} has no image form; "
                          f"set image-shape (e.g. image-shape=\"3x32x32\") in --node-config")
    images = imagefolder.read(root, form.shape, KEY, "image-shape", same_classes=False)
    label_of = _class_labels(root, list(images.classes), options)
    relabel = np.asarray([label_of[name] for name in images.classes], np.int64)
    x, y = scale(images.x_train, form.mean, form.std), relabel[images.y_train]
    if images.x_test is not None:
        x_te, y_te = scale(images.x_test, form.mean, form.std), relabel[images.y_test]
    else:
        x, y, x_te, y_te = _hold_out(x, y, float(options.get("test-fraction", 0.2)))
    num_classes = _num_classes(run_config, options, None)
    return ClientArrays(x, y, x[:0], y[:0], x_te, y_te, num_classes)


def _class_labels(root: Path, names: list[str], options: dict) -> dict[str, int]:
    """Folder name -> label: numeric names are labels; otherwise the node's `classes` list gives the
    order (every device must use the same one), or, without it, the sorted folder names."""
    if all(n.isdigit() for n in names):
        return {n: int(n) for n in names}
    if options.get("classes"):
        order = [c.strip() for c in str(options["classes"]).split(",")]
        unknown = [n for n in names if n not in order]
        if unknown:
            raise ConfigError(f"{_where(root)}: class folder {unknown[0]!r} is not in classes={options['classes']!r}")
        return {n: order.index(n) for n in names}
    return {n: i for i, n in enumerate(names)}
