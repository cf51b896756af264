"""Every client half, by name: the one place that lists them (the server side mirrors it)."""

from __future__ import annotations

from clients.base import ClientAlgorithm
from clients.fedavg import FedAvgClient
from clients.fedbabu import FedBABUClient
from clients.fedbn import FedBNClient
from clients.fedloge import FedLoGeClient
from clients.fedlabel import FedLabelClient
from clients.fedprox import FedProxClient
from clients.fedrep import FedRepClient
from clients.fixmatch import FixMatchClient
from clients.fraug import FRAugClient
from clients.pfedpg import PromptClient

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
}
