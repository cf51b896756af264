"""What every client half shares: its data, its model, its seeds, and the reply format.

A client half subclasses `ClientAlgorithm` and overrides `fit` (local training) and, where it
keeps a personal model, `evaluate`. One instance serves one ClientApp call; anything that must
outlive the call goes into `context.state`, which `flowerbed.clients.state` also writes to disk.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from flwr.app import ArrayRecord, Context, Message, RecordDict
from torch import nn

from flowerbed.clients.core import generator
from flowerbed.clients.data import LocalData, client_index, local_data
from flowerbed.tasks.config_key import config_key
from flowerbed.tasks.models import resolve_device, set_training
from flowerbed.tasks.records import metric_record, record_dict, snapshot, tensors
from flowerbed.tasks.registry import task_of
from flowerbed.tasks.task import Shape, Task


@dataclass
class Template:
    """One model per process and architecture, into which each call loads the weights it receives."""

    model: nn.Module
    names: list[str]
    slots: list[torch.Tensor]  # the model's own parameters and buffers, in state_dict order
    plain: bool  # no module transforms what it loads: a copy into `slots` is load_state_dict
    parameters: list[nn.Parameter]  # model.parameters(), listed once (the walk costs more than a small step)
    last_loaded: list[torch.Tensor] = dataclasses.field(default_factory=list)
    versions: list[int] = dataclasses.field(default_factory=list)  # the slots' in-place versions after that load

    @classmethod
    def of(cls, model: nn.Module) -> "Template":
        state = model.state_dict(keep_vars=True)
        plain = all(not m._load_state_dict_pre_hooks and not m._load_state_dict_post_hooks and (
            type(m)._load_from_state_dict is nn.Module._load_from_state_dict or isinstance(m, nn.modules.batchnorm._NormBase))
            for m in model.modules())
        return cls(model, list(state), list(state.values()), plain, list(model.parameters()))

    def load(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """`model.load_state_dict(state)` (strict: every entry, so nothing of the last call stays),
        as plain copies when the entries are the model's own in its order and shapes."""
        values = list(state.values())
        again = self._loaded_last(values)
        if self.plain and (again or list(state) == self.names and all(v.shape == t.shape for v, t in zip(values, self.slots))):
            if not (again and [t._version for t in self.slots] == self.versions):  # else: the model still holds them
                with torch.no_grad():
                    torch._foreach_copy_(self.slots, values)
                self.versions = [t._version for t in self.slots]  # any in-place change to the model moves these
            self.last_loaded = values  # a round's clients all receive these same tensors: checked (and copied) once
        else:
            self.last_loaded = []
            self.model.load_state_dict(state)
        return self.model

    def _loaded_last(self, values: list[torch.Tensor]) -> bool:
        """`values` are the very tensors loaded last time (names and shapes already checked)."""
        last = self.last_loaded
        return len(values) == len(last) and all(v is w for v, w in zip(values, last))

    def snapshot(self) -> ArrayRecord:
        """A tensor record of copies of the model's state (what `snapshot(model.state_dict())` gives)."""
        return snapshot(dict(zip(self.names, self.slots)))


@functools.lru_cache(maxsize=4)
def template(input_shape: tuple[int, ...], num_classes: int, device: str, cfg: tuple) -> Template:
    run_config = dict(cfg)
    return Template.of(task_of(run_config).build_model(run_config, Shape(input_shape, num_classes)).to(device))


class ClientAlgorithm:
    """What every client half shares (its data, model template, evaluation and state); each algorithm
    writes `fit` (FedAvg's: clients/fedavg.py) and overrides the other parts that differ."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.cfg = context.run_config
        self.client_id = client_index(context.node_config)
        self.device = resolve_device(str(self.cfg["train.device"]))
        if torch.get_num_threads() != int(self.cfg["train.num_threads"]):
            torch.set_num_threads(int(self.cfg["train.num_threads"]))
        self.data: LocalData = self.load_data(context.node_config)
        self.task: Task = task_of(self.cfg)

    def load_data(self, node_config: dict) -> LocalData:
        """This client's data: its partition, or a device's `data-path` (CreamFL reads its client type's)."""
        return local_data(self.cfg, node_config, self.device)

    # -- building blocks -------------------------------------------------------------------
    def new_model(self) -> nn.Module:
        """A model of its own with the initial weights (keep it as long as you like)."""
        return self.task.build_model(self.cfg, self.data).to(self.device)

    def model_from(self, msg: Message) -> nn.Module:
        """The received weights in this process's model of the architecture, in training mode and
        without gradients, like a new one: valid until the next call loads other weights into it."""
        state = tensors(msg.content["arrays"])
        shared = template(self.data.input_shape, self.data.num_classes, str(self.device), config_key(self.cfg))
        try:
            model = shared.load(state)
        except RuntimeError:  # not the whole model: a new one, which raises the same error if it is wrong
            model = self.new_model()
            model.load_state_dict(state)
            return model
        for p in shared.slots:
            p.grad = None
        self._template = shared
        return set_training(model)

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """`list(model.parameters())`, listed once for this process's model of the architecture."""
        shared = getattr(self, "_template", None)
        return shared.parameters if shared is not None and shared.model is model else list(model.parameters())

    def generator(self, server_round: int, purpose: str = "train") -> torch.Generator:
        return generator(int(self.cfg["seed"]), server_round, self.client_id, purpose)

    @staticmethod
    def server_round(msg: Message) -> int:
        return int(msg.content["config"]["server-round"])

    # -- the two message handlers ------------------------------------------------------------
    def train(self, msg: Message) -> RecordDict:
        model = self.model_from(msg)
        metrics = self.fit(model, msg)
        metrics.setdefault("num-examples", len(self.data.y_labeled))
        return record_dict({"arrays": self.reply_arrays(model), "metrics": metric_record(metrics)})

    def reply_arrays(self, model: nn.Module) -> ArrayRecord:
        """What goes back to the server: the whole model here; less where parts stay local.

        Tensors, not bytes: made only where a Flower runtime sends them (tasks/records.py); copies,
        since the next call loads other weights into this model."""
        shared = getattr(self, "_template", None)
        return shared.snapshot() if shared is not None and shared.model is model else snapshot(model.state_dict())

    def fit(self, model: nn.Module, msg: Message) -> dict:
        """Local training in place; returns the reply's metrics."""
        raise NotImplementedError

    def evaluate(self, msg: Message) -> RecordDict:
        """Personalized accuracy: the model this client would use, on its local test set."""
        model = self.model_from(msg)
        metrics = self.local_metrics(model)
        return record_dict({"metrics": metric_record(metrics)})

    def local_metrics(self, model: nn.Module, prefix: str = "personal") -> dict:
        """The task's metrics of `model` on the local test set (classification: accuracy, loss, masked accuracy)."""
        return self.task.client_metrics(model, self.data, prefix)
