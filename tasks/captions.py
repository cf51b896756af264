"""Captioned images in the layout people keep them: `images/<id>.jpg` and `captions.csv`.

    images/<id>.jpg        one file per image (any suffix Pillow reads)
    captions.csv           header `image,caption`; one row per caption, several rows per image;
                           `image` is the file's name under images/ (`<id>.jpg`, or `<id>`)

As a folder or a `.tar` / `.tar.gz` of one, one enclosing top folder allowed, so a Flickr30k or
COCO export works unchanged. Every way the files can be unusable is one `ConfigError` line: no
caption file or one in another layout, an empty one, a caption naming a missing image, an image
without captions, an unreadable image.

Images are decoded with Pillow, resized (bilinear) to the run's shape, uint8 (n, C, H, W); the
decoded arrays are cached like an image folder's (tasks/imagefolder.py's cache key and writer).
"""

from __future__ import annotations

import csv
import io
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.imagefolder import _progress, content_key
from flowerbed.tasks.stored import write_atomic

LAYOUT = "images/<id>.jpg and captions.csv with header image,caption (a folder or .tar/.tar.gz; one top folder allowed)"
CAPTIONS = "captions.csv"


@dataclass(frozen=True)
class CaptionedImages:
    """Decoded images, uint8 (n, C, H, W), and each image's captions in file order."""

    names: tuple[str, ...]
    images: np.ndarray
    captions: tuple[tuple[str, ...], ...]


def _files(path: Path, key: str) -> tuple[dict[str, bytes | Path], bytes]:
    """The image files under images/ by name, and the caption file's bytes, from a folder or a tar."""
    found: dict[str, bytes | Path] = {}
    if path.is_dir():
        for here, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                if not name.startswith("."):
                    found[(Path(here) / name).relative_to(path).as_posix()] = Path(here) / name
    else:
        try:
            with tarfile.open(path, "r|*") as tar:  # streamed: one pass over a compressed archive
                for member in tar:
                    name = "/".join(p for p in PurePosixPath(member.name).parts if p not in (".", "/"))
                    if member.isfile() and not any(part.startswith(".") for part in PurePosixPath(name).parts):
                        handle = tar.extractfile(member)
                        found[name] = handle.read() if handle else b""
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            raise ConfigError.invalid(key, str(path), f"a folder or a readable .tar/.tar.gz ({type(err).__name__})") from err
    tops = {PurePosixPath(n).parts[0] for n in found}
    if CAPTIONS not in found and len(tops) == 1:  # one enclosing folder: flickr8k-64/images/...
        cut = len(tops.pop()) + 1
        found = {n[cut:]: v for n, v in found.items()}
    if CAPTIONS not in found:
        raise ConfigError.invalid(key, str(path), f"{LAYOUT}: no {CAPTIONS}")
    text = found.pop(CAPTIONS)
    caption_bytes = text if isinstance(text, bytes) else text.read_bytes()
    images = {n[len("images/"):]: v for n, v in found.items() if n.startswith("images/") and "/" not in n[len("images/"):]}
    return images, caption_bytes


def parse_captions(data: bytes, where: str) -> dict[str, list[str]]:
    """`image,caption` rows -> {image name: [captions]} in file order; a layout error is one line."""
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as err:
        raise ConfigError(f"{where}: {CAPTIONS} is not UTF-8 CSV ({type(err).__name__}); expected {LAYOUT}") from err
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise ConfigError(f"{where}: {CAPTIONS} is empty; expected a header image,caption and one row per caption")
    header = [cell.strip().lower() for cell in rows[0]]
    if header != ["image", "caption"]:
        raise ConfigError(f"{where}: {CAPTIONS} starts with {','.join(rows[0])!r}; expected the header image,caption ({LAYOUT})")
    if len(rows) == 1:
        raise ConfigError(f"{where}: {CAPTIONS} has a header and no captions")
    captions: dict[str, list[str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            found = ",".join(row)
            raise ConfigError(f"{where}: {CAPTIONS} line {line} is {found!r}; expected two non-empty fields image,caption")
        captions.setdefault(row[0].strip(), []).append(row[1].strip())
    return captions


def _match(captions: dict[str, list[str]], images: dict[str, bytes | Path], where: str) -> list[tuple[str, str]]:
    """(caption file's image name, file under images/) for every image, in sorted file order."""
    stems = {PurePosixPath(n).stem: n for n in images}
    files = {}
    for name in captions:
        file = name if name in images else stems.get(name)
        if file is None:
            raise ConfigError(f"{where}: {CAPTIONS} names image {name!r}, which is not in images/")
        files[file] = name
    orphans = sorted(set(images) - set(files))
    if orphans:
        raise ConfigError(f"{where}: images/{orphans[0]} has no caption in {CAPTIONS} ({len(orphans)} images without captions)")
    return [(files[f], f) for f in sorted(files)]


def read(path: str | Path, shape: tuple[int, int, int], key: str) -> CaptionedImages:
    """Decode every captioned image under `path`, resized to `shape` (C, H, W)."""
    from PIL import Image

    where = Path(str(path)).expanduser()
    if not where.exists():
        raise ConfigError.invalid(key, str(where), f"an existing folder or .tar/.tar.gz: {LAYOUT}")
    images, caption_bytes = _files(where, key)
    label = f"{key}={str(where)!r}"
    captions = parse_captions(caption_bytes, label)
    order = _match(captions, images, label)
    decoded = np.empty((len(order), shape[1], shape[2], shape[0]), np.uint8)
    with _progress() as bar:
        task = bar.add_task(f"decoding {where.name}", total=len(order))
        for i, (_, file) in enumerate(order):
            source = images[file]
            try:
                with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                    img = img.convert("L" if shape[0] == 1 else "RGB")
                    if img.size != (shape[2], shape[1]):
                        img = img.resize((shape[2], shape[1]), Image.Resampling.BILINEAR)
                    decoded[i] = np.asarray(img, np.uint8).reshape(shape[1], shape[2], shape[0])
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                raise ConfigError(f"{label}: cannot read image images/{file} ({type(err).__name__})") from err
            bar.advance(task)
    return CaptionedImages(tuple(n for n, _ in order), np.ascontiguousarray(decoded.transpose(0, 3, 1, 2)),
                           tuple(tuple(captions[n]) for n, _ in order))


def load_cached(path: str | Path, shape: tuple[int, int, int], cache_root: Path, key: str) -> CaptionedImages:
    """`read`, decoded once: later calls (any process) read the arrays from `cache_root`."""
    where = Path(str(path)).expanduser()
    if not where.exists():
        raise ConfigError.invalid(key, str(where), f"an existing folder or .tar/.tar.gz: {LAYOUT}")
    cached = cache_root / "captions" / f"{where.name.split('.')[0] or 'captions'}-{content_key(where, shape)}.npz"
    if cached.exists():
        try:
            with np.load(cached, allow_pickle=False) as f:
                counts = f["counts"]
                flat = [str(c) for c in f["captions"]]
                ends = np.cumsum(counts)
                return CaptionedImages(tuple(str(n) for n in f["names"]), f["images"],
                                       tuple(tuple(flat[e - c:e]) for c, e in zip(counts, ends)))
        except (OSError, ValueError, KeyError, EOFError):  # an unreadable cache: decode again
            pass
    data = read(where, shape, key)
    write_atomic(cached, {"names": np.asarray(data.names, dtype=str), "images": data.images,
                           "counts": np.asarray([len(c) for c in data.captions], np.int64),
                           "captions": np.asarray([c for cs in data.captions for c in cs], dtype=str)})
    return data
