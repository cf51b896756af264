"""Object detection as a task: images and padded boxes in, torchvision's detection losses, mAP out.

A batch is `(x, y)`: `x` uint8 images (n, 3, S, S) and `y` their boxes (n, M, 5), one row
`[label, x1, y1, x2, y2]` per box in pixels, rows padded with label -1 (tasks/voc.py). `targets`
turns `y` into torchvision's list of dicts (labels + 1: tasks/detectors.py) and `detect` turns a
model's output back into boxes with the dataset's labels, so the rest of the project indexes,
batches and sends detection data exactly as it does classification data.

Data: `dataset.name=voc` (`dataset.path`, a VOC folder or archive; DAWN's fog set is one) or
`dataset.name=weather-shapes` (generated, tasks/weather_shapes.py). Every domain is split into
train and test (`dataset.test_fraction`, seeded); the server holds the training images of one
labeled domain (`partition.server_domain`, default the first), and client k the k-th share of the
unlabeled domain `k mod D` (D the other domains in the data's order: sorted names for VOC,
`partition.domains` for the generated set; a domain's images are split evenly over its clients). The global test set is every domain's test split; a client's local test set is
its domain's.

Metrics: COCO-style mAP from torchmetrics' `MeanAveragePrecision` (pycocotools backend):
`<prefix>/map50` (IoU 0.5), `<prefix>/map` (IoU 0.5:0.95), `<prefix>/map50_per_class` (a list in
class order), and per domain `<prefix>/map50/<domain>` and `<prefix>/map/<domain>`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from flowerbed.tasks.datasets import ArrayDataset
from flowerbed.tasks.detectors import build_detector, is_detector, load_backbone
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.partitions import ClientData, Federation
from flowerbed.tasks.task import DataShape, Task
from flowerbed.tasks.voc import PAD, DetectionArrays, load_voc
from flowerbed.tasks import weather_shapes

DATASETS = ("voc", "weather-shapes")
EVAL_BATCH = 16
MIN_BATCH = 2  # BatchNorm in training mode needs two values a channel: SSDlite's last maps are 1x1 at small sizes


# -- batches -------------------------------------------------------------------------------------
def images(x: torch.Tensor) -> list[torch.Tensor]:
    """uint8 (n, 3, S, S) -> the detectors' input: a list of float images in [0, 1]."""
    return list(x.float().div(255.0)) if x.dtype == torch.uint8 else list(x)


