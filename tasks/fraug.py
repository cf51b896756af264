"""FRAug's shared embedding generator, built the same way by the server (its initial weights)
and by every client (to load the weights it receives).

G(z, y): uniform noise z (latent_dim) and a one-hot label in, an embedding of the model's feature
size out: two linear layers, each followed by BatchNorm and ReLU (the authors' code), so that the
embeddings are non-negative like the ReLU features they stand in for. In a reply or a checkpoint
its arrays sit next to the model's under the prefix `generator.`.
"""

from __future__ import annotations

import torch
from torch import nn

PREFIX = "generator."


class EmbeddingGenerator(nn.Module):
    def __init__(self, feature_dim: int, num_classes: int, latent_dim: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim or max(1, feature_dim // 2), num_classes
        self.net = nn.Sequential(
            nn.Linear(self.latent_dim + num_classes, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(),
            nn.Linear(feature_dim, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, nn.functional.one_hot(y, self.num_classes).to(z.dtype)], dim=1))

    def sample(self, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Embeddings for labels `y`, noise drawn from `gen` (on the CPU, so every device draws alike)."""
        z = torch.rand(len(y), self.latent_dim, generator=gen).to(y.device)
        return self(z, y)


def build_generator(feature_dim: int, num_classes: int, seed: int, latent_dim: int = 0) -> EmbeddingGenerator:
    """The generator's initial weights: a function of the seed alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EmbeddingGenerator(feature_dim, num_classes, latent_dim)


def with_prefix(state: dict) -> dict:
    return {PREFIX + k: v for k, v in state.items()}


def without_prefix(state: dict) -> dict:
    return {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
