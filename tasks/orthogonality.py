"""SRIP (Bansal, Chen, Wang, NeurIPS 2018), the orthogonality regulariser of FedSTO's stage 2.

For each covered conv kernel W, reshaped to (C_out, C_in k k), the spectral norm of G - I with G
the smaller Gram matrix (W W^T or W^T W), found by power iteration; summed over kernels. Used by
FedSTO's clients (clients/fedsto.py) and its server step (strategies/fedsto.py), so it lives here.
"""

from __future__ import annotations

import torch
from torch import nn


def regularised_weights(model: nn.Module) -> list[torch.Tensor]:
    """The conv kernels SRIP covers: every Conv2d with groups = 1 (a depthwise kernel mixes no channels)
    and at least two rows and columns ([NF], listed in clients/fedsto.py)."""
    return [m.weight for m in model.modules()
            if isinstance(m, nn.Conv2d) and m.groups == 1 and m.weight.shape[0] > 1 and m.weight[0].numel() > 1]


def srip(weights: list[torch.Tensor], iterations: int = 2) -> torch.Tensor:
    """SRIP (Bansal et al., 2018): sum over kernels W (C_out, C_in k k) of the spectral norm of
    G - I, G the smaller Gram matrix (W W^T or W^T W), by power iteration. Zero exactly when every
    kernel's rows (or columns, whichever are fewer) are orthonormal."""
    total = torch.zeros((), device=weights[0].device if weights else None)
    for w in weights:
        m = w.reshape(w.shape[0], -1)
        gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
        residual = gram - torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
        v = torch.ones(len(gram), dtype=gram.dtype, device=gram.device) / len(gram) ** 0.5
        v = v + 0.1 * torch.arange(len(gram), dtype=gram.dtype, device=gram.device) / len(gram)  # off any symmetric null space
        for _ in range(iterations):
            u = residual @ v
            v = u / (u.norm() + 1e-12)
        total = total + (residual @ v).norm()
    return total


def with_orthogonality(loss_fn, weight: float):
    """`loss_fn` plus `weight` x SRIP over the model's conv kernels (unchanged when weight is 0)."""
    if weight <= 0:
        return loss_fn

    def loss(m, x, y):
        base = loss_fn(m, x, y)
        return None if base is None else base + weight * srip(regularised_weights(m))  # None: no step (nothing to learn)

    return loss
