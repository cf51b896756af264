"""Seeded, tensor-level weak and strong views for semi-supervised clients.

Why not torchvision's `RandAugment(1, 10)`: it works on PIL/uint8 images one at a time and draws
from torch's global RNG, so two engines (or a batched one) would not see the same views, and several
of its ops (posterize, equalize, sharpness) do nothing useful on 8x8 images with 17 grey levels.
This module reproduces what RandAugment(num_ops=1, magnitude=10) does, on normalized float batches
of any size (8x8 digits, 28x28 MNIST, 32x32 CIFAR), with every random draw from a
`torch.Generator` seeded by (seed, round, client):

- one op per image, drawn uniformly from identity, rotate, shear-x/y, translate-x/y, brightness,
  contrast and solarize; on colour (3-channel) images also autocontrast, equalize, color,
  posterize and sharpness, i.e. torchvision's full list of 14 (on grey images those five are
  near-identity at 8x8 with 17 grey levels, so grey images keep the 9);
- torchvision's magnitudes at bin 10 of 31: rotation 10 degrees, shear 0.1, translation 15% of the
  side, brightness/contrast/color/sharpness factor 1 +- 0.3, solarize above 2/3 of the image's
  range, posterize to 7 bits; a random sign for the signed ones. The five colour-image ops are
  torchvision's own functionals (`torchvision.transforms.v2.functional`) on the selected images.

Photometric ops act on each image's own [min, max] range (the data are normalized, so "black" is
the image minimum) and geometric ops fill with that minimum, i.e. with background.

The weak view is FixMatch's (random translation up to 12.5% of the side) without its horizontal
flip, which is not label-preserving for digits.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

OPS = ("identity", "rotate", "shear_x", "shear_y", "translate_x", "translate_y", "brightness", "contrast", "solarize")
COLOUR_OPS = ("autocontrast", "equalize", "color", "posterize", "sharpness")  # 3-channel images only
ROTATE_DEG, SHEAR, TRANSLATE, FACTOR, SOLARIZE, POSTERIZE_BITS = 10.0, 0.1, 0.15, 0.3, 2.0 / 3.0, 7


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


def crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The usual CIFAR augmentation: each image shifted by up to `pad` pixels (zero fill, i.e. the
    normalized mean) and flipped horizontally with p=1/2. Flips change what a digit means."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = (torch.randint(0, 2 * pad + 1, (n,), generator=gen) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h))[:, :, None].to(x.device)  # (n, h, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :].to(x.device)  # (n, 1, w)
    out = padded.permute(0, 2, 3, 1)[torch.arange(n, device=x.device)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def strong_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """RandAugment(1, 10) on a batch: one op per image at magnitude 10/30, random sign."""
    n = len(x)
    ops = OPS + COLOUR_OPS if x.shape[1] == 3 else OPS
    op = torch.randint(0, len(ops), (n,), generator=gen)
    sign = _signs(n, gen)
    is_op = {name: (op == i) for i, name in enumerate(ops)}

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
    if len(ops) > len(OPS):
        u = _colour_ops(u, is_op, sign)
    return low + u * span


def _colour_ops(u: torch.Tensor, is_op: dict[str, torch.Tensor], sign: torch.Tensor) -> torch.Tensor:
    """RandAugment's five other ops on the images that drew them (u in [0, 1])."""
    from torchvision.transforms.v2 import functional as TF

    u = u.clone()
    fixed = {"autocontrast": TF.autocontrast, "equalize": TF.equalize, "posterize": lambda v: TF.posterize(v, POSTERIZE_BITS)}
    for name, fn in fixed.items():
        sel = is_op[name].nonzero().squeeze(1).to(u.device)
        if len(sel):
            u[sel] = fn(u[sel]).clamp(0, 1)
    for name, fn in (("color", TF.adjust_saturation), ("sharpness", TF.adjust_sharpness)):
        for s in (-1.0, 1.0):
            sel = (is_op[name] & (sign == s)).nonzero().squeeze(1).to(u.device)
            if len(sel):
                u[sel] = fn(u[sel], 1 + s * FACTOR).clamp(0, 1)
    return u


# `train.augment`: the view FedAvg's loop trains its labeled batches on (None: the images as they are)
VIEWS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None] = {
    "none": None,
    "weak": weak_view,
    "crop-flip": crop_flip,
    "strong": strong_view,
}


def with_view(loss_fn: Callable, view: str, generator: Callable[[], torch.Generator]) -> Callable:
    """`loss_fn(model, x, y)` on each batch seen through `VIEWS[view]`, drawn from `generator()`
    (called only when there is a view: a client call without one costs nothing more)."""
    transform = VIEWS[view]
    if transform is None:
        return loss_fn
    gen = generator()
    return lambda model, x, y: loss_fn(model, transform(x, gen), y)
