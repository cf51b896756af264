"""FedLoGe's SSE-C: a sparse, equiangular, frozen classifier built from the run seed alone.

The server and every client call `sse_c(d, C, seed)` and get the same matrix bit for bit, so the
classifier never travels. Construction (as the official FedLoGe code builds it, before training):

1. a simplex ETF M = sqrt(C/(C-1)) P (I - 11^T/C) on a random orthonormal basis P (d x C):
   unit-norm class vectors with pairwise cosine -1/(C-1), the most separated C directions;
2. a random `sparsity` share of all d*C entries set to zero, so each class reads ~40% of the
   feature coordinates (random pruning, not learned);
3. the surviving entries re-optimised with Adam (zeros stay zero): each class vector pulled to
   norm `norm` while the angle to its nearest other class is pushed up,
   L = sum_c (|w_c| - norm)^2 - mean_c arccos(max_{j!=c} cos(w_c, w_j)).

The official code leaves the SSE-C bias at PyTorch's random init; here it is zero (no bias).

The target norm (`algorithm.etf_norm`, default `auto`) depends on the backbone. The paper's 0.1
was chosen on BatchNorm ResNets, whose features keep a moderate norm (|h| ~ 10) because BN's
scale parameters grow slowly. A BatchNorm-free backbone has nothing holding |h|: a frozen
classifier of norm r only lowers the loss if the features grow until r |h| separates the classes,
so the equilibrium |h| scales like 1/r (the default `cnn` on digits: |h| ~ 56, 22, 9 for r = 1, 3,
10). With r = 0.1 its backbone barely moves (10 rounds of the default run: SSE-C accuracy at chance),
and psi, trained by SGD on those detached features, is only stable while lr * E|h|^2 stays small:
at r = 1 it is ~150 and psi's accuracy swings 10-75% between epochs. `auto` therefore keeps 0.1 for
a backbone with BatchNorm and uses 3.0 without (the lowest training loss among 0.1, 0.3, 1, 3, 10
on the default cnn; docs/results/fedloge.md has the sweep).

`row_normalized` is GLA-FR's global realignment, shared for the same reason: the server builds
the generic model with it and the clients build the personalized one on top of it.
"""

from __future__ import annotations

import functools
import math

import torch

GENERIC_NORM = 1.7  # the official realignment's row norm; only a common scale of the logits
PAPER_NORM = 0.1  # the official SSE-C target norm, for BatchNorm backbones
NO_BATCHNORM_NORM = 3.0  # `auto` for a backbone without BatchNorm (see the module docstring)


def has_batchnorm(state_keys) -> bool:
    """Whether a model's state dict (keys) holds BatchNorm statistics; server and clients both have one."""
    return any(str(k).endswith("running_var") for k in state_keys)


def target_norm(setting, batchnorm: bool) -> float:
    """`algorithm.etf_norm` resolved: a number as given, `auto` by whether the backbone has BatchNorm."""
    if str(setting) == "auto":
        return PAPER_NORM if batchnorm else NO_BATCHNORM_NORM
    return float(setting)


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


def sse_c_for(state, seed: int, sparsity: float = 0.6, norm="auto", steps: int = 10_000, lr: float = 1e-4) -> torch.Tensor:
    """The SSE-C of the model whose state dict (a module's, or the server's ArrayRecord) is `state`:
    its shape from the model's linear head, its norm resolved from `algorithm.etf_norm`."""
    out_dim, dim = tuple(state["classifier.weight"].shape)
    return sse_c(dim, out_dim, seed, sparsity, target_norm(norm, has_batchnorm(state.keys())), steps, lr)


def options(cfg: dict) -> dict:
    """The SSE-C construction keys of a flat run config (the same on the server and the clients)."""
    return {"sparsity": float(cfg["algorithm.etf_sparsity"]), "norm": cfg["algorithm.etf_norm"],
            "steps": int(cfg["algorithm.etf_steps"]), "lr": float(cfg["algorithm.etf_lr"])}


def row_normalized(weight: torch.Tensor, norm: float = GENERIC_NORM) -> torch.Tensor:
    """GLA-FR's global realignment: every class row of a head rescaled to the same norm.

    Long-tailed training leaves head classes with larger rows (larger logits); equal norms
    remove that prior while keeping each class's direction."""
    return weight * (norm / weight.norm(dim=1, keepdim=True).clamp_min(1e-12))
