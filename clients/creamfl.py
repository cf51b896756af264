"""CreamFL's client half (Yu et al., ICLR 2023): its own model, the local task, two contrasts on the
public pairs, and its representations of them as the reply.

Three client types in one run (tasks/client_types.py says which client is which and holds what):
- image-text: a dual encoder (`algorithm.client_model` image features, `algorithm.client_text`
  text encoder), the task's contrastive loss on its own pairs;
- image-only: `algorithm.image_model`'s features + projection + classifier, cross-entropy on its
  labeled images (tasks/unimodal.py);
- text-only: `algorithm.text_model` + projection + classifier, cross-entropy on its labeled text.
Every model is kept in `context.state` between rounds: no weights travel. Each round the client
receives the global representations of the public pairs (image `img`, text `txt`, N x d), trains
its local task (the shared core, one loop), then one pass over the public pairs with, for each
modality its model encodes, `inter_weight` x the inter-modal contrast (its representation of item
j against all global representations of the other modality, j the positive) plus `intra_weight`
x the intra-modal contrast (toward the global representation of the same modality, away from its
own model's at the start of the round), and replies with its representations of every public pair,
of its modalities only (an image client sends `img`, a text client `txt`).

Choices [NF]:
- a public item is an image and its first caption (the code counts each caption as an item, so an
  image's captions are each other's false negatives);
- a uni-modal client's classifier sits on its projection (tasks/unimodal.py), its local task a
  plain cross-entropy (the code's margin softmax and Gram-matrix term are left out);
- text clients read the training captions' vocabulary (tasks/client_types.py), unknown words the
  unknown id;
- in a simulation the type follows the client id (image-text, then image, then text clients); on
  a device the SuperNode says it: `--node-config 'client-id=N client-type=image|text|image-text
  data-path=...'`, where data-path is an image folder (ImageFolder layout) for `image`, an AG News
  CSV for `text`, or for any type the .npz `flowerbed deploy export` writes (`flowerbed deploy
  commands` prints each device's client-type from the exported run config). The device also
  needs the run's public pairs (`dataset.path`), from which it builds the vocabulary as the server does.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from torch import nn

from flowerbed.clients.base import ClientAlgorithm
from flowerbed.clients.core import batch_plan, batches_from, sgd, sgd_train
from flowerbed.clients.data import LocalData, as_local_data, client_index
from flowerbed.tasks.classification import cross_entropy
from flowerbed.tasks.client_types import IMAGE, IMAGE_TEXT, TEXT, TYPES, client_type, holdout, read_rows, unimodal_arrays
from flowerbed.tasks.config_key import config_key
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.local_data import ClientArrays
from flowerbed.tasks.registry import TASKS
from flowerbed.tasks.representations import inter_modal_loss, intra_modal_loss
from flowerbed.tasks.retrieval import MODALITIES, embed_pairs, federation, public_pairs, represent
from flowerbed.tasks.unimodal import image_classifier, text_classifier

STATE_KEY = "creamfl/model"


def client_config(cfg: dict) -> dict:
    """The run config with the client's architecture in the model keys (the task builds from them)."""
    return {**cfg, "model.name": cfg["algorithm.client_model"], "model.text": cfg["algorithm.client_text"]}


def node_type(cfg: dict, node_config: dict) -> str:
    """The node's client type: `client-type` on a device, else its simulated client id's."""
    if node_config.get("data-path"):
        kind = str(node_config.get("client-type", IMAGE_TEXT)).strip()
        if kind not in TYPES:
            raise ConfigError.invalid("client-type", kind, "one of " + ", ".join(TYPES))
        return kind
    return client_type(cfg, client_index(node_config))


@functools.lru_cache(maxsize=64)
def _unimodal_data(keys: tuple, index: int, device: str) -> LocalData:
    return as_local_data(unimodal_arrays(dict(keys), index), device)


@functools.lru_cache(maxsize=4)
def _device_data(keys: tuple, kind: str, path: str, test_fraction: float, device: str) -> LocalData:
    return as_local_data(device_rows(dict(keys), kind, path, test_fraction), device)


