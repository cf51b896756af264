"""FedLoGe's SSE-C: a sparse, equiangular, frozen classifier built from the run seed alone.

The server and every client call `sse_c(d, C, seed)` and get the same matrix bit for bit, so the
classifier never travels. Construction (algorithms.md b.2, step 0, from the official code):

1. a simplex ETF M = sqrt(C/(C-1)) P (I - 11^T/C) on a random orthonormal basis P (d x C):
   unit-norm class vectors with pairwise cosine -1/(C-1), the most separated C directions;
2. a random `sparsity` share of all d*C entries set to zero, so each class reads ~40% of the
   feature coordinates (random pruning, not learned);
3. the surviving entries re-optimised with Adam (zeros stay zero): each class vector pulled to
   norm `norm` while the angle to its nearest other class is pushed up,
   L = sum_c (|w_c| - norm)^2 - mean_c arccos(max_{j!=c} cos(w_c, w_j)).

The official code leaves the SSE-C bias at PyTorch's random init; here it is zero (no bias).

`row_normalized` is GLA-FR's global realignment, shared for the same reason: the server builds
the generic model with it and the clients build the personalized one on top of it.
"""

from __future__ import annotations

import functools
import math

import torch

GENERIC_NORM = 1.7  # the official realignment's row norm; only a common scale of the logits


def simplex_etf(dim: int, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """(d x C) simplex ETF on a random orthonormal basis (needs d >= C)."""
    if dim < num_classes:
        raise ValueError(f"a simplex ETF needs feature dim >= classes, got {dim} < {num_classes}")
    basis, _ = torch.linalg.qr(torch.rand(dim, num_classes, generator=gen, dtype=torch.float64))
    center = torch.eye(num_classes, dtype=torch.float64) - 1.0 / num_classes
    return math.sqrt(num_classes / (num_classes - 1)) * basis @ center


def sparsity_mask(dim: int, num_classes: int, sparsity: float, gen: torch.Generator) -> torch.Tensor:
    """(d x C) 0/1 mask with exactly int(sparsity * d * C) zeros, uniform over the whole matrix."""
    mask = torch.ones(dim * num_classes, dtype=torch.float64)
    mask[torch.randperm(dim * num_classes, generator=gen)[: int(sparsity * dim * num_classes)]] = 0.0
    return mask.view(dim, num_classes)


def separation_loss(w: torch.Tensor, norm: float) -> torch.Tensor:
    """Norm pull plus minus the mean angle from each class (column) to its nearest other class."""
    unit = w / w.norm(dim=0, keepdim=True).clamp_min(1e-12)
    cos = unit.T @ unit - 2.0 * torch.eye(w.shape[1], dtype=w.dtype)  # exclude j == c from the max
    nearest = cos.max(dim=1).values.clamp(-0.99999, 0.99999)
    return ((w.norm(dim=0) - norm) ** 2).sum() - torch.arccos(nearest).mean()


@functools.lru_cache(maxsize=8)
def sse_c(dim: int, num_classes: int, seed: int, sparsity: float = 0.6, norm: float = 0.1, steps: int = 10_000, lr: float = 1e-4) -> torch.Tensor:
    """The frozen SSE-C weight, (C x d) like nn.Linear's, float32; cached per process."""
    gen = torch.Generator().manual_seed(seed)
    etf = simplex_etf(dim, num_classes, gen)
    mask = sparsity_mask(dim, num_classes, sparsity, gen)
    w = torch.nn.Parameter(etf * mask)
    opt = torch.optim.Adam([w], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            separation_loss(w, norm).backward()
            w.grad *= mask  # pruned entries stay exactly zero
            opt.step()
    return w.detach().T.float().contiguous()


def row_normalized(weight: torch.Tensor, norm: float = GENERIC_NORM) -> torch.Tensor:
    """GLA-FR's global realignment: every class row of a head rescaled to the same norm.

    Long-tailed training leaves head classes with larger rows (larger logits); equal norms
    remove that prior while keeping each class's direction."""
    return weight * (norm / weight.norm(dim=1, keepdim=True).clamp_min(1e-12))
