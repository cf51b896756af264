"""FRAug's server half (Chen et al., ICCV 2023): FedBN's averaging, plus the shared generator.

The global arrays hold the model and, under `generator.`, the embedding generator G
(tasks/fraug.py), which the server creates from the seed before the first round. Train messages
carry the model without BatchNorm and G; replies carry both back, and Flower's weighted average
(by num-examples, as the authors' server weights clients by their sample counts) averages the
model and G alike, G's BatchNorm included. Evaluation messages carry the model only: a client's
personalized model needs no generator. Each client's RTNet never leaves it.
"""

from __future__ import annotations

from flwr.app import ArrayRecord

from flowerbed.strategies.fedbn import FedBN
from flowerbed.tasks.fraug import PREFIX, build_generator, with_prefix
from flowerbed.tasks.models import batchnorm_keys


class FRAug(FedBN):
    def __init__(self, seed: int, latent_dim: int = 0, **common) -> None:
        super().__init__(**common)
        self.generator_seed, self.latent_dim = seed, latent_dim

    def with_generator(self, arrays: ArrayRecord) -> ArrayRecord:
        """The arrays with G added (from the seed) if they have none yet: the first round."""
        if any(k.startswith(PREFIX) for k in arrays.keys()):
            return arrays
        num_classes, feature_dim = arrays["classifier.weight"].shape
        generator = build_generator(feature_dim, num_classes, self.generator_seed, self.latent_dim)
        return ArrayRecord({**dict(arrays.items()), **ArrayRecord(with_prefix(generator.state_dict()))})

    def local_keys(self, arrays: ArrayRecord) -> set[str]:
        """The model's BatchNorm layers; G's travel (it is averaged whole)."""
        return set(batchnorm_keys([k for k in arrays.keys() if not k.startswith(PREFIX)]))

    def configure_train(self, server_round, arrays, config, grid):
        return super().configure_train(server_round, self.with_generator(arrays), config, grid)

    def evaluated(self, arrays: ArrayRecord) -> ArrayRecord:
        return ArrayRecord({k: v for k, v in self.shared(arrays).items() if not k.startswith(PREFIX)})


def options(cfg: dict) -> dict:
    return {"seed": int(cfg["seed"]), "latent_dim": int(cfg.get("algorithm.latent_dim", 0))}