def device_rows(cfg: dict, kind: str, path: str, test_fraction: float) -> ClientArrays:
    """A uni-modal device's own file or folder, a fixed share held out as its local test set."""
    rows = read_rows(cfg, kind, path, "data-path")
    train, test = holdout(np.arange(len(rows.y)), test_fraction, np.random.default_rng(0))
    if len(train) == 0:
        raise ConfigError(f"data-path={path!r}: no training rows ({len(rows.y)} in all)")
    return ClientArrays(rows.x[train], rows.y[train], rows.x[:0], rows.y[:0], rows.x[test], rows.y[test], rows.num_classes)


class CreamFLClient(ClientAlgorithm):
    @staticmethod
    def applies_to(setting: dict) -> bool:
        """For the leaderboard (experiments/leaderboard.py): retrieval settings only."""
        return setting.get("task.name") == "retrieval"

    def load_data(self, node_config: dict) -> LocalData:
        self.kind = node_type(self.cfg, node_config)
        if self.kind == IMAGE_TEXT or str(node_config.get("data-path", "")).endswith(".npz"):  # `deploy export`'s arrays
            return super().load_data(node_config)
        if node_config.get("data-path"):
            fraction = float(node_config.get("test-fraction", 0.2))
            return _device_data(config_key(self.cfg), self.kind, str(node_config["data-path"]), fraction, str(self.device))
        return _unimodal_data(config_key(self.cfg), client_index(node_config), str(self.device))

    def own_model(self) -> nn.Module:
        if self.kind == IMAGE:
            model = image_classifier(self.cfg, self.data.input_shape, self.data.num_classes)
        elif self.kind == TEXT:
            model = text_classifier(self.cfg, federation(self.cfg).data.num_classes, self.data.num_classes)
        else:
            model = self.task.build_model(client_config(self.cfg), self.data)
        model = model.to(self.device)
        if STATE_KEY in self.context.state:
            model.load_state_dict(self.context.state[STATE_KEY].to_torch_state_dict())
        return model

    def local_loss(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The image-text clients' task loss; the uni-modal clients' classification cross-entropy."""
        return self.task.loss(model, x, y) if self.kind == IMAGE_TEXT else cross_entropy(model, x, y)

    def train(self, msg: Message) -> RecordDict:
        cfg, d, rnd = self.cfg, self.data, self.server_round(msg)
        received = {k: v.to(self.device) for k, v in msg.content["arrays"].to_torch_state_dict().items()}
        model = self.own_model()
        px, py = public_pairs(cfg, self.device)
        start = embed_pairs(model, px, py)  # the model as it was at the start of the round
        optimizer = sgd(model.parameters(), cfg)
        local = sgd_train(model, d.x_labeled, d.y_labeled, batches_from(cfg, len(d.y_labeled), self.generator(rnd)),
                          optimizer, self.local_loss)
        inter_w, intra_w = float(cfg["algorithm.inter_weight"]), float(cfg["algorithm.intra_weight"])

        def public_loss(m, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            total = 0.0
            for key, mine in represent(m, x, py[index]).items():
                total = total + inter_w * inter_modal_loss(mine, received[MODALITIES[key]], index)
                total = total + intra_w * intra_modal_loss(mine, received[key][index], start[key][index])
            return total

        public = 0.0
        if inter_w or intra_w:
            plan = batch_plan(len(px), int(cfg["train.batch_size"]), 1, 0, self.generator(rnd, "public"))
            public = sgd_train(model, px, torch.arange(len(px), device=self.device), plan, optimizer, public_loss)
        self.context.state[STATE_KEY] = ArrayRecord(model.state_dict())
        reply = {k: v.cpu() for k, v in embed_pairs(model, px, py).items()}
        metrics = {"train/loss": local, "creamfl/public_loss": public, "num-examples": len(d.y_labeled)}
        return RecordDict({"arrays": ArrayRecord(reply), "metrics": MetricRecord(metrics)})

    def evaluate(self, msg: Message) -> RecordDict:
        """The client's own model on its local test set: recall for image-text clients, accuracy
        (`personal/acc`) for uni-modal ones."""
        model, task = self.own_model(), self.task if self.kind == IMAGE_TEXT else TASKS["classification"]
        return RecordDict({"metrics": MetricRecord(task.client_metrics(model, self.data))})
