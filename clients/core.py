"""The shared local-training core: mini-batch plans, an SGD loop, seeds and devices.

Training is a function of (model, data, batch plan, loss) with no hidden global state: the batch
plan comes from a generator seeded by (run seed, round, client), so the same client in the same
round draws the same batches on every engine, and a batched engine can reproduce them. The loss
is the task's (tasks/task.py: `task.loss`, for a batch of rows of x and y), so one loop trains
every task; without one it is classification's cross-entropy, which the algorithms that exist
only for classification (a head apart from a body: FedRep, FedBABU, pFedPG) train with.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from flowerbed.tasks.classification import cross_entropy
from flowerbed.tasks.models import set_training

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # a task's loss(model, x, y)


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from any tuple of ints/strings, stable across processes and machines."""
    ints = [p if isinstance(p, int) else int.from_bytes(str(p).encode()[:16].ljust(16, b"\0"), "little") for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(2, np.uint64)[0] >> np.uint64(1))


def generator(*parts: int | str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def batch_plan(num_samples: int, batch_size: int, epochs: int, steps: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Index batches: `steps` batches if steps > 0, else `epochs` reshuffled passes.

    With `steps`, passes are chained so that a client with few samples still takes `steps` steps.
    """
    if num_samples == 0:
        return []
    batch_size = min(batch_size, num_samples)
    batches: list[torch.Tensor] = []
    passes = epochs if steps <= 0 else -1
    while passes != 0 and (steps <= 0 or len(batches) < steps):
        order = torch.randperm(num_samples, generator=gen)
        batches += list(order.split(batch_size))
        passes -= 1
    return batches[:steps] if steps > 0 else batches


def sgd_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batches: list[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn = cross_entropy,
) -> float:
    """Run one optimizer step per batch; return the mean loss (kept on device until the end)."""
    set_training(model)
    total = torch.zeros((), device=x.device)
    for idx in batches:
        idx = idx.to(x.device)
        loss = loss_fn(model, x[idx], y[idx])
        sgd_step(optimizer, loss)
        total += loss.detach()
    return float(total / max(len(batches), 1))


def sgd_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One step of `optimizer` down `loss` (gradients of the step before are dropped, not summed)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def sgd(params, cfg: dict, lr: float | None = None) -> torch.optim.SGD:
    return torch.optim.SGD(
        params,
        lr=float(cfg["train.lr"] if lr is None else lr),
        momentum=float(cfg["train.momentum"]),
        weight_decay=float(cfg["train.weight_decay"]),
    )


def batches_from(cfg: dict, num_samples: int, gen: torch.Generator) -> list[torch.Tensor]:
    """The batch plan the run config asks for (train.local_epochs or train.local_steps)."""
    return batch_plan(
        num_samples, int(cfg["train.batch_size"]), int(cfg["train.local_epochs"]), int(cfg["train.local_steps"]), gen
    )
