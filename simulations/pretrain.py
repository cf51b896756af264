"""`flowerbed pretrain`: a small "foundation model" for the offline pFedPG setting.

pFedPG assumes a frozen backbone pretrained on other data. Offline, the stand-in is a tiny ViT
trained centrally (AdamW, all classes, no domain shift) on the training samples
`tasks.holdout.pretrain_indices` holds out; runs with the same `partition.pretrain_fraction`
exclude exactly these samples from every client. The checkpoint records the dataset and fraction,
and loading it into a run with another fraction is refused.
"""

from __future__ import annotations

from pathlib import Path

import torch

from clients.core import batch_plan, generator, sgd_train
from tasks.datasets import load_dataset
from tasks.errors import ConfigError
from tasks.holdout import fingerprint, pretrain_indices
from tasks.metrics import classification_metrics, predict
from tasks.classifier import Classifier
from tasks.partitions import section
from tasks.vit import ViTFeatures, tiny_backbone, tiny_checkpoint

DEFAULT_FRACTION = 0.5


def pretrain(flat: dict, epochs: int = 40, lr: float = 1e-3, out: str | None = None) -> dict:
    """Train the tiny ViT on the held-out share of `dataset.*`; save its backbone; return stats."""
    if epochs < 1:
        raise ConfigError.invalid("--epochs", epochs, "an integer >= 1")
    fraction = float(flat.get("partition.pretrain_fraction") or DEFAULT_FRACTION)
    data = load_dataset(section(flat, "dataset"))
    idx = pretrain_indices(len(data.y_train), fraction)
    x, y = torch.as_tensor(data.x_train[idx]), torch.as_tensor(data.y_train[idx])
    torch.manual_seed(int(flat.get("seed", 0)))
    torch.set_num_threads(int(flat.get("train.num_threads", 1)))
    backbone = tiny_backbone(data.input_shape)
    model = Classifier(ViTFeatures(backbone), int(backbone.embed_dim), data.num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    batches = batch_plan(len(y), 64, epochs, 0, generator(int(flat.get("seed", 0)), "pretrain"))
    loss = sgd_train(model, x, y, batches, optimizer)
    test = classification_metrics(predict(model, torch.as_tensor(data.x_test)), torch.as_tensor(data.y_test), data.num_classes)
    path = Path(out).expanduser() if out else tiny_checkpoint(flat)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": str(flat["dataset.name"]), "pretrain_fraction": fraction,
            "held_out": fingerprint(data.x_train, data.y_train, idx)}
    torch.save({"backbone": backbone.state_dict(), "meta": meta}, path)
    return {"path": str(path), "samples": len(y), "epochs": epochs, "train_loss": loss, "test_acc": test["acc"], **meta}
