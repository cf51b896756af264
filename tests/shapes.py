"""A small captioned-image set made on the spot: coloured shapes with templated captions.

`images/<id>.jpg` + `captions.csv`, the layout tasks/captions.py reads. Each image is one shape
(circle, square or triangle) of one colour on a grey background, at a random place and size; its
captions name the colour, the shape and (in some) the side it is on, in a few phrasings, so that
a model that sees colour and shape can retrieve them.
"""

from __future__ import annotations

import csv
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")
TEMPLATES = ("a {colour} {shape}", "a {shape} that is {colour}", "one {colour} {shape} on the {side}",
             "there is a {colour} {shape}", "a picture of a {colour} {shape} on grey")


def make_shapes(root: Path, num_images: int = 60, seed: int = 0, size: int = 32) -> Path:
    """Write `num_images` captioned images (3 to 5 captions each) under `root`; returns `root`."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_images):
        colour = list(COLOURS)[i % len(COLOURS)]
        shape = SHAPES[(i // len(COLOURS)) % len(SHAPES)]
        img, cx = _draw(shape, COLOURS[colour], rng, size)
        name = f"shape{i:04d}.jpg"
        img.save(root / "images" / name, quality=95)
        side = "left" if cx < size // 2 else "right"
        for template in rng.permutation(TEMPLATES)[: int(rng.integers(3, 6))]:
            rows.append((name, str(template).format(colour=colour, shape=shape, side=side)))
    write_captions(root / "captions.csv", rows)
    return root


def make_labeled_shapes(root: Path, num_images: int = 60, seed: int = 1, size: int = 32) -> Path:
    """The same shapes as labeled images in the ImageFolder layout CIFAR-10's archive has,
    `train/<shape>/NNNN.jpg` (the class is the shape; the colour varies); returns `root`."""
    rng = np.random.default_rng(seed)
    for i in range(num_images):
        shape, colour = SHAPES[i % len(SHAPES)], list(COLOURS)[int(rng.integers(len(COLOURS)))]
        (root / "train" / shape).mkdir(parents=True, exist_ok=True)
        _draw(shape, COLOURS[colour], rng, size)[0].save(root / "train" / shape / f"{i:04d}.jpg", quality=95)
    return root


def make_news(path: Path, num_rows: int = 60, seed: int = 2) -> Path:
    """A CSV in AG News's layout (class 1-4, title, description; no header) whose words are mostly
    the captions' (colours and shapes), a few not: class k talks about colour k."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_rows):
        label = i % len(COLOURS)
        colour, shape = list(COLOURS)[label], SHAPES[int(rng.integers(len(SHAPES)))]
        rows.append((str(label + 1), f"News of a {colour} {shape}", f"Reporters saw a {colour} {shape}, said the agency"))
    write_captions(path, rows, header=())
    return path


def _draw(shape: str, fill: tuple[int, int, int], rng: np.random.Generator, size: int) -> tuple[Image.Image, int]:
    """One shape at a random place and size on grey, and its centre's x."""
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = int(rng.integers(r, size - r)), int(rng.integers(r, size - r))
    img = Image.new("RGB", (size, size), (128, 128, 128))
    draw = ImageDraw.Draw(img)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img, cx


def write_captions(path: Path, rows: list[tuple[str, str]], header: tuple[str, ...] = ("image", "caption")) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def tar_of(folder: Path, out: Path) -> Path:
    """`folder` as a .tar.gz with one enclosing top folder (as the shared archives are packed)."""
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return out
