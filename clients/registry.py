"""Every client half, by name: the one place that lists them (the server side mirrors it)."""

from __future__ import annotations

from flowerbed.clients.base import ClientAlgorithm
from flowerbed.clients.fedavg import FedAvgClient
from flowerbed.clients.fedbabu import FedBABUClient
from flowerbed.clients.fedbn import FedBNClient
from flowerbed.clients.fedloge import FedLoGeClient
from flowerbed.clients.fedlabel import FedLabelClient
from flowerbed.clients.fedprox import FedProxClient
from flowerbed.clients.fedrep import FedRepClient
from flowerbed.clients.fedsto import FedSTOClient
from flowerbed.clients.fixmatch import FixMatchClient
from flowerbed.clients.fraug import FRAugClient
from flowerbed.clients.pfedpg import PromptClient

CLIENTS: dict[str, type[ClientAlgorithm]] = {
    "fedavg": FedAvgClient,
    "fedprox": FedProxClient,
    "fedloge": FedLoGeClient,  # FedLoGe and its personalized baselines
    "fedrep": FedRepClient,
    "fedbabu": FedBABUClient,
    "fedlabel": FedLabelClient,
    "fixmatch": FixMatchClient,
    "fedbn": FedBNClient,
    # FRAug and its ablations (the client reads which parts are on from the name)
    "fraug": FRAugClient,
    "fraug-no-rtnet": FRAugClient,
    "fraug-no-generator": FRAugClient,
    # Flower's server-side optimizers and robust aggregators train like FedAvg on the client.
    "fedavgm": FedAvgClient,
    "fedadam": FedAvgClient,
    "fedyogi": FedAvgClient,
    "fedtrimmedavg": FedAvgClient,
    "krum": FedAvgClient,
    "fedmedian": FedAvgClient,
    # pFedPG and its prompt baselines differ only on the server.
    "pfedpg": PromptClient,
    "pbase-only": PromptClient,
    "fedvpt": PromptClient,
    "singleset-vpt": PromptClient,
    # FedSTO (detection), its ablations and baselines: the stage comes with each round's config;
    # server-only and centralized send no client any work.
    "fedsto": FedSTOClient,
    "fedsto-no-ortho": FedSTOClient,
    "fedsto-stage1": FedSTOClient,
    "fedavg-pseudo": FedSTOClient,
    "server-only": FedSTOClient,
    "centralized": FedSTOClient,
}
