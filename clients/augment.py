"""Seeded, tensor-level weak and strong views for semi-supervised clients.

Why not torchvision's `RandAugment(1, 10)`: it works on PIL/uint8 images one at a time and draws
from torch's global RNG, so two engines (or a batched one) would not see the same views, and several
of its ops (posterize, equalize, sharpness) do nothing useful on 8x8 images with 17 grey levels.
This module reproduces what RandAugment(num_ops=1, magnitude=10) does, on normalized float batches
of any size (8x8 digits, 28x28 MNIST, 32x32 CIFAR), with every random draw from a
`torch.Generator` seeded by (seed, round, client):

- one op per image, drawn uniformly from identity, rotate, shear-x/y, translate-x/y, brightness,
  contrast and solarize (torchvision's list minus the ops that are near-identity at this size);
- torchvision's magnitudes at bin 10 of 31: rotation 10 degrees, shear 0.1, translation 15% of the
  side, brightness/contrast factor 1 +- 0.3, solarize above 2/3 of the image's range; a random sign.

Photometric ops act on each image's own [min, max] range (the data are normalized, so "black" is
the image minimum) and geometric ops fill with that minimum, i.e. with background.

The weak view is FixMatch's (random translation up to 12.5% of the side) without its horizontal
flip, which is not label-preserving for digits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

OPS = ("identity", "rotate", "shear_x", "shear_y", "translate_x", "translate_y", "brightness", "contrast", "solarize")
ROTATE_DEG, SHEAR, TRANSLATE, FACTOR, SOLARIZE = 10.0, 0.1, 0.15, 0.3, 2.0 / 3.0


def _uniform(shape: tuple[int, ...], low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen)


def _signs(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply per-image 2x3 affine maps (output -> input, normalized coordinates), filling with
    each image's minimum so that the border looks like background."""
    background = x.amin(dim=(1, 2, 3), keepdim=True)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x - background, grid, align_corners=False) + background


def weak_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random translation up to 12.5% of the side in each axis (FixMatch's weak view, no flip)."""
    theta = torch.eye(2, 3).repeat(len(x), 1, 1)
    theta[:, :, 2] = _uniform((len(x), 2), -0.25, 0.25, gen)  # the image spans 2 units
    return warp(x, theta)


def strong_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """RandAugment(1, 10) on a batch: one op per image at magnitude 10/30, random sign."""
    n = len(x)
    op = torch.randint(0, len(OPS), (n,), generator=gen)
    sign = _signs(n, gen)
    is_op = {name: (op == i) for i, name in enumerate(OPS)}

    # geometric ops, as one affine map per image (identity for the others)
    theta = torch.eye(2, 3).repeat(n, 1, 1)
    angle = sign * math.radians(ROTATE_DEG) * is_op["rotate"]
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, 0, 1] += sign * SHEAR * is_op["shear_x"]
    theta[:, 1, 0] += sign * SHEAR * is_op["shear_y"]
    theta[:, 0, 2] = sign * 2 * TRANSLATE * is_op["translate_x"]
    theta[:, 1, 2] = sign * 2 * TRANSLATE * is_op["translate_y"]
    out = warp(x, theta)

    # photometric ops, on each image's own [min, max] range
    low = out.amin(dim=(1, 2, 3), keepdim=True)
    span = (out.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-6)
    u = (out - low) / span
    factor = (1 + sign * FACTOR).view(n, 1, 1, 1).to(x)
    bright = (u * factor).clamp(0, 1)
    mean = u.mean(dim=(1, 2, 3), keepdim=True)
    contrast = (mean + (u - mean) * factor).clamp(0, 1)
    solar = torch.where(u >= SOLARIZE, 1 - u, u)
    pick = lambda name: is_op[name].view(n, 1, 1, 1).to(x.device)  # noqa: E731
    u = torch.where(pick("brightness"), bright, u)
    u = torch.where(pick("contrast"), contrast, u)
    u = torch.where(pick("solarize"), solar, u)
    return low + u * span
