"""The training core both halves share: seeds, mini-batch plans and the SGD loop.

Training is a function of (model, data, batch plan, loss) with no hidden global state: the batch
plan comes from a generator seeded by (run seed, round, client), so the same client in the same
round draws the same batches on every engine, and a batched engine can reproduce them. The loss
is the task's (tasks/task.py: `task.loss`, for a batch of rows of x and y), so one loop trains
every task; without one it is classification's cross-entropy, which the algorithms that exist
only for classification (a head apart from a body: FedRep, FedBABU, pFedPG) train with. Here in
tasks/ (clients/core.py re-exports it) so that a server half that trains (CreamFL's server on the
public pairs) runs the same loop.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch
from torch import nn

from flowerbed.tasks.classification import cross_entropy
from flowerbed.tasks.models import set_training

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # a task's loss(model, x, y)


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from any tuple of ints/strings, stable across processes and machines: the first
    64-bit word of NumPy's SeedSequence of the parts (a string as the int of its first 16 bytes),
    shifted right by one.

    Computed the cheap way (a client call asks for one): SeedSequence is given the 32-bit words it
    would split the parts into (each int's words, least significant first), and the 64-bit word is
    assembled from two 32-bit ones; the same number as `SeedSequence(parts).generate_state(2, uint64)[0] >> 1`."""
    entropy: list[int] = []
    for part in parts:
        entropy += _string_words(part) if not isinstance(part, int) else _int_words(part)
    words = np.random.SeedSequence(np.array(entropy, dtype=np.uint32)).generate_state(2)
    return ((int(words[1]) << 32) | int(words[0])) >> 1


def _int_words(value: int) -> list[int]:
    if value < 0:
        raise ValueError(f"a seed part must be a non-negative int or a string, not {value}")
    words = [value & 0xFFFFFFFF]
    while value := value >> 32:
        words.append(value & 0xFFFFFFFF)
    return words


@functools.lru_cache(maxsize=256)
def _string_words(part: str) -> tuple[int, ...]:
    return tuple(_int_words(int.from_bytes(str(part).encode()[:16].ljust(16, b"\0"), "little")))


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
        wanted = num_samples if steps <= 0 else min(num_samples, (steps - len(batches)) * batch_size)
        batches += [order[i : i + batch_size] for i in range(0, wanted, batch_size)]  # `order.split`, as slices
        passes -= 1
    return batches[:steps] if steps > 0 else batches


def sgd_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batches: list[torch.Tensor],
    optimizer: SGD | torch.optim.Optimizer,
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


def sgd_step(optimizer: SGD | torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One step of `optimizer` down `loss` (gradients of the step before are dropped, not summed)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class SGD:
    """torch.optim.SGD's update (weight decay, momentum; no dampening, no Nesterov), written as the
    operations of its per-tensor path, in their order: the same numbers to the bit.

    Not torch.optim.SGD itself because its first construction in a process imports torch._dynamo
    (about 1 s, a third of a small run's start-up) only to keep `add_param_group` out of compiled
    graphs. The batched engine writes the same update out for stacked weights (clients/batched.py).
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.velocity: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:  # not reached by this loss (a frozen part)
                continue
            g = p.grad if not self.weight_decay else p.grad.add(p, alpha=self.weight_decay)
            if self.momentum:
                if self.velocity[i] is None:
                    self.velocity[i] = torch.clone(g).detach()
                else:
                    self.velocity[i].mul_(self.momentum).add_(g)
                g = self.velocity[i]
            p.add_(g, alpha=-self.lr)


def sgd(params, cfg: dict, lr: float | None = None) -> SGD:
    return SGD(
        params,
        lr=float(cfg["train.lr"] if lr is None else lr),
        momentum=float(cfg["train.momentum"]),
        weight_decay=float(cfg["train.weight_decay"]),
    )
