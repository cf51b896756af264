"""Image-text retrieval as a task: a dual encoder into one embedding space, recall@K both ways.

Data (`dataset=captions`): captioned images in the layout of tasks/captions.py, split by image
(never by caption: an image's captions stay together), seeded: `dataset.test_fraction` of the
images is the held-out test set. A row is an image `x` (C, H, W), standardized with the training
images' channel statistics, and its captions `y` (`dataset.captions_per_image`, `dataset.max_words`)
as word ids; an image with fewer captions has all-zero rows (no caption), one with more keeps its
first ones. The word vocabulary is built from the training captions alone (tasks/text.py), and
`num_classes` carries its size, what the text encoder embeds. Clients hold the training images
at random (`partition=iid`: there are no classes to skew) and an equal share of the test images:
the image-text clients, `clients.num` less CreamFL's image-only and text-only clients
(tasks/client_types.py), which come after them and hold no pairs. `partition.samples_per_client`
> 0 keeps that many of each client's images (drawn at random; the rest go unused); the partition's
other keys (labeled_fraction, ...) do not apply.
`partition.public_images` of the training images go to no client: a server's public pairs (CreamFL).

Model: the image encoder is `model.name`'s feature extractor from tasks/models.py, the text
encoder `model.text` (gru | transformer, tasks/text.py), each followed by a linear map into a
`model.embed_dim`-dimensional space and L2-normalized.

Loss: symmetric InfoNCE at temperature `TEMPERATURE` over the batch (CLIP's, Radford et al.
2021): image -> text with every caption of the image as a positive, text -> image with the
caption's own image. [choice: CreamFL's code trains PCME; a contrastive loss is what its
inter-modal term uses, and needs no sampling.]

Metrics: recall@1/5/10 image -> text (an image is found if any of its captions is among the K
nearest), text -> image (the caption's image among the K nearest), in percent, and their sum
`rsum` (at most 600), as `<prefix>/r1_i2t` ... `<prefix>/r10_t2i`, `<prefix>/rsum`. Ties in
similarity count against the true match (the rank is the number of candidates at least as close).
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch
from torch import nn

from flowerbed.tasks import captions
from flowerbed.tasks.config_key import data_key
from flowerbed.tasks.datasets import ArrayDataset, cache_dir, channel_stats, scale
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.imagefolder import image_shape
from flowerbed.tasks.models import build_model, set_training
from flowerbed.tasks.partitions import ClientData, Federation, section
from flowerbed.tasks.task import DataShape, Task
from flowerbed.tasks.text import PAD, encode, text_encoder, vocabulary

TEMPERATURE = 0.1
RECALLS = (1, 5, 10)


# -- data ------------------------------------------------------------------------------------------
def load_captioned(cfg: dict) -> tuple[ArrayDataset, dict[str, int]]:
    """The captioned images of `dataset.path`, split by image (seeded by `seed`), as arrays, and the
    word vocabulary of the training captions."""
    d, data = section(cfg, "dataset"), read_captioned(cfg)
    test, train = split(cfg, len(data.names))
    vocab = vocabulary((c for i in train for c in data.captions[i]), int(d.get("vocab_size", 5000)))
    per_image, max_words = int(d.get("captions_per_image", 5)), int(d.get("max_words", 16))

    def ids(rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), per_image, max_words), np.int64)
        for k, i in enumerate(rows):
            kept = data.captions[i][:per_image]
            out[k, : len(kept)] = encode(kept, vocab, max_words)
        return out

    mean, std = channel_stats(data.images[train])
    x_train, x_test = scale(data.images[train], mean, std), scale(data.images[test], mean, std)
    return ArrayDataset(x_train, ids(train), x_test, ids(test), len(vocab) + 2), vocab


def read_captioned(cfg: dict) -> captions.CaptionedImages:
    """`dataset.path`'s images at `dataset.image_shape` and their captions, decoded once (cached)."""
    d = section(cfg, "dataset")
    if not str(d.get("path", "")).strip():
        raise ConfigError.invalid("dataset.path", d.get("path", ""), f"a folder or .tar/.tar.gz: {captions.LAYOUT}")
    shape = image_shape(str(d.get("image_shape") or "3x32x32"), "dataset.image_shape")
    return captions.load_cached(str(d["path"]), shape, cache_dir(d), "dataset.path")


def split(cfg: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The test and training rows of `n` captioned images (`dataset.test_fraction`, seeded by `seed`)."""
    test_fraction = float(section(cfg, "dataset").get("test_fraction", 0.2))
    n_test = int(round(test_fraction * n))
    if not 0 < n_test < n:
        allowed = f"a share that leaves images in both splits ({n} images)"
        raise ConfigError.invalid("dataset.test_fraction", test_fraction, allowed)
    order = np.random.default_rng([int(cfg["seed"]), 7]).permutation(n)
    return np.sort(order[:n_test]), np.sort(order[n_test:])


def test_captions(cfg: dict) -> list[tuple[str, ...]]:
    """The test images' captions as written (those the metrics count, in the test set's order): for
    showing what a model retrieves."""
    data, per_image = read_captioned(cfg), int(section(cfg, "dataset").get("captions_per_image", 5))
    return [data.captions[i][:per_image] for i in split(cfg, len(data.names))[0]]


def federation(cfg: dict) -> Federation:
    return _federation(data_key(cfg))[0]


def public_rows(cfg: dict) -> np.ndarray:
    """The training images no client holds (`partition.public_images`): a server's public pairs (CreamFL)."""
    return _federation(data_key(cfg))[1]


