"""Every client half, by name: the one place that lists them (the server side mirrors it)."""

from __future__ import annotations

from flowerbed.clients.base import ClientAlgorithm
from flowerbed.clients.ccvr import CCVRClient
from flowerbed.clients.creamfl import CreamFLClient
from flowerbed.clients.ditto import DittoClient
from flowerbed.clients.fedavg import FedAvgClient
from flowerbed.clients.fedbabu import FedBABUClient
from flowerbed.clients.fedbn import FedBNClient
from flowerbed.clients.feddyn import FedDynClient
from flowerbed.clients.fedloge import FedLoGeClient
from flowerbed.clients.fednova import FedNovaClient
from flowerbed.clients.fedlabel import FedLabelClient
from flowerbed.clients.fedlc import FedLCClient
from flowerbed.clients.fedprox import FedProxClient
from flowerbed.clients.fedrep import FedRepClient
from flowerbed.clients.fedrod import FedRoDClient
from flowerbed.clients.fedsto import FedSTOClient
from flowerbed.clients.fixmatch import FixMatchClient
from flowerbed.clients.fraug import FRAugClient
from flowerbed.clients.uda import UDAClient
from flowerbed.clients.moon import MoonClient
from flowerbed.clients.pfedpg import PromptClient
from flowerbed.clients.scaffold import ScaffoldClient
from flowerbed.tasks import plugins

CLIENTS: dict[str, type[ClientAlgorithm]] = {
    "fedavg": FedAvgClient,
    "creamfl": CreamFLClient,
    "fedprox": FedProxClient,
    "fedloge": FedLoGeClient,  # FedLoGe and its personalized baselines
    "fedrep": FedRepClient,
    "fedbabu": FedBABUClient,
    "fedrod": FedRoDClient,
    # long-tail calibration: of the logits in training (FedLC), of the head after it (CCVR)
    "fedlc": FedLCClient,
    "ccvr": CCVRClient,
    "fedlabel": FedLabelClient,
    "fixmatch": FixMatchClient,
    "uda": UDAClient,
    "fedbn": FedBNClient,
    "fednova": FedNovaClient,
    "scaffold": ScaffoldClient,
    "feddyn": FedDynClient,
    "moon": MoonClient,
    "ditto": DittoClient,
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
    # the asynchronous servers (FedBuff, FedAsync) change when updates are applied, not local training
    "fedbuff": FedAvgClient,
    "fedasync": FedAvgClient,
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


def client_class(name: object) -> type[ClientAlgorithm]:
    """The client half `algorithm.name` names: one of CLIENTS, or your own (tasks/plugins.py)."""
    return plugins.algorithm_half(name, CLIENTS, "client")
