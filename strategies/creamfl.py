"""CreamFL's server half (Yu et al., ICLR 2023): a larger server model taught by the clients'
representations of public image-text pairs, never by their weights.

Per round: the server trains its dual encoder (`model.name` / `model.text`, `model.embed_dim`) for
one pass over the public pairs with the task's loss, encodes them (image and first caption, N x d)
and sends these global representations; the sampled clients (clients/creamfl.py: image-text,
image-only and text-only ones) reply with their own representations of the same pairs, of the
modalities they have; per public item j and modality, the server combines those of the clients
that sent that modality with the global-local cross-modal ensemble weights
(tasks/representations.py: a client weighs more on j where its image representation picks out
j's caption among all the global text representations, and symmetrically for text), and distils
the result into its model for one pass: `distill_weight` x (MSE(image(x_j), i_hat(j)) +
MSE(text(y_j), t_hat(j))), a term only for a modality some client sent (`creamfl/img_senders`,
`creamfl/txt_senders` count them). The global model of the run (central evaluation,
checkpoints) is the server's dual encoder. Clients score their own models: recall for image-text
clients, `personal/acc` for uni-modal ones, each key averaged over the clients that report it.

Choices where the paper and the code are silent or odd [NF]:
- each distillation term once per round (the code adds it once per client type present);
- a modality's ensemble runs over the clients that sent it, whatever their type (the code keeps
  the types apart only to count the distillation terms); a round in which nobody sent a modality
  has no term for it (the code crashes there);
- the ensemble over the public set actually used, no temperature (tasks/representations.py);
- the server's optimizer is the run's SGD (`train.lr`, `train.momentum`), not AdamP;
- the final round is reported; nothing is selected on the test set.
Baselines and ablations, same data and budget: `algorithm.ensemble=mean` (the representation mean,
FedMD/FedGEMS-style, with the same distillation), `algorithm.inter_weight=0` / `intra_weight=0`
(CreamFL without the inter- / intra-modal contrast), `algorithm.distill_weight=0` (the server
trained on the public pairs alone); FedAvg of the image-text clients is `algorithm=fedavg`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from flwr.app import ArrayRecord, Message, MetricRecord

from flowerbed.strategies.flower import FedAvg
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.records import tensors
from flowerbed.tasks.registry import task_of
from flowerbed.tasks.representations import aggregate, ensemble_weights
from flowerbed.tasks.retrieval import MODALITIES, embed_pairs, public_pairs, public_rows, represent
from flowerbed.tasks.training import batch_plan, generator, sgd, sgd_train

ENSEMBLES = ("contrastive", "mean")


def check(cfg: dict) -> None:
    """What CreamFL needs of the rest of the config (simulations/config.py asks before any work)."""
    if str(cfg.get("task.name")) != "retrieval":
        raise ConfigError.invalid("task.name", cfg.get("task.name"), "retrieval for algorithm.name=creamfl")
    if int(cfg.get("partition.public_images", 0)) <= 0:
        raise ConfigError.invalid("partition.public_images", cfg.get("partition.public_images"), "> 0 for algorithm.name=creamfl")


class CreamFL(FedAvg):
    def __init__(self, cfg: dict, **common) -> None:
        super().__init__(**common)
        self.cfg = cfg
        self._server: torch.nn.Module | None = None  # this round's model between configure and aggregate
        self._representations: tuple[torch.Tensor, torch.Tensor] | None = None  # this round's global ones

    def _model(self, arrays: ArrayRecord) -> torch.nn.Module:
        model = task_of(self.cfg).build_model(self.cfg, task_of(self.cfg).federation(self.cfg).data)
        model.load_state_dict(tensors(arrays))
        return model

    def _public_pass(self, model, loss_fn, targets: torch.Tensor, server_round: int, purpose: str) -> float:
        x, _ = public_pairs(self.cfg)
        gen = generator(int(self.cfg["seed"]), server_round, purpose)
        plan = batch_plan(len(x), int(self.cfg["train.batch_size"]), 1, 0, gen)
        return sgd_train(model, x, targets, plan, sgd(model.parameters(), self.cfg), loss_fn)

    def configure_train(self, server_round, arrays, config, grid):
        model = self._model(arrays)
        data = task_of(self.cfg).federation(self.cfg).data
        captions = torch.as_tensor(data.y_train[public_rows(self.cfg)])
        self.public_loss = self._public_pass(model, task_of(self.cfg).loss, captions, server_round, "server-public")
        x, first = public_pairs(self.cfg)
        self._server, self._representations = model, embed_pairs(model, x, first)
        return super().configure_train(server_round, ArrayRecord(self._representations), config, grid)

    def configure_evaluate(self, server_round, arrays, config, grid):
        return super().configure_evaluate(server_round, ArrayRecord(), config, grid)  # clients score their own models

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Image-text clients score recall, uni-modal ones accuracy: not the same keys, which Flower's
        check wants; each key is the mean over the clients that report it (`evaluate_metrics_aggr_fn`)."""
        ordered = self.in_client_order(m for m in replies if not m.has_error())
        return self.evaluate_metrics_aggr_fn([m.content for m in ordered], self.weighted_by_key) if ordered else None

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept = self.screen(replies)
        model, global_ = self._server, self._representations
        self._server, self._representations, self._global = None, None, None  # not worth a place in the checkpoint
        self.round_stats["short"] = int(len(kept) < self.min_train_nodes)
        if not kept:
            return ArrayRecord(model.state_dict()), None
        uploads = [m.content["arrays"].to_torch_state_dict() for m in kept]
        targets, senders = {}, {}
        contrastive = str(self.cfg["algorithm.ensemble"]) == "contrastive"
        for key, other in MODALITIES.items():  # each modality over the clients that sent it; none sent: no term
            sent = [u[key] for u in uploads if key in u]
            senders[f"creamfl/{key}_senders"] = len(sent)
            if sent:
                stacked = torch.stack(sent)
                targets[key] = aggregate(stacked, ensemble_weights(stacked, global_[other]) if contrastive else None)
        weight = float(self.cfg["algorithm.distill_weight"])
        _, first = public_pairs(self.cfg)

        def distill(m, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            mine = represent(m, x, first[index], tuple(targets))
            return weight * sum(torch.nn.functional.mse_loss(mine[key], target[index]) for key, target in targets.items())

        distilled = 0.0
        if weight > 0 and targets:
            distilled = self._public_pass(model, distill, torch.arange(len(first)), server_round, "server-distill")
        metrics = self.train_metrics_aggr_fn([m.content for m in kept], self.weighted_by_key)
        metrics["creamfl/server_public_loss"], metrics["creamfl/distill_loss"] = self.public_loss, distilled
        metrics.update(senders)
        return ArrayRecord(model.state_dict()), metrics
