"""The models of CreamFL's uni-modal clients: an encoder, a projection into the joint space, a classifier.

An image-only client's model is `algorithm.image_model`'s feature extractor (tasks/models.py), a
text-only client's `algorithm.text_model` (gru | transformer over the caption vocabulary,
tasks/text.py, `model.text_dim` wide). Each maps into the `model.embed_dim`-dimensional space of the
public representations, L2-normalized as the dual encoder's (`image(x)` or `text(ids)`: what the
client sends), and a linear classifier on the projection before the normalization gives the local
task's logits (`forward`), so the local task shapes the space the representations live in [choice:
the code's margin softmax on scaled normalized features is a plain cross-entropy here].
"""

from __future__ import annotations

import torch
from torch import nn

from flowerbed.tasks.models import build_model
from flowerbed.tasks.text import text_encoder


class ProjectedClassifier(nn.Module):
    """An encoder, a projection into the joint space, a classifier on the projection."""

    def __init__(self, encoder: nn.Module, width: int, dim: int, num_classes: int) -> None:
        super().__init__()
        self.encoder, self.projection = encoder, nn.Linear(width, dim)
        self.classifier = nn.Linear(dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.projection(self.encoder(x)), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.projection(self.encoder(x)))


class ImageClassifier(ProjectedClassifier):
    def image(self, x: torch.Tensor) -> torch.Tensor:
        """Its representation of images (what an image-only client sends)."""
        return self.embed(x)


class TextClassifier(ProjectedClassifier):
    def text(self, ids: torch.Tensor) -> torch.Tensor:
        """Its representation of word ids (what a text-only client sends)."""
        return self.embed(ids)


def image_classifier(cfg: dict, input_shape: tuple[int, ...], num_classes: int) -> ImageClassifier:
    """`algorithm.image_model`'s features + projection + classifier; the weights a function of the seed."""
    seed = int(cfg["seed"])
    features = build_model(str(cfg["algorithm.image_model"]), tuple(input_shape), 2, seed, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        return ImageClassifier(features.features, features.classifier.in_features, int(cfg.get("model.embed_dim", 64)), num_classes)


def text_classifier(cfg: dict, vocab_size: int, num_classes: int) -> TextClassifier:
    """`algorithm.text_model` over the caption vocabulary + projection + classifier; seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg["seed"]) + 3)
        width = int(cfg.get("model.text_dim", 64))
        encoder = text_encoder(str(cfg["algorithm.text_model"]), vocab_size, width, int(cfg.get("dataset.max_words", 16)))
        return TextClassifier(encoder, width, int(cfg.get("model.embed_dim", 64)), num_classes)
