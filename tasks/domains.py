"""Domain shift between clients: each client sees its images through its own fixed transform.

This stands in for pFedPG's domain datasets (Office-Caltech10, DomainNet: one domain per client)
on embedded data. Client k gets `DOMAINS[k % 6]`, applied to its training and local test images
alike (never to the balanced global test set). Every transform is a pure function of the client
id, so all engines, processes and seeds see the same domain for a client.
"""

from __future__ import annotations

import numpy as np

DOMAINS = ("identity", "rotate90", "invert", "noise", "blur", "rotate180")


def domain_of(client_id: int) -> str:
    return DOMAINS[client_id % len(DOMAINS)]


def shift(x: np.ndarray, client_id: int) -> np.ndarray:
    """Images (n, c, h, w) as client `client_id` sees them."""
    name = domain_of(client_id)
    if name == "rotate90":
        return np.ascontiguousarray(np.rot90(x, 1, axes=(2, 3)))
    if name == "rotate180":
        return np.ascontiguousarray(np.rot90(x, 2, axes=(2, 3)))
    if name == "invert":  # data are standardised: negation inverts contrast around the mean
        return -x
    if name == "noise":  # the same noise on the same image every time: seeded by client and image
        rng = np.random.default_rng([client_id, len(x)])
        return (x + rng.normal(0.0, 0.5, x.shape)).astype(x.dtype)
    if name == "blur":
        return _box_blur(x)
    return x


def _box_blur(x: np.ndarray) -> np.ndarray:
    """3x3 mean filter with edge padding, per channel."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = x.shape[2:]
    return sum(padded[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)).astype(x.dtype) / 9.0