def targets(y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Padded rows (n, M, 5) -> torchvision targets, one dict of `boxes` and `labels` (+1) per image."""
    out = []
    for rows in y:
        real = rows[rows[:, 0] != PAD]
        out.append({"boxes": real[:, 1:5].float(), "labels": real[:, 0].long() + 1})
    return out


def collate(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """A detection batch from (image, rows) pairs with any number of rows each: images stacked,
    rows padded to the batch's largest count."""
    width = max([int((rows[:, 0] != PAD).sum()) for _, rows in samples] + [1])
    y = torch.full((len(samples), width, 5), PAD)
    y[:, :, 1:] = 0
    for i, (_, rows) in enumerate(samples):
        real = rows[rows[:, 0] != PAD]
        y[i, : len(real)] = real
    return torch.stack([x for x, _ in samples]), y


def rows_of(detections: list[dict[str, torch.Tensor]], min_score: float = 0.0) -> torch.Tensor:
    """`detect`'s output (dataset labels) -> padded rows (n, M, 5): boxes scoring >= min_score and at
    least a pixel wide and high (a box clipped to the image's edge may have none, and a detector's
    training loss refuses it)."""
    samples = []
    for d in detections:
        b = d["boxes"]
        keep = (d["scores"] >= min_score) & (b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)
        samples.append((torch.empty(0), torch.cat([d["labels"][keep, None].float(), d["boxes"][keep]], dim=1)))
    return collate(samples)[1] if samples else torch.full((0, 1, 5), PAD)


def detection_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The detector's own training loss (the sum of its terms) on the batch."""
    return sum(model(images(x), targets(y)).values())


@torch.no_grad()
def detect(model: nn.Module, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> list[dict[str, torch.Tensor]]:
    """Boxes, scores and dataset labels for each image, in evaluation mode (the mode is restored)."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        for d in model(images(x[i : i + batch_size])):
            out.append({"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - 1})
    model.train(was_training)
    return out


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batches: list[torch.Tensor], optimizer,
                loss_fn, after_step=None) -> tuple[float, int]:
    """One optimizer step per batch of at least `MIN_BATCH` images whose loss is not None (a pseudo-
    labelled batch with nothing confident); (mean loss, steps taken)."""
    model.train()
    total, steps = 0.0, 0
    for idx in batches:
        if len(idx) < MIN_BATCH:
            continue
        idx = idx.to(x.device)
        loss = loss_fn(model, x[idx], y[idx])
        if loss is None:
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, steps = total + float(loss.detach()), steps + 1
        if after_step is not None:
            after_step()
    return total / max(steps, 1), steps


def supervised_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, cfg: dict, seed: tuple[int, ...],
                     loss_fn=detection_loss) -> float:
    """`steps` SGD steps (`train.lr`, `train.momentum`, `train.weight_decay`) of `loss_fn` on
    labeled images: each a batch of `train.batch_size` drawn without replacement by a generator
    seeded with `seed` (a server's own supervised step: FedSTO's warm-up and server step)."""
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence(list(seed)).generate_state(1)[0]))
    size = min(int(cfg["train.batch_size"]), len(x))
    batches = [torch.randperm(len(x), generator=gen)[:size] for _ in range(steps if len(x) else 0)]
    optimizer = torch.optim.SGD(model.parameters(), lr=float(cfg["train.lr"]), momentum=float(cfg["train.momentum"]),
                                weight_decay=float(cfg["train.weight_decay"]))
    return train_steps(model, x, y, batches, optimizer, loss_fn)[0]


# -- metrics -------------------------------------------------------------------------------------
def _map(detections: list[dict], truth: list[dict], iou: list[float] | None, per_class: bool) -> dict:
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=iou, class_metrics=per_class,
                                  backend="pycocotools")
    metric.warn_on_many_detections = False  # SSD keeps up to 300 boxes an image; COCO scores the top 100, as usual
    metric.update([{k: v.cpu() for k, v in d.items()} for d in detections], [{k: v.cpu() for k, v in t.items()} for t in truth])
    return metric.compute()


def mean_average_precision(detections: list[dict], y: torch.Tensor, num_classes: int, domains: np.ndarray | None = None,
                           domain_names: tuple[str, ...] = (), prefix: str = "global") -> dict:
    """mAP@0.5, mAP@0.5:0.95 and mAP@0.5 per class (classes absent from the truth count -1 as
    torchmetrics reports them, replaced by 0 here), overall and per domain."""
    truth = [{"boxes": t["boxes"], "labels": t["labels"] - 1} for t in targets(y)]
    if not truth:
        return {}
    at50 = _map(detections, truth, [0.5], True)
    metrics = {f"{prefix}/map50": float(at50["map"]), f"{prefix}/map": float(_map(detections, truth, None, False)["map"])}
    scores = dict(zip(at50["classes"].reshape(-1).tolist(), at50["map_per_class"].reshape(-1).tolist()))
    metrics[f"{prefix}/map50_per_class"] = [max(0.0, float(scores.get(c, 0.0))) for c in range(num_classes)]
    if domains is not None and len(domain_names) > 1:
        for k, name in enumerate(domain_names):
            idx = np.flatnonzero(domains == k)
            if len(idx):
                part_d, part_t = [detections[i] for i in idx], [truth[i] for i in idx]
                metrics[f"{prefix}/map50/{name}"] = float(_map(part_d, part_t, [0.5], False)["map"])
                metrics[f"{prefix}/map/{name}"] = float(_map(part_d, part_t, None, False)["map"])
    return {k: (max(0.0, v) if isinstance(v, float) else v) for k, v in metrics.items()}


# -- data ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectionFederation(Federation):
    """A Federation whose server also holds labeled training images (`server`, indices into
    `data.x_train`); every client's training images are unlabeled."""

    server: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def load_arrays(cfg: dict) -> DetectionArrays:
    name = str(cfg["dataset.name"])
    size = int(cfg.get("dataset.image_size", 64))
    if name == "voc":
        if not str(cfg.get("dataset.path", "")):
            raise ConfigError.invalid("dataset.path", "", "a VOC folder or .tar/.tar.gz (images/*.jpg + annotations/*.xml)")
        return load_voc(str(cfg["dataset.path"]), size, str(cfg.get("dataset.classes", "")))
    if name == "weather-shapes":
        from flowerbed.tasks.domains import parse, unknown

        names = parse(str(cfg.get("partition.domains", ""))) if cfg.get("partition.domains") else weather_shapes.DEFAULT_DOMAINS
        if unknown(names):
            raise ConfigError.invalid("partition.domains", cfg.get("partition.domains"), "names from tasks/domains.py joined by +")
        return weather_shapes.generate(int(cfg.get("dataset.images_per_domain", 100)), size, names, int(cfg.get("dataset.seed", 0)))
    raise ConfigError.invalid("dataset.name", name, "a detection dataset for task.name=detection: " + ", ".join(DATASETS), DATASETS)


def split_by_domain(arrays: DetectionArrays, cfg: dict) -> DetectionFederation:
    """Train/test per domain, the server's labeled domain, clients' unlabeled shares (module doc)."""
    seed = int(cfg["seed"])
    fraction = float(cfg.get("dataset.test_fraction", 0.2))
    server_domain = str(cfg.get("partition.server_domain", "") or arrays.domain_names[0])
    if server_domain not in arrays.domain_names:
        raise ConfigError.invalid("partition.server_domain", server_domain, "one of the data's domains: " + ", ".join(arrays.domain_names),
                                  arrays.domain_names)
    if len(arrays.domain_names) < 2:
        raise ConfigError.invalid("dataset.path", cfg.get("dataset.path"), "detection data with at least two domains (name prefixes or subfolders)")
    train, test = [], []
    for k in range(len(arrays.domain_names)):
        idx = np.random.default_rng([seed, 7, k]).permutation(np.flatnonzero(arrays.domains == k))
        cut = int(round(len(idx) * fraction))
        test.append(np.sort(idx[:cut]))
        train.append(np.sort(idx[cut:]))
    train_idx, test_idx = np.concatenate(train), np.concatenate(test)
    data = ArrayDataset(
        x_train=arrays.images[train_idx], y_train=arrays.targets[train_idx], x_test=arrays.images[test_idx],
        y_test=arrays.targets[test_idx], num_classes=len(arrays.class_names), groups=arrays.domains[train_idx],
        class_names=arrays.class_names, test_groups=arrays.domains[test_idx], group_names=arrays.domain_names,
    )
    server_k = arrays.domain_names.index(server_domain)
    client_domains = [k for k in range(len(arrays.domain_names)) if k != server_k]
    num_clients = int(cfg["clients.num"])
    empty = np.zeros(0, dtype=np.int64)
    clients = []
    for c in range(num_clients):
        k = client_domains[c % len(client_domains)]
        sharing = [j for j in range(num_clients) if client_domains[j % len(client_domains)] == k]
        share = np.array_split(np.flatnonzero(data.groups == k), len(sharing))[sharing.index(c)]
        clients.append(ClientData(labeled=empty, unlabeled=share, test=np.flatnonzero(data.test_groups == k)))
    counts = class_counts(data.y_train, data.num_classes)
    return DetectionFederation(data, clients, counts, {}, server=np.flatnonzero(data.groups == server_k))


def class_counts(y: np.ndarray, num_classes: int) -> np.ndarray:
    labels = y[:, :, 0].reshape(-1)
    return np.bincount(labels[labels != PAD].astype(np.int64), minlength=num_classes)


def build_federation(cfg: dict) -> DetectionFederation:
    """The run's detection federation, built once per process and data settings (the server loop,
    its evaluator, the strategy's server step and every in-process client share it)."""
    keys = tuple(sorted((k, v) for k, v in cfg.items() if k.startswith(("dataset.", "partition.")) or k in ("seed", "clients.num")))
    return _federation(keys)


@functools.lru_cache(maxsize=2)
def _federation(keys: tuple) -> DetectionFederation:
    cfg = dict(keys)
    return split_by_domain(load_arrays(cfg), cfg)


def check_detection_model(cfg: dict) -> None:
    """A detector for detection data, and no detector for a classification dataset."""
    model, dataset = str(cfg["model.name"]), str(cfg["dataset.name"])
    if is_detector(model) and dataset not in DATASETS:
        raise ConfigError.invalid("model.name", model, f"a classifier for dataset.name={dataset} (a detector needs "
                                  f"task.name=detection and dataset.name in {', '.join(DATASETS)})")


def build_model(cfg: dict, num_classes: int) -> nn.Module:
    """The seeded detector; its backbone from `model.weights` where one is given (fcos-lite0)."""
    name = str(cfg["model.name"])
    model = build_detector(name, num_classes, int(cfg.get("dataset.image_size", 64)), int(cfg["seed"]))
    if str(cfg.get("model.weights") or ""):
        load_backbone(model, name, str(cfg["model.weights"]))
    return model


# -- the task ------------------------------------------------------------------------------------
class DetectionTask(Task):
    """Detection on the task seam: data by domain, torchvision detectors, their loss, mAP@0.5 the headline."""

    name = "detection"
    metric = "map50"

    def federation(self, cfg: dict) -> DetectionFederation:
        return build_federation(cfg)

    def build_model(self, cfg: dict, data: DataShape) -> nn.Module:
        return build_model(cfg, int(data.num_classes))

    def stacked_loss(self, model, p, b, x, y, e) -> torch.Tensor:
        raise ConfigError.invalid("engine.name", "batched", "sequential or flower for task.name=detection "
                                  "(a detector's loss matches boxes image by image; it does not vmap)")

    def loss(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return detection_loss(model, x, y)

    def central_metrics(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, federation: Federation,
                        prefix: str = "global", **options) -> dict:
        d = federation.data
        return mean_average_precision(detect(model, x), y, d.num_classes, d.test_groups, d.group_names, prefix)

    def client_metrics(self, model: nn.Module, data, prefix: str = "personal") -> dict:
        found = detect(model, data.x_test)
        return {**mean_average_precision(found, data.y_test, data.num_classes, prefix=prefix), "num-examples": len(data.y_test)}
