"""CreamFL's representation-level terms (Yu et al., ICLR 2023), as functions of embeddings.

The building blocks of both halves of CreamFL (issue 32, step 3), on L2-normalized embeddings of
the public image-text pairs: what a client adds to its local task, and how the server combines
the clients' uploads. The formulas are those of the official code (FLAIR-THU/CreamFL,
src/algorithms/MMFL.py and the client trainers, read, not copied); where it is silent or odd:
- [choice] the ensemble's log-partition runs over the public set actually used (the code
  hard-codes 50,000 items), with no temperature (none in the code);
- [choice] `mean` weights (1/K) are the representation-averaging baseline and ablation.
"""

from __future__ import annotations

import torch
from torch import nn

CONTRAST_TEMPERATURE = 0.5  # the code's tau for both contrasts


def inter_modal_loss(local: torch.Tensor, global_other: torch.Tensor, index: torch.Tensor,
                     temperature: float = CONTRAST_TEMPERATURE) -> torch.Tensor:
    """A client's representations (B, d) of public items `index` against the global representations
    (N, d) of the other modality: item j's is the positive, every other item a negative."""
    return nn.functional.cross_entropy(local @ global_other.T / temperature, index)


def intra_modal_loss(local: torch.Tensor, global_same: torch.Tensor, start: torch.Tensor,
                     temperature: float = CONTRAST_TEMPERATURE) -> torch.Tensor:
    """MOON-style: each of the client's representations (B, d) toward the global one of the same
    item and modality (B, d), away from the client's own model's at the start of the round (B, d)."""
    positive = (local * global_same).sum(1) / temperature
    negative = (local * start).sum(1) / temperature
    return (torch.logaddexp(positive, negative) - positive).mean()


def ensemble_weights(uploads: torch.Tensor, global_other: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """The global-local cross-modal ensemble: for K clients' representations (K, N, d) of N public
    items, w[k, j] = softmax over k of s_k(j), where s_k(j) = u_k(j) . g(j) - log sum_l exp(u_k(j) . g(l))
    and g the global representations of the other modality (N, d): a client weighs more on item j
    where its representation picks out j's pair among all the public items."""
    scores = torch.empty(uploads.shape[:2], dtype=uploads.dtype, device=uploads.device)
    for start in range(0, uploads.shape[1], chunk):  # (K, chunk, N) at a time, not (K, N, N)
        rows = slice(start, start + chunk)
        logits = uploads[:, rows] @ global_other.T
        own = (uploads[:, rows] * global_other[rows]).sum(-1)
        scores[:, rows] = own - torch.logsumexp(logits, -1)
    return torch.softmax(scores, dim=0)


def aggregate(uploads: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per item, the weighted sum of the K clients' representations (K, N, d) -> (N, d); without
    `weights`, their mean."""
    if weights is None:
        return uploads.mean(0)
    return (weights.unsqueeze(-1) * uploads).sum(0)
