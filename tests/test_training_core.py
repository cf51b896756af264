"""The training core's seeds and batch plans are definitions other code (the batched engine, a
device, earlier results) relies on to the bit: their fast forms must give exactly those numbers."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from flowerbed.tasks.training import batch_plan, derive_seed


def _seed_by_definition(*parts) -> int:
    ints = [p if isinstance(p, int) else int.from_bytes(str(p).encode()[:16].ljust(16, b"\0"), "little") for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(2, np.uint64)[0] >> np.uint64(1))


def test_derived_seeds_are_numpys_seed_sequence_of_the_parts():
    draw = random.Random(0)
    for _ in range(500):
        parts = tuple(draw.choice([draw.randrange(2 ** draw.randrange(1, 100)), 0, draw.choice(["train", "augment", "é" * 20, ""])])
                      for _ in range(draw.randrange(1, 6)))
        assert derive_seed(*parts) == _seed_by_definition(*parts), parts
    assert derive_seed(1, 2) != derive_seed(2, 1) and 0 <= derive_seed(7, "train") < 2**63
    with pytest.raises(ValueError):
        derive_seed(-1)


def _plan_by_definition(n: int, batch: int, epochs: int, steps: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Whole reshuffled passes split into batches; with `steps`, passes chained and cut at `steps`."""
    if n == 0:
        return []
    batch, batches, passes = min(batch, n), [], epochs if steps <= 0 else -1
    while passes != 0 and (steps <= 0 or len(batches) < steps):
        batches += list(torch.randperm(n, generator=gen).split(batch))
        passes -= 1
    return batches[:steps] if steps > 0 else batches


def test_batch_plans_and_the_generator_after_them_are_those_of_whole_shuffled_passes():
    for n, batch, epochs, steps in itertools.product([0, 1, 5, 36, 37], [1, 3, 32, 64], [0, 1, 3], [0, 1, 2, 13]):
        ours, reference = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        got, want = batch_plan(n, batch, epochs, steps, ours), _plan_by_definition(n, batch, epochs, steps, reference)
        assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want)), (n, batch, epochs, steps)
        assert torch.equal(ours.get_state(), reference.get_state())  # what is drawn next (augmentations) is unchanged too
