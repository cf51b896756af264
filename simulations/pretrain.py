"""`flowerbed pretrain`: a small "foundation model" trained centrally on samples no client holds.

pFedPG assumes a frozen backbone pretrained on other data, and FRAug's natural-image results start
from an ImageNet-pretrained ResNet. Offline, the stand-in is `model.name` trained centrally (AdamW,
all classes, no domain shift) on the training samples `flowerbed.tasks.holdout.pretrain_indices` holds out;
runs with the same `partition.pretrain_fraction` exclude exactly these samples from every client.
For the tiny ViT (`tiny-vit`, `prompted-tiny-vit`) the checkpoint is its backbone, which those
models load through `model.weights`; for any other model it is the whole model, which a run
starts from with `model.init=<checkpoint>`. Either records the dataset, the fraction and the
held-out samples, and a run that would train on them is refused.

The learning rate follows a cosine from `lr` to 0 over the epochs. `augment=True` adds random
4-pixel-padded crops and horizontal flips, the usual CIFAR augmentation: a ViT trained from
scratch on 25,000 natural images overfits without it. It is off by default because flips change
what a digit means.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flowerbed.clients.augment import with_view
from flowerbed.clients.core import batch_plan, generator, sgd_train
from flowerbed.tasks.classification import cross_entropy
from flowerbed.tasks.classifier import Classifier
from flowerbed.tasks.datasets import cache_dir, load_dataset
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.holdout import fingerprint, pretrain_indices
from flowerbed.tasks.metrics import classification_metrics, predict
from flowerbed.tasks.models import build_model
from flowerbed.tasks.partitions import section
from flowerbed.tasks.vit import ViTFeatures, tiny_backbone, tiny_checkpoint

DEFAULT_FRACTION = 0.5
TINY_VITS = ("tiny-vit", "prompted-tiny-vit")  # pretrained as a backbone, loaded through model.weights


def default_path(flat: dict) -> Path:
    """Where the checkpoint goes without --out: the tiny ViT's backbone where its models look for it."""
    name = str(flat.get("model.name", "cnn"))
    if name in TINY_VITS:
        return tiny_checkpoint(flat)
    return cache_dir({}) / f"pretrained-{name}-{flat.get('dataset.name', 'digits')}.pt"


def pretrain(flat: dict, epochs: int = 40, lr: float = 1e-3, out: str | None = None, augment: bool = False,
             console: Console | None = None) -> dict:
    """Train `model.name` on the held-out share of `dataset.*`; save it (the tiny ViT: its backbone); return stats."""
    if epochs < 1:
        raise ConfigError.invalid("--epochs", epochs, "an integer >= 1")
    fraction = float(flat.get("partition.pretrain_fraction") or DEFAULT_FRACTION)
    data = load_dataset(section(flat, "dataset"))
    idx = pretrain_indices(len(data.y_train), fraction)
    x, y = torch.as_tensor(data.x_train[idx]), torch.as_tensor(data.y_train[idx])
    seed = int(flat.get("seed", 0))
    torch.manual_seed(seed)
    torch.set_num_threads(int(flat.get("train.num_threads", 1)))
    name = str(flat.get("model.name", "cnn"))
    if name in TINY_VITS:  # what is saved, under which name, and the key that loads it
        backbone = tiny_backbone(data.input_shape)
        model = Classifier(ViTFeatures(backbone), int(backbone.embed_dim), data.num_classes)
        kept, part, loaded_by = backbone, "backbone", "model.weights"
    else:
        model = build_model(name, data.input_shape, data.num_classes, seed, flat)
        kept, part, loaded_by = model, "model", "model.init"
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = with_view(cross_entropy, "crop-flip" if augment else "none", lambda: generator(seed, "pretrain-augment"))
    console = console or Console(stderr=True)
    start, loss = time.perf_counter(), float("nan")
    with Progress(TextColumn("[bold]pretrain"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                  TimeElapsedColumn(), console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task("pretrain", total=epochs, status="")
        for epoch in range(epochs):
            batches = batch_plan(len(y), 64, 1, 0, generator(seed, "pretrain", epoch))
            loss = sgd_train(model, x, y, batches, optimizer, loss_fn)
            schedule.step()
            progress.update(task, advance=1, status=f"loss {loss:.3f}")
    seconds = time.perf_counter() - start
    test = classification_metrics(predict(model, torch.as_tensor(data.x_test)), torch.as_tensor(data.y_test), data.num_classes)
    path = Path(out).expanduser() if out else default_path(flat)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": str(flat["dataset.name"]), "pretrain_fraction": fraction,
            "held_out": fingerprint(data.x_train, data.y_train, idx)}
    torch.save({part: kept.state_dict(), "meta": meta}, path)
    return {"path": str(path), "model": name, "loaded_by": loaded_by, "samples": len(y), "epochs": epochs, "train_loss": loss,
            "test_acc": test["acc"], "seconds": seconds, "augment": augment, **meta}
