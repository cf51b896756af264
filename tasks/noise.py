"""Seeded noise for Flower's differential-privacy code, which draws from NumPy's global RNG.

Flower's DP strategy wrappers and client mods call `np.random.normal` on the process-wide
generator. Seeding it from (run seed, round, client) just around those calls makes the noise a
function of the run, so the same run gives the same numbers in one process (`sequential`,
`batched`), on Ray actors (`flower`) and on SuperNodes; the caller's generator state is put back
afterwards, so nothing else in the process sees a difference.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


@contextmanager
def numpy_seeded(*parts: int) -> Iterator[None]:
    """NumPy's global generator seeded from `parts` inside the block, restored after it."""
    saved = np.random.get_state()
    np.random.seed(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])
    try:
        yield
    finally:
        np.random.set_state(saved)
