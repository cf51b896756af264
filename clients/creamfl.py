"""CreamFL's client half (Yu et al., ICLR 2023): its own model, the local task, two contrasts on the
public pairs, and its representations of them as the reply.

The client's model is its own architecture (`algorithm.client_model` image features,
`algorithm.client_text` text encoder; the task builds it), kept in `context.state` between rounds:
no weights travel. Each round it receives the global representations of the public pairs (image
`img`, text `txt`, N x d), trains its local task (the shared core, the task's loss), then one pass
over the public pairs with `inter_weight` x the inter-modal contrast (its representation of item j
against all global representations of the other modality, j the positive) plus `intra_weight` x
the intra-modal contrast (toward the global representation of the same modality, away from its own
model's at the start of the round), and replies with its representations of every public pair.
A public item is an image and its first caption [choice: the code counts each caption as an item,
so an image's captions are each other's false negatives].
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from torch import nn

from flowerbed.clients.base import ClientAlgorithm
from flowerbed.clients.core import batch_plan, batches_from, sgd, sgd_train
from flowerbed.tasks.representations import inter_modal_loss, intra_modal_loss
from flowerbed.tasks.retrieval import embed_pairs, public_pairs

STATE_KEY = "creamfl/model"


def client_config(cfg: dict) -> dict:
    """The run config with the client's architecture in the model keys (the task builds from them)."""
    return {**cfg, "model.name": cfg["algorithm.client_model"], "model.text": cfg["algorithm.client_text"]}


class CreamFLClient(ClientAlgorithm):
    @staticmethod
    def applies_to(setting: dict) -> bool:
        """For the leaderboard (experiments/leaderboard.py): retrieval settings only."""
        return setting.get("task.name") == "retrieval"

    def own_model(self) -> nn.Module:
        model = self.task.build_model(client_config(self.cfg), self.data).to(self.device)
        if STATE_KEY in self.context.state:
            model.load_state_dict(self.context.state[STATE_KEY].to_torch_state_dict())
        return model

    def train(self, msg: Message) -> RecordDict:
        cfg, d, rnd = self.cfg, self.data, self.server_round(msg)
        received = msg.content["arrays"].to_torch_state_dict()
        g_img, g_txt = received["img"].to(self.device), received["txt"].to(self.device)
        model = self.own_model()
        px, py = public_pairs(cfg, self.device)
        start_img, start_txt = embed_pairs(model, px, py)  # the model as it was at the start of the round
        optimizer = sgd(model.parameters(), cfg)
        local = sgd_train(model, d.x_labeled, d.y_labeled, batches_from(cfg, len(d.y_labeled), self.generator(rnd)),
                          optimizer, self.task.loss)
        inter_w, intra_w = float(cfg["algorithm.inter_weight"]), float(cfg["algorithm.intra_weight"])

        def public_loss(m, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            img, txt = m(x, py[index].unsqueeze(1))
            txt = txt.squeeze(1)
            inter = inter_modal_loss(img, g_txt, index) + inter_modal_loss(txt, g_img, index)
            intra = intra_modal_loss(img, g_img[index], start_img[index]) + intra_modal_loss(txt, g_txt[index], start_txt[index])
            return inter_w * inter + intra_w * intra

        public = 0.0
        if inter_w or intra_w:
            plan = batch_plan(len(px), int(cfg["train.batch_size"]), 1, 0, self.generator(rnd, "public"))
            public = sgd_train(model, px, torch.arange(len(px), device=self.device), plan, optimizer, public_loss)
        self.context.state[STATE_KEY] = ArrayRecord(model.state_dict())
        img, txt = embed_pairs(model, px, py)
        metrics = {"train/loss": local, "creamfl/public_loss": public, "num-examples": len(d.y_labeled)}
        return RecordDict({"arrays": ArrayRecord({"img": img.cpu(), "txt": txt.cpu()}), "metrics": MetricRecord(metrics)})

    def evaluate(self, msg: Message) -> RecordDict:
        """The client's own model on its local test pairs."""
        return RecordDict({"metrics": MetricRecord(self.local_metrics(self.own_model()))})