def caption_vocabulary(cfg: dict) -> dict[str, int]:
    """word -> id of the training captions: what every text encoder of the run reads (CreamFL's text clients too)."""
    return _federation(data_key(cfg))[2]


def image_text_clients(cfg: dict) -> int:
    """How many clients hold image-text pairs: `clients.num` less CreamFL's uni-modal clients
    (`partition.image_clients`, `partition.text_clients`; tasks/client_types.py)."""
    return int(cfg["clients.num"]) - int(cfg.get("partition.image_clients", 0)) - int(cfg.get("partition.text_clients", 0))


@functools.lru_cache(maxsize=4)
def _federation(keys: tuple) -> tuple[Federation, np.ndarray, dict[str, int]]:
    cfg = dict(keys)
    if cfg.get("dataset.name") != "captions":
        raise ConfigError.invalid("dataset.name", cfg.get("dataset.name"), "captions for task.name=retrieval")
    if cfg.get("partition.name") != "iid":
        allowed = "iid for task.name=retrieval (images have no classes to skew)"
        raise ConfigError.invalid("partition.name", cfg.get("partition.name"), allowed)
    data, vocab = load_captioned(cfg)
    num_clients, seed, public = image_text_clients(cfg), int(cfg["seed"]), int(cfg.get("partition.public_images", 0))
    if num_clients < 0:
        allowed = f"at least partition.image_clients + partition.text_clients ({int(cfg['clients.num']) - num_clients})"
        raise ConfigError.invalid("clients.num", cfg["clients.num"], allowed)
    if not 0 <= public < len(data.x_train):
        raise ConfigError.invalid("partition.public_images", public, f"fewer than the {len(data.x_train)} training images")
    if num_clients > len(data.x_train) - public:
        allowed = f"at most the {len(data.x_train) - public} training images the clients hold"
        raise ConfigError.invalid("clients.num", num_clients, allowed)
    order = np.random.default_rng([seed, 8]).permutation(len(data.x_train))
    train = np.array_split(order[public:], num_clients) if num_clients else []
    test = np.array_split(np.random.default_rng([seed, 9]).permutation(len(data.x_test)), num_clients) if num_clients else []
    cap = int(cfg.get("partition.samples_per_client", 0)) or None  # > 0: a client keeps its first `cap` images (a CPU-sized run)
    clients = [ClientData(np.sort(tr[:cap]), np.array([], np.int64), np.sort(te)) for tr, te in zip(train, test)]
    none = np.array([], np.int64)  # CreamFL's uni-modal clients hold no pairs: their data is tasks/client_types.py's
    clients += [ClientData(none, none, none)] * (int(cfg["clients.num"]) - num_clients)
    return Federation(data, clients, np.zeros(0, np.int64), {}), np.sort(order[:public]), vocab


# -- model -----------------------------------------------------------------------------------------
class DualEncoder(nn.Module):
    """Image and text encoders into one L2-normalized space; `forward(images, captions)` gives both."""

    def __init__(self, image: nn.Module, image_dim: int, text: nn.Module, text_dim: int, dim: int) -> None:
        super().__init__()
        self.image_encoder, self.image_projection = image, nn.Linear(image_dim, dim)
        self.text_encoder, self.text_projection = text, nn.Linear(text_dim, dim)

    def image(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.image_projection(self.image_encoder(x)), dim=-1)

    def text(self, ids: torch.Tensor) -> torch.Tensor:
        """(..., max_words) ids -> (..., dim) embeddings."""
        flat = ids.reshape(-1, ids.shape[-1])
        out = nn.functional.normalize(self.text_projection(self.text_encoder(flat)), dim=-1)
        return out.reshape(*ids.shape[:-1], -1)

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(images), self.text(texts)


