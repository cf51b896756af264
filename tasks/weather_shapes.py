"""A generated detection set with a controlled weather shift (`dataset.name=weather-shapes`).

Coloured shapes (three classes: square, disc, triangle) placed on smooth textured backgrounds,
1 to `max_objects` per image, with their boxes known exactly. Each domain is the same generator
seen through one transform of tasks/domains.py (`partition.domains`, e.g. identity+fog+contrast):
the server's domain first, then one per client domain. Object layout and colours are drawn
independently of the domain, so only the weather differs between domains.

Every image is a pure function of (seed, domain, index): any engine or process makes the same set.
"""

from __future__ import annotations

import numpy as np

from flowerbed.tasks import domains as weather
from flowerbed.tasks.voc import DetectionArrays, pad_targets

CLASSES = ("square", "disc", "triangle")
DEFAULT_DOMAINS = ("identity", "fog", "contrast", "gaussian_noise")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth colour field: a 4x4 random grid upsampled bilinearly, plus light pixel noise."""
    grid = rng.uniform(0.2, 0.8, (3, 4, 4))
    t = np.linspace(0, 3, size)
    i0 = np.minimum(t.astype(int), 2)
    f = t - i0
    rows = grid[:, i0] * (1 - f)[None, :, None] + grid[:, i0 + 1] * f[None, :, None]
    field = rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i0 + 1] * f[None, None, :]
    return np.clip(field + rng.normal(0, 0.03, field.shape), 0, 1)


def _mask(kind: int, size: int, x1: int, y1: int, side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    u, v = (xx - x1) / side, (yy - y1) / side  # in [0, 1) inside the box
    inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    if kind == 0:
        return inside
    if kind == 1:
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    return inside & (np.abs(u - 0.5) <= v / 2 + 1e-9)  # apex at the top, base on the bottom row


def _image(rng: np.random.Generator, size: int, max_objects: int) -> tuple[np.ndarray, list]:
    pixels = _background(rng, size)
    rows = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        kind = int(rng.integers(len(CLASSES)))
        side = int(rng.integers(max(4, size // 6), max(5, size // 2.5)))
        x1, y1 = (int(v) for v in rng.integers(0, size - side, 2))
        colour = rng.uniform(0, 1, 3)
        colour[rng.integers(3)] = rng.choice([0.0, 1.0])  # one saturated channel: visible on any background
        pixels[:, _mask(kind, size, x1, y1, side)] = colour[:, None]
        rows.append((kind, float(x1), float(y1), float(x1 + side), float(y1 + side)))
    return pixels, rows


def generate(images_per_domain: int, image_size: int, domain_names: tuple[str, ...] = DEFAULT_DOMAINS,
             seed: int = 0, max_objects: int = 3) -> DetectionArrays:
    """`images_per_domain` images of each domain, images uint8 (n, 3, S, S), domain k = names[k]."""
    images, targets, domains, names = [], [], [], []
    for k, name in enumerate(domain_names):
        clean, rows = [], []
        for i in range(images_per_domain):
            pixels, boxes = _image(np.random.default_rng([seed, k, i]), image_size, max_objects)
            clean.append(pixels)
            rows.append(boxes)
            names.append(f"{name}-{i:04d}")  # the prefix before '-' is the domain (tasks/voc.py)
        shifted = weather.shift(np.stack(clean).astype(np.float32), k, domain_names, scale=((0.0,) * 3, (1.0,) * 3))
        images.append((np.clip(shifted, 0, 1) * 255).round().astype(np.uint8))
        targets += rows
        domains += [k] * images_per_domain
    return DetectionArrays(
        images=np.concatenate(images),
        targets=pad_targets(targets),
        domains=np.array(domains, dtype=np.int64),
        domain_names=tuple(domain_names),
        class_names=CLASSES,
        names=tuple(names),
        labeled=np.ones(len(domains), dtype=bool),
    )
