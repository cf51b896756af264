"""CreamFL's server half (Yu et al., ICLR 2023): a larger server model taught by the clients'
representations of public image-text pairs, never by their weights.

Per round: the server trains its dual encoder (`model.name` / `model.text`, `model.embed_dim`) for
one pass over the public pairs with the task's loss, encodes them (image and first caption, N x d)
and sends these global representations; the sampled clients (clients/creamfl.py) reply with their
own representations of the same pairs; per public item j and modality, the server combines them
with the global-local cross-modal ensemble weights (tasks/representations.py: a client weighs
more on j where its image representation picks out j's caption among all the global text
representations, and symmetrically for text), and distils the result into its model for one pass:
`distill_weight` x (MSE(image(x_j), i_hat(j)) + MSE(text(y_j), t_hat(j))). The global model of the
run (central evaluation, checkpoints) is the server's dual encoder.

Choices where the paper and the code are silent or odd [NF]:
- each distillation term once per round (the code adds it once per client type present);
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
from flowerbed.tasks.retrieval import embed_pairs, public_pairs, public_rows
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
        reps = ArrayRecord({"img": self._representations[0], "txt": self._representations[1]})
        return super().configure_train(server_round, reps, config, grid)

    def configure_evaluate(self, server_round, arrays, config, grid):
        return super().configure_evaluate(server_round, ArrayRecord(), config, grid)  # clients score their own models

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept = self.screen(replies)
        model, (g_img, g_txt) = self._server, self._representations
        self._server, self._representations, self._global = None, None, None  # not worth a place in the checkpoint
        self.round_stats["short"] = int(len(kept) < self.min_train_nodes)
        if not kept:
            return ArrayRecord(model.state_dict()), None
        uploads = [m.content["arrays"].to_torch_state_dict() for m in kept]
        img, txt = torch.stack([u["img"] for u in uploads]), torch.stack([u["txt"] for u in uploads])
        contrastive = str(self.cfg["algorithm.ensemble"]) == "contrastive"
        i_hat = aggregate(img, ensemble_weights(img, g_txt) if contrastive else None)
        t_hat = aggregate(txt, ensemble_weights(txt, g_img) if contrastive else None)
        weight = float(self.cfg["algorithm.distill_weight"])
        _, first = public_pairs(self.cfg)

        def distill(m, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            image, text = m(x, first[index].unsqueeze(1))
            mse = torch.nn.functional.mse_loss
            return weight * (mse(image, i_hat[index]) + mse(text.squeeze(1), t_hat[index]))

        distilled = 0.0
        if weight > 0:
            distilled = self._public_pass(model, distill, torch.arange(len(first)), server_round, "server-distill")
        metrics = self.train_metrics_aggr_fn([m.content for m in kept], self.weighted_by_key)
        metrics["creamfl/server_public_loss"], metrics["creamfl/distill_loss"] = self.public_loss, distilled
        return ArrayRecord(model.state_dict()), metrics