def dual_encoder(cfg: dict, input_shape: tuple[int, ...], vocab_size: int) -> DualEncoder:
    """`model.name`'s features, `model.text`, `model.embed_dim`; the weights a function of the seed."""
    seed, dim = int(cfg["seed"]), int(cfg.get("model.embed_dim", 64))
    classifier = build_model(str(cfg["model.name"]), tuple(input_shape), 2, seed, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        width = int(cfg.get("model.text_dim", 64))
        text = text_encoder(str(cfg.get("model.text", "gru")), vocab_size, width, int(cfg.get("dataset.max_words", 16)))
        return DualEncoder(classifier.features, classifier.classifier.in_features, text, width, dim)


# -- loss and metrics ------------------------------------------------------------------------------
def contrastive_loss(image: torch.Tensor, text: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of (B, d) images and (B, K, d) captions, `valid` (B, K) marking real ones.

    Absent captions are masked, not dropped, so that shapes do not depend on the data (the batched
    engine vmaps this loss over clients)."""
    b, k = valid.shape
    keep = valid.reshape(-1)
    owner = torch.arange(b, device=image.device).repeat_interleave(k)
    logits = image @ text.reshape(b * k, -1).T / TEMPERATURE  # (B, B*K)
    candidates = logits.masked_fill(~keep[None, :], float("-inf"))
    positive = (owner[None, :] == torch.arange(b, device=image.device)[:, None]) & keep[None, :]
    i2t = torch.logsumexp(candidates, 1) - torch.logsumexp(candidates.masked_fill(~positive, float("-inf")), 1)
    t2i = nn.functional.cross_entropy(logits.T, owner, reduction="none")
    return (i2t.mean() + (t2i * keep).sum() / keep.sum()) / 2


def recall_metrics(image: torch.Tensor, text: torch.Tensor, owner: torch.Tensor, prefix: str) -> dict:
    """Recall@1/5/10 both ways and rsum (percent) of N image and M caption embeddings; `owner[m]` is
    caption m's image. The rank of a match is the number of candidates at least as similar, less one."""
    if len(image) == 0 or len(text) == 0:
        return {}
    sim = image @ text.T  # (N, M)
    own = owner[None, :] == torch.arange(len(image), device=sim.device)[:, None]
    best_own = sim.masked_fill(~own, float("-inf")).max(1).values
    i2t_rank = (sim >= best_own[:, None]).sum(1) - 1
    caption_own = sim.T[torch.arange(len(owner), device=sim.device), owner]
    t2i_rank = (sim.T >= caption_own[:, None]).sum(1) - 1
    metrics = {}
    for k in RECALLS:
        metrics[f"{prefix}/r{k}_i2t"] = 100.0 * float((i2t_rank < k).double().mean())
    for k in RECALLS:
        metrics[f"{prefix}/r{k}_t2i"] = 100.0 * float((t2i_rank < k).double().mean())
    metrics[f"{prefix}/rsum"] = sum(metrics.values())
    return metrics


@torch.no_grad()
def embed(model: DualEncoder, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, ...]:
    """Image embeddings (N, d), the real captions' embeddings (M, d) and each caption's image (M)."""
    was_training = model.training
    set_training(model, False)
    images = torch.cat([model.image(x[i: i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else x.new_zeros(0, 1)
    valid = y[..., 0] != PAD
    owner = torch.arange(len(y), device=y.device).repeat_interleave(y.shape[1])[valid.reshape(-1)]
    ids = y[valid]
    texts = torch.cat([model.text(ids[i: i + batch_size]) for i in range(0, len(ids), batch_size)]) if len(ids) else images[:0]
    set_training(model, was_training)
    return images, texts, owner


class RetrievalTask(Task):
    name = "retrieval"
    metric = "rsum"

    def federation(self, cfg: dict) -> Federation:
        return federation(cfg)

    def build_model(self, cfg: dict, data: DataShape) -> nn.Module:
        return dual_encoder(cfg, tuple(data.input_shape), int(data.num_classes))

    def loss(self, model: Callable, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        image, text = model(x, y)
        return contrastive_loss(image, text, y[..., 0] != PAD)

    def central_metrics(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, federation: Federation,
                        prefix: str = "global", **options) -> dict:
        return recall_metrics(*embed(model, x, y), prefix)

    def client_metrics(self, model: nn.Module, data, prefix: str = "personal") -> dict:
        return {**recall_metrics(*embed(model, data.x_test, data.y_test), prefix), "num-examples": len(data.y_test)}


def public_pairs(cfg: dict, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The public pairs (`partition.public_images`): images (P, C, H, W) and each one's first caption (P, L)."""
    rows, data = public_rows(cfg), federation(cfg).data
    return torch.as_tensor(data.x_train[rows]).to(device), torch.as_tensor(data.y_train[rows, 0]).to(device)


MODALITIES = {"img": "txt", "txt": "img"}  # a representation's modality -> the other one


def represent(model: nn.Module, images: torch.Tensor, ids: torch.Tensor, keys=tuple(MODALITIES)) -> dict[str, torch.Tensor]:
    """A model's representations (B, d) of B public pairs, for each modality of `keys` it encodes:
    `img` where it has `image(x)`, `txt` where it has `text(ids)` (a dual encoder both, a uni-modal
    client one)."""
    out = {}
    if "img" in keys and hasattr(model, "image"):
        out["img"] = model.image(images)
    if "txt" in keys and hasattr(model, "text"):
        out["txt"] = model.text(ids)
    return out


@torch.no_grad()
def embed_pairs(model: nn.Module, x: torch.Tensor, ids: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """`represent` of P pairs (P, d) per modality, in evaluation mode."""
    was_training = model.training
    set_training(model, False)
    parts = [represent(model, x[i: i + batch_size], ids[i: i + batch_size]) for i in range(0, len(x), batch_size)]
    set_training(model, was_training)
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
