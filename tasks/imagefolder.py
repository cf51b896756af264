"""Image folders in torchvision's ImageFolder layout: flowerbed's one reader of image files.

Both `dataset=imagefolder` / `dataset=cifar10 dataset.path=...` (tasks/datasets.py) and a device's
`data-path` folder (tasks/local_data.py) read images here, so a federation and a deployment see the
same pixels for the same files.

Accepted layouts, as a folder or a `.tar` / `.tar.gz` of one (one enclosing top folder is allowed):

    train/<class>/*  and  test/<class>/*      the dataset's own split (same class folders in both)
    <class>/*                                one pool, split by the caller

Class names are the folder names, sorted as torchvision sorts them (alphabetically), except that
all-numeric names sort as numbers (2 before 10). Labels index that list. Files with other suffixes
and hidden names (`.DS_Store`, `._x.jpg`) are ignored; anything else out of place is a one-line
`ConfigError` before any output: an image outside the layout, a class folder with no images, an
unreadable image, differing sizes without a resize target, differing class folders in train/ and test/.

Decoding is Pillow's; arrays are uint8 (n, C, H, W). `load_cached` keeps them in the cache directory,
keyed by the archive's bytes (for a folder: its file list, sizes and mtimes) and the resize target,
so the second load of CIFAR-10 reads one `.npz` instead of decoding 60,000 JPEGs. The cache file is
written under a temporary name and renamed: processes loading at once never see half a file.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.stored import write_atomic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
FORMAT = 1  # part of the cache key: bump when decoding changes so old caches are not reused
LAYOUT = "the ImageFolder layout (train/<class>/*, test/<class>/* or <class>/*; one top folder allowed)"


@dataclass(frozen=True)
class FolderImages:
    """Decoded images: uint8 (n, C, H, W) and labels indexing `classes`; no test split for `<class>/*`."""

    classes: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def parse_shape(text: str, key: str = "dataset.shape", allowed: str = "positive sizes joined by 'x', e.g. 3x32x32") -> tuple[int, ...]:
    """"3x32x32" -> (3, 32, 32); anything else is `key`'s one-line error."""
    try:
        shape = tuple(int(part) for part in str(text).lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or min(shape) <= 0:
        raise ConfigError.invalid(key, text, allowed)
    return shape


def image_shape(text: str, key: str) -> tuple[int, int, int]:
    """"3x32x32" -> (3, 32, 32): a resize target with 1 (grey) or 3 (RGB) channels."""
    allowed = "CxHxW with 1 or 3 channels, e.g. 3x32x32"
    shape = parse_shape(text, key, allowed)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ConfigError.invalid(key, text, allowed)
    return shape  # type: ignore[return-value]


# -- what is there ----------------------------------------------------------------------------------
class _Source:
    """The image files and folders under a root folder or in a tar archive, by relative POSIX path."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key
        self.files: dict[str, Path | bytes] = {}  # image files only
        self.dirs: set[str] = set()
        if path.is_dir():
            self._walk()
        else:
            self._untar()

    def _walk(self) -> None:
        for here, dirs, files in os.walk(self.path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = PurePosixPath(Path(here).relative_to(self.path).as_posix())
            if str(rel) != ".":
                self.dirs.add(str(rel))
            for name in files:
                if _is_image(name):
                    self.files[str(rel / name) if str(rel) != "." else name] = Path(here) / name

    def _untar(self) -> None:
        try:
            with tarfile.open(self.path, "r|*") as tar:  # streamed: one pass over a compressed archive
                for member in tar:
                    name = _clean(member.name)
                    if not name or any(part.startswith(".") for part in PurePosixPath(name).parts):
                        continue
                    if member.isdir():
                        self.dirs.add(name)
                    elif member.isfile() and _is_image(name):
                        handle = tar.extractfile(member)
                        self.files[name] = handle.read() if handle else b""
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            raise ConfigError.invalid(self.key, str(self.path), f"a folder or a readable .tar/.tar.gz ({type(err).__name__})") from err
        for name in self.files:  # folders an archive lists only through their files
            self.dirs.update(str(p) for p in PurePosixPath(name).parents if str(p) != ".")

    def strip_top(self) -> None:
        """Drop one enclosing folder (`cifar10/train/...`) when nothing but that folder is at the top."""
        tops = {PurePosixPath(n).parts[0] for n in (*self.files, *self.dirs)}
        if len(tops) != 1:
            return
        top = tops.pop()
        if top in self.files or any(len(PurePosixPath(n).parts) == 2 for n in self.files):
            return  # an image at the top, or one folder of images: that folder is a class
        cut = len(top) + 1
        self.files = {n[cut:]: v for n, v in self.files.items()}
        self.dirs = {d[cut:] for d in self.dirs if d != top}

    def read(self, name: str) -> io.BytesIO | Path:
        data = self.files[name]
        return io.BytesIO(data) if isinstance(data, bytes) else data


def _clean(name: str) -> str:
    parts = [p for p in PurePosixPath(name).parts if p not in (".", "/")]
    return "/".join(parts)


def _is_image(name: str) -> bool:
    base = PurePosixPath(name).name
    return not base.startswith(".") and base.lower().endswith(IMAGE_SUFFIXES)


def _sorted_classes(names: set[str]) -> tuple[str, ...]:
    if names and all(n.isdigit() for n in names):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names))


@dataclass(frozen=True)
class _Layout:
    classes: tuple[str, ...]
    splits: dict[str, list[tuple[str, int]]]  # "train"/"test"/"" -> (file, label), in label then name order


def _layout(src: _Source, same_classes: bool) -> _Layout:
    where = f"{src.key}={str(src.path)!r}"
    src.strip_top()
    split = {"train", "test"} <= src.dirs
    prefixes = ("train/", "test/") if split else ("",)
    depth = 3 if split else 2
    stray = sorted(n for n in src.files if len(PurePosixPath(n).parts) != depth or not n.startswith(prefixes))
    if stray or not src.files:
        found = f"{stray[0]!r} is out of place" if stray else "no images found"
        raise ConfigError(f"{where}: not {LAYOUT}: {found}")
    folders = {p: {d[len(p):] for d in src.dirs if d.startswith(p) and "/" not in d[len(p):]} for p in prefixes}
    if split and same_classes and folders["train/"] != folders["test/"]:
        only_train, only_test = sorted(folders["train/"] - folders["test/"]), sorted(folders["test/"] - folders["train/"])
        raise ConfigError(f"{where}: train/ and test/ hold different class folders "
                          f"(only in train/: {', '.join(only_train) or '-'}; only in test/: {', '.join(only_test) or '-'})")
    classes = _sorted_classes(set().union(*folders.values()))
    label = {c: i for i, c in enumerate(classes)}
    splits: dict[str, list[tuple[str, int]]] = {}
    for prefix in prefixes:
        by_class: dict[str, list[str]] = {c: [] for c in classes}
        for name in src.files:
            if name.startswith(prefix):
                by_class[PurePosixPath(name).parts[-2]].append(name)
        empty = [c for c in classes if not by_class[c] and c in folders[prefix]]
        if empty:
            raise ConfigError(f"{where}: class folder {prefix + empty[0]!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        splits[prefix.rstrip("/")] = [(n, label[c]) for c in classes for n in sorted(by_class[c])]
    return _Layout(classes, splits)


# -- decoding ---------------------------------------------------------------------------------------
def read(path: str | Path, shape: tuple[int, int, int] | None, key: str, shape_key: str,
         same_classes: bool = True) -> FolderImages:
    """Decode every image under `path` (folder or tar), resized to `shape` (C, H, W) if given.

    Without `shape` every image must have the same size; grey images become 1 channel, others RGB
    (greys are repeated to RGB if both occur). `key` and `shape_key` name the settings in errors.
    `same_classes=False` lets test/ lack some of train/'s classes (a device's small test set, whose
    labels come from the folder names, not from their positions); the classes are then the union.
    """
    from PIL import Image

    where = Path(str(path)).expanduser()
    if not where.exists():
        raise ConfigError.invalid(key, str(where), f"an existing folder or .tar/.tar.gz in {LAYOUT}")
    src = _Source(where, key)
    layout = _layout(src, same_classes)
    total = sum(len(files) for files in layout.splits.values())
    decoded: dict[str, list[np.ndarray]] = {}
    first: tuple[str, tuple[int, int]] | None = None  # the size every image must share without `shape`
    with _progress() as bar:
        task = bar.add_task(f"decoding {where.name}", total=total)
        for split, files in layout.splits.items():
            images = decoded.setdefault(split, [])
            for name, _ in files:
                try:
                    with Image.open(src.read(name)) as img:
                        img.load()
                        mode = ("L" if shape[0] == 1 else "RGB") if shape else ("L" if img.mode in GREY_MODES else "RGB")
                        img = img if img.mode == mode else img.convert(mode)
                        if shape and img.size != (shape[2], shape[1]):
                            img = img.resize((shape[2], shape[1]), Image.Resampling.BILINEAR)
                        pixels = np.asarray(img, np.uint8)
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                    raise ConfigError(f"{key}={str(where)!r}: cannot read image {name!r} ({type(err).__name__})") from err
                if first is None:
                    first = (name, pixels.shape[:2])
                elif pixels.shape[:2] != first[1]:
                    (h0, w0), (h, w) = first[1], pixels.shape[:2]
                    raise ConfigError(f"{key}={str(where)!r}: images differ in size ({first[0]!r} is {h0}x{w0}, {name!r} "
                                      f"is {h}x{w}, height x width); set {shape_key} to resize them all "
                                      f"(e.g. {1 if pixels.ndim == 2 else 3}x{h0}x{w0})")
                images.append(pixels)
                bar.advance(task)
    rgb = any(p.ndim == 3 for images in decoded.values() for p in images)
    arrays = {split: _stack(images, rgb) for split, images in decoded.items()}
    labels = {split: np.asarray([c for _, c in files], np.int64) for split, files in layout.splits.items()}
    if "" in arrays:
        return FolderImages(layout.classes, arrays[""], labels[""])
    return FolderImages(layout.classes, arrays["train"], labels["train"], arrays["test"], labels["test"])


def _stack(images: list[np.ndarray], rgb: bool) -> np.ndarray:
    """HxW (grey) and HxWx3 images -> uint8 (n, C, H, W)."""
    if rgb:
        images = [p if p.ndim == 3 else np.repeat(p[:, :, None], 3, axis=2) for p in images]
        return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))
    return np.stack(images)[:, None]


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, disable=not console.is_terminal, transient=True)


# -- the cache --------------------------------------------------------------------------------------
def content_key(path: Path, shape: tuple[int, int, int] | None) -> str:
    """What the decoded arrays depend on: an archive's bytes, or a folder's file list, sizes and mtimes."""
    digest = hashlib.sha256(f"flowerbed-imagefolder-{FORMAT}-{shape}".encode())
    if path.is_dir():
        for here, _, files in sorted(os.walk(path)):
            for name in sorted(files):
                stat = (Path(here) / name).stat()
                rel = (Path(here) / name).relative_to(path).as_posix()
                digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    else:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:24]


def load_cached(path: str | Path, shape: tuple[int, int, int] | None, cache_root: Path, key: str,
                shape_key: str) -> FolderImages:
    """`read`, decoded once: later calls (any process) read the uint8 arrays from `cache_root`."""
    where = Path(str(path)).expanduser()
    if not where.exists():
        raise ConfigError.invalid(key, str(where), f"an existing folder or .tar/.tar.gz in {LAYOUT}")
    name = where.name.split(".")[0] or "images"
    cached = cache_root / "imagefolder" / f"{name}-{content_key(where, shape)}.npz"
    if cached.exists():
        try:
            with np.load(cached, allow_pickle=False) as f:
                test = ("x_test", "y_test") if "x_test" in f.files else None
                return FolderImages(tuple(str(c) for c in f["classes"]), f["x_train"], f["y_train"],
                                    f[test[0]] if test else None, f[test[1]] if test else None)
        except (OSError, ValueError, KeyError, EOFError):  # unreadable cache (e.g. a disk that filled): decode again
            pass
    images = read(where, shape, key, shape_key)
    arrays = {"classes": np.asarray(images.classes, dtype=str), "x_train": images.x_train, "y_train": images.y_train}
    if images.x_test is not None:
        arrays.update(x_test=images.x_test, y_test=images.y_test)
    write_atomic(cached, arrays)
    return images
