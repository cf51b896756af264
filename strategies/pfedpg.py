"""pFedPG's server half (Yang et al., ICCV 2023) and the prompt baselines it is compared with.

Only visual prompts travel. The server keeps a prompt basis P_base (K x l), one descriptor per
client and a cross-attention generator G; each round it sends client n its own prompt
P_n = G(P_base, d_n), the client trains P_n and its personal head on a frozen ViT and replies
dP_n = P~_n - P_n. Since dP_n approximates -lr * dL_n/dP_n, the server backpropagates
(P_n - P~_n) through G (`autograd` with grad_outputs = -dP_n, the pFedHN rule) and takes one Adam
step (lr `algorithm.prompt_generator_lr`, 1e-3) per round: G and P_base learn from every client, d_n
only from client n. No global model exists, so the loop skips central evaluation
(`central_evaluation` hook); the metric is per-client accuracy (`personal/acc`).

Choices where the paper is silent:
- The generator uses K query tokens per client (d_n in R^{K x l}, initialised U(-1, 1)) and a
  residual to P_base: P_n = P_base + softmax((d_n W^Q)(P_base W^K)^T / sqrt(l)) (P_base W^V) W^O,
  bias-free projections with l_k = l_v = l. `algorithm.residual=false` drops the residual.
- Per-client gradients are summed into one Adam step per round (Adam is scale invariant, so the
  sum equals the mean for G and P_base, and d_n gets exactly its own client's gradient).
- Descriptors are indexed by the stable client id (0..clients.num-1), never by Flower's node id.

Baselines, same client half (clients/pfedpg.py):
- `pbase-only`: P_n = P_base for everyone, updated by the same rule (no personalisation).
- `fedvpt`: one prompt, replaced by the example-weighted mean of the adapted prompts (FedAvg on
  prompts); heads stay personal (the paper does not say whether FedVPT averages heads [NF]).
- `singleset-vpt`: nothing is sent; each client keeps training its own prompt and head.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from torch import nn

from flowerbed.strategies.flower import FedAvg
from flowerbed.strategies.sampling import no_central_evaluation
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.vit import EMBED_DIMS, init_prompt


class PromptGenerator(nn.Module):
    """P_n = G(P_base, d_n): cross-attention from client descriptors to the prompt basis."""

    def __init__(self, num_clients: int, num_prompts: int, dim: int, residual: bool = True) -> None:
        super().__init__()
        self.base = nn.Parameter(init_prompt(num_prompts, dim))
        self.descriptors = nn.Parameter(torch.rand(num_clients, num_prompts, dim) * 2 - 1)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.residual = residual

    def forward(self, client_ids: list[int]) -> torch.Tensor:
        """Prompts (len(client_ids), K, l) of these clients."""
        queries = self.q(self.descriptors[client_ids])  # (n, K, l)
        keys, values = self.k(self.base), self.v(self.base)  # (K, l)
        attention = torch.softmax(queries @ keys.T / math.sqrt(keys.shape[-1]), dim=-1)
        out = self.o(attention @ values)
        return self.base + out if self.residual else out


class PromptStrategy(FedAvg):
    """Per-client prompt messages and an update from the clients' prompt deltas."""

    has_global_model = False  # server/loop.py: no global arrays to send or checkpoint

    def central_evaluation(self, evaluate):
        """The loop's hook: there is no global model to score centrally, only per-client accuracy."""
        return lambda arrays: {}

    def central_evaluate_fn(self, evaluate_fn):
        return no_central_evaluation(type(self).__name__, "it has no global model, only per-client prompts")

    def __init__(self, num_clients: int, num_prompts: int, dim: int, seed: int, model: str = "prompted-tiny-vit",
                 **common) -> None:
        super().__init__(**common)
        self.num_clients, self.num_prompts, self.dim, self.model = num_clients, num_prompts, dim, model

    def prompts(self, client_ids: list[int]) -> torch.Tensor | None:
        """The prompts these clients receive, (n, K, l); None sends no arrays."""
        raise NotImplementedError

    def update(self, client_ids: list[int], deltas: torch.Tensor, weights: torch.Tensor) -> None:
        """Learn from the replies' P~_n - P_n (n, K, l)."""
        raise NotImplementedError

    # -- messages ------------------------------------------------------------------------------
    def _messages(self, server_round: int, node_ids: list[int], message_type: str) -> list[Message]:
        if not self.model.startswith("prompted-"):  # checked here so that every strategy builds from any config
            raise ConfigError.invalid("model.name", self.model, "prompted-tiny-vit or prompted-vit-b16 for the prompt methods")
        ids = [self.client_of_node[n] for n in node_ids]
        if any(not 0 <= c < self.num_clients for c in ids):
            raise ConfigError.invalid("clients.num", self.num_clients, f"more than the largest client id {max(ids)}")
        with torch.no_grad():
            prompts = self.prompts(ids)
        messages = []
        for i, node in enumerate(node_ids):
            content = RecordDict({"config": ConfigRecord({"server-round": server_round})})
            if prompts is not None:
                content["arrays"] = ArrayRecord({"prompt": prompts[i].contiguous()})
            messages.append(Message(content=content, dst_node_id=node, message_type=message_type))
        return messages

    def stable_ids(self, grid) -> None:
        """Per-client prompts need each node's client id (0..clients.num-1), which flowerbed's loop asks
        for; under Flower's `Strategy.start` nobody does."""
        self.known_clients(grid)
        if self.clients_from_grid:
            raise ConfigError(f"{type(self).__name__} keeps a prompt per client: set strategy.client_of_node = "
                              "{node_id: partition_id, ...} before Strategy.start, or run it with `flowerbed run`")

    def configure_train(self, server_round: int, arrays, config, grid) -> Iterable[Message]:
        self.stable_ids(grid)
        nodes = self.sample_clients(server_round, self.fraction_train, self.min_train_nodes, "train")
        return self._messages(server_round, nodes, MessageType.TRAIN)

    def configure_evaluate(self, server_round: int, arrays, config, grid) -> Iterable[Message]:
        self.stable_ids(grid)
        nodes = self.sample_clients(server_round, self.fraction_evaluate, self.min_evaluate_nodes, "evaluate")
        return self._messages(server_round, nodes, MessageType.EVALUATE)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The unweighted mean over clients, plus each client's accuracy in client-id order."""
        replies = list(replies)
        record = super().aggregate_evaluate(server_round, replies)
        by_client = sorted((self.client_of_node[m.metadata.src_node_id], float(m.content["metrics"]["personal/acc"]))
                           for m in replies if not m.has_error())
        if record is not None and by_client:
            record["personal/acc_by_client"] = [acc for _, acc in by_client]
        return record

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[None, MetricRecord]:
        kept = self.screen(replies)
        metrics = {}
        losses = [float(m.content["metrics"]["train/loss"]) for m in kept]
        if losses:
            metrics["train/loss"] = sum(losses) / len(losses)
        with_delta = [m for m in kept if "delta" in m.content.get("arrays", ArrayRecord())]
        if with_delta:
            ids = [self.client_of_node[m.metadata.src_node_id] for m in with_delta]
            deltas = torch.stack([torch.from_numpy(m.content["arrays"]["delta"].numpy()) for m in with_delta]).float()
            weights = torch.tensor([float(m.content["metrics"]["num-examples"]) for m in with_delta])
            self.update(ids, deltas, weights)
            metrics["prompt/delta_norm"] = float(deltas.flatten(1).norm(dim=1).mean())
        with torch.no_grad():
            generated = self.prompts(list(range(self.num_clients)))
        if generated is not None:
            metrics["prompt/pairwise_cos"] = mean_pairwise_cosine(generated)
        return None, MetricRecord(metrics)


