"""FedSTO's server half (Kim et al., NeurIPS 2023, arXiv 2310.17097), and its baselines.

1. Warm-up: before round 1 the server trains the model on its labeled domain
   (`algorithm.warmup_steps` SGD steps).
2. Stage 1, Selective Training, rounds 1..T1 (`algorithm.t1`): clients train the backbone only on
   pseudo-labels (clients/fedsto.py) and send it back; the server averages the backbones
   (sample-weighted), keeps its own neck and head, then trains all parameters on its labels
   (`algorithm.server_steps`).
3. Stage 2, rounds after T1: clients send every parameter, trained with the orthogonality
   regulariser (`algorithm.ortho_lambda`); the server averages them and takes its step, with the
   same regulariser.

Baselines and ablations, same budget (the same warm-up, rounds and server steps), by name:
- `fedsto-no-ortho`: FedSTO with lambda 0 in stage 2;
- `fedsto-stage1`: stage 1 in every round;
- `fedavg-pseudo`: every parameter from round 1 (stage 2 without the regulariser): FedAvg on
  pseudo-labels with the server's step;
- `server-only`: no client trains; the server takes its step on its labels every round;
- `centralized`: as server-only, on the labels of every domain's training images (the ceiling).

[NF] choices: warm-up and server steps as SGD steps at `train.lr`, each on a batch of
`train.batch_size` labeled images drawn afresh (tasks/detection.py `supervised_steps`; the paper's
server epochs per round are not given); aggregation sample-weighted (by unlabeled images); T1 and
T2 (= rounds - T1) in rounds; the server's step comes after averaging in both stages; the
round-0 line scores the model before the warm-up (which runs when round 1 is configured).
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

from flowerbed.strategies.flower import FedAvg
from flowerbed.tasks.detection import build_federation, build_model, detection_loss, supervised_steps
from flowerbed.tasks.models import resolve_device
from flowerbed.tasks.orthogonality import with_orthogonality
from flowerbed.tasks.records import tensor_record, tensors

VARIANTS = ("fedsto", "fedsto-no-ortho", "fedsto-stage1", "fedavg-pseudo", "server-only", "centralized")
NO_CLIENTS = ("server-only", "centralized")


def options(cfg: dict) -> dict:
    return {"run_config": {k: v for k, v in cfg.items()}}


def _server_data(cfg: dict, everything: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The server's labeled images and boxes (every domain's for the centralized ceiling), and the class count."""
    fed = build_federation(cfg)
    idx = torch.arange(len(fed.data.x_train)) if everything else torch.as_tensor(fed.server)
    return torch.as_tensor(fed.data.x_train)[idx], torch.as_tensor(fed.data.y_train)[idx], fed.data.num_classes


class FedSTO(FedAvg):
    """FedAvg's sampling and averaging, with FedSTO's stages and the server's supervised step."""

    def __init__(self, run_config: dict, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cfg = run_config
        self.variant = str(run_config["algorithm.name"])
        self.t1 = int(run_config["algorithm.t1"])
        self.warmed = False

    # -- schedule -------------------------------------------------------------------------------
    def stage(self, server_round: int) -> int:
        if self.variant == "fedsto-stage1" or (self.variant in ("fedsto", "fedsto-no-ortho") and server_round <= self.t1):
            return 1
        return 2

    def ortho(self, server_round: int) -> float:
        if self.variant != "fedsto" or self.stage(server_round) == 1:
            return 0.0
        return float(self.cfg["algorithm.ortho_lambda"])

    # -- the round ------------------------------------------------------------------------------
    def configure_train(self, server_round, arrays, config, grid):
        if not self.warmed:
            arrays = self.server_step(arrays, 0, int(self.cfg["algorithm.warmup_steps"]))
            self.warmed = True
        self._sent = arrays
        if self.variant in NO_CLIENTS:
            return []
        config = ConfigRecord({**dict(config), "fedsto-stage": self.stage(server_round), "fedsto-ortho": self.ortho(server_round)})
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        sent, self._sent = self._sent, None  # not worth a place in the checkpoint
        if self.variant in NO_CLIENTS:
            self.round_stats = {"failures": 0, "rejected": 0, "rejected_norm": 0, "short": 0}
            return self.server_step(sent, server_round, int(self.cfg["algorithm.server_steps"])), MetricRecord({})
        averaged, metrics = super().aggregate_train(server_round, replies)
        if averaged is None:  # too few usable replies: the model stays as sent (warmed up, in round 1)
            return sent, metrics
        merged = dict(tensors(sent))
        merged.update(tensors(averaged))  # stage 1: the backbone only; neck and head stay the server's
        return self.server_step(tensor_record(merged), server_round, int(self.cfg["algorithm.server_steps"])), metrics

    def server_step(self, arrays: ArrayRecord, server_round: int, steps: int) -> ArrayRecord:
        """`steps` SGD steps of the detection loss (plus the stage's regulariser) on the server's labels."""
        if steps <= 0:
            return arrays
        cfg = self.cfg
        x, y, num_classes = _server_data(cfg, self.variant == "centralized")
        device = resolve_device(str(cfg["train.device"]))
        model = build_model(cfg, num_classes).to(device)
        model.load_state_dict(tensors(arrays))
        x, y = x.to(device), y.to(device)
        loss_fn = with_orthogonality(detection_loss, self.ortho(server_round) if server_round > 0 else 0.0)
        supervised_steps(model, x, y, steps, cfg, (int(cfg["seed"]), server_round, 11), loss_fn)
        return tensor_record({k: v.detach() for k, v in model.state_dict().items()})
