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


def test_a_reused_model_holds_exactly_what_each_call_received():
    """The process's model of an architecture is loaded by copy, and a load of the tensors it already
    holds is skipped: any change to the model since (a training step, an edit in place) must make
    the next load copy again, and a partial or foreign state must go through load_state_dict."""
    from flowerbed.clients.base import Template

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    shared = Template.of(model)
    received = {k: v.detach().clone() + 1 for k, v in model.state_dict().items()}

    def holds(state) -> bool:
        return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())

    assert holds(shared.load(received).state_dict()) and holds(received)
    with torch.no_grad():
        model[0].weight.add_(5.0)  # a training step's kind of change
    shared.load(received)
    assert holds(received)
    model.train()
    model(torch.randn(8, 3))  # BatchNorm's running statistics move in place
    shared.load(received)
    assert holds(received)
    other = {k: v + 2 for k, v in received.items()}
    shared.load(other)
    assert holds(other) and len(shared.parameters) == len(list(model.parameters()))
    with pytest.raises(RuntimeError):
        shared.load({"0.weight": other["0.weight"]})  # strict, as load_state_dict