def mean_pairwise_cosine(prompts: torch.Tensor) -> float:
    """Mean cosine similarity of the flattened prompts over all client pairs (1.0: identical)."""
    flat = nn.functional.normalize(prompts.flatten(1), dim=1)
    n = len(flat)
    if n < 2:
        return 1.0
    sims = flat @ flat.T
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


class PFedPG(PromptStrategy):
    """Client-specific prompts from a server-side generator trained through the clients' deltas."""

    personalized = True

    def __init__(self, num_clients: int, num_prompts: int, dim: int, seed: int, lr: float = 1e-3,
                 residual: bool = True, **common) -> None:
        super().__init__(num_clients, num_prompts, dim, seed, **common)  # model= travels in **common
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.generator = PromptGenerator(num_clients, num_prompts, dim, residual)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr)

    def prompts(self, client_ids: list[int]) -> torch.Tensor:
        if self.personalized:
            return self.generator(client_ids)
        return self.generator.base.unsqueeze(0).expand(len(client_ids), -1, -1)

    def update(self, client_ids: list[int], deltas: torch.Tensor, weights: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        generated = self.prompts(client_ids)
        generated.backward(-deltas)  # grad_outputs = P_n - P~_n: descend toward the adapted prompts
        self.optimizer.step()


class PBaseOnly(PFedPG):
    """The ablation without personalisation: everyone gets P_base, updated by the same rule."""

    personalized = False


class FedVPT(PromptStrategy):
    """FedAvg on the prompt: the example-weighted mean of the clients' adapted prompts."""

    def __init__(self, num_clients: int, num_prompts: int, dim: int, seed: int, **common) -> None:
        super().__init__(num_clients, num_prompts, dim, seed, **common)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.prompt = init_prompt(num_prompts, dim)

    def prompts(self, client_ids: list[int]) -> torch.Tensor:
        return self.prompt.unsqueeze(0).expand(len(client_ids), -1, -1)

    def update(self, client_ids: list[int], deltas: torch.Tensor, weights: torch.Tensor) -> None:
        self.prompt = self.prompt + (weights[:, None, None] * deltas).sum(0) / weights.sum()


class SingleSetVPT(PromptStrategy):
    """Local prompts only: messages carry no arrays, so nothing is communicated."""

    def prompts(self, client_ids: list[int]) -> None:
        return None

    def update(self, client_ids: list[int], deltas: torch.Tensor, weights: torch.Tensor) -> None:
        pass


def options(cfg: dict) -> dict:
    """K, l, client count and seed from the run config (the model is checked when messages are built)."""
    model = str(cfg["model.name"])
    return {"num_clients": int(cfg["clients.num"]), "num_prompts": int(cfg.get("model.prompts", 10)),
            "dim": EMBED_DIMS.get(model, 64), "seed": int(cfg["seed"]), "model": model}


def generator_options(cfg: dict) -> dict:
    return {"lr": float(cfg.get("algorithm.prompt_generator_lr", 1e-3)), "residual": bool(cfg.get("algorithm.residual", True))}
