"""The client side of the training core: the optimizer and batch plan a run config asks for.

The core itself (seeds, batch plans, the SGD loop; tasks/training.py) is shared with the server
halves that train; it is re-exported here, where the client halves have always found it.
"""

from __future__ import annotations

import torch

from flowerbed.tasks.training import LossFn, batch_plan, derive_seed, generator, sgd, sgd_step, sgd_train

__all__ = ["LossFn", "batch_plan", "batches_from", "derive_seed", "generator", "sgd", "sgd_step", "sgd_train"]


def batches_from(cfg: dict, num_samples: int, gen: torch.Generator) -> list[torch.Tensor]:
    """The batch plan the run config asks for (train.local_epochs or train.local_steps)."""
    return batch_plan(
        num_samples, int(cfg["train.batch_size"]), int(cfg["train.local_epochs"]), int(cfg["train.local_steps"]), gen
    )
