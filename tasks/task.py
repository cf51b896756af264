"""What is learned: the seam between a task (classification, retrieval, detection) and the rest.

A task gives the rest of the code four things, and nothing else may assume what is learned:
- its data: `federation(cfg)` reads the dataset in the layout users keep it, splits it and
  partitions it (what a partitioner splits by is the task's choice: a class for classification,
  an image and a client type for retrieval, an image for detection); a batch is a pair of
  indexable tensors `(x, y)` whose rows are samples (the task says what a row of each holds);
- its models: `build_model(cfg, data)`, a builder picked by `model.name` from the task's table;
- its loss for a batch: `loss(model, x, y)`, so that the one training core (`clients/core.py`'s
  `sgd_train`, and `stacked_loss` for the batched engine's vmapped SGD) trains every task;
- its metrics: `central_metrics` (the server's held-out test set, `global/<name>`) and
  `client_metrics` (a client's local test set, `personal/<name>`), under the shared names
  (`acc`, `rsum`, `map50`).

A task's loss touches the model only by calling it (`model(x)`, `model(x, y)`): the batched engine
then runs the same loss on one client's slice of stacked weights without a form of its own.
The task, not the strategy, builds a model, so a client's model may follow its own data (CreamFL's
image-only, text-only and image-text clients) while the algorithm's two halves stay the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Protocol

import torch
from torch import nn
from torch.func import functional_call

from flowerbed.tasks.partitions import Federation

Tensors = dict[str, torch.Tensor]


class DataShape(Protocol):
    """What a model builder reads of the data: one sample's shape and the number of outputs
    (classes for classification and detection). LocalData, ArrayDataset and `Shape` have both."""

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def num_classes(self) -> int: ...


@dataclass(frozen=True)
class Shape:
    input_shape: tuple[int, ...]
    num_classes: int


class Task:
    """The four things a task provides (module docstring); one instance per task, without state."""

    name: ClassVar[str]
    metric: ClassVar[str]  # the headline metric: progress line, `<prefix>/<metric>_per_client`, best/final in the summary

    # -- data --------------------------------------------------------------------------------
    def federation(self, cfg: dict) -> Federation:
        """The dataset, its held-out test set and every client's share: a function of cfg alone."""
        raise NotImplementedError

    # -- models ------------------------------------------------------------------------------
    def build_model(self, cfg: dict, data: DataShape) -> nn.Module:
        """The model `model.name` names, for data of this shape, its weights a function of cfg's seed."""
        raise NotImplementedError

    # -- loss --------------------------------------------------------------------------------
    def loss(self, model: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean training loss of the batch (x, y); calls `model`, reads nothing else of it."""
        raise NotImplementedError

    def stacked_loss(self, model: nn.Module, p: Tensors, b: Tensors, x: torch.Tensor, y: torch.Tensor,
                     e: Tensors) -> torch.Tensor:
        """`loss` for one client of the batched engine: `model` run on that client's parameters `p`
        and buffers `b` (`e`, the form's extra tensors, is for losses that read more)."""
        return self.loss(lambda *inputs: functional_call(model, (p, b), inputs), x, y)

    # -- metrics -----------------------------------------------------------------------------
    def central_metrics(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, federation: Federation,
                        prefix: str = "global", **options) -> dict:
        """`<prefix>/<metric>` of `model` on the held-out test set (x, y)."""
        raise NotImplementedError

    def client_metrics(self, model: nn.Module, data, prefix: str = "personal") -> dict:
        """`<prefix>/<metric>` and `num-examples` of `model` on a client's local test set
        (`data.x_test`, `data.y_test`)."""
        raise NotImplementedError

