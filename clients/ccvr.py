"""CCVR's client half (Luo, Chen, Hu, Zhang, Liang, Feng: "No Fear of Heterogeneity: Classifier
Calibration for Federated Learning with Non-IID Data", NeurIPS 2021): FedAvg's training, plus the
feature statistics the server calibrates the head from.

Training is FedAvg's, unchanged (CCVR is post-hoc). At each federated evaluation the client also
computes, with the received global model's body in evaluation mode, the per-class sufficient
statistics of its labeled samples' features h = features(x): the count n_c, the sum of h and the
sum of h h^T. They go back beside the metrics as the ArrayRecord `ccvr` (float64). The server sums
them over clients (strategies/ccvr.py), which gives exactly the paper's pooled per-class mean and
covariance (Eq. 3-4) that clients would otherwise send as (n_c, mu_c, Sigma_c).

Choices: the statistics come from the evaluation round (so they describe exactly the model the
server then calibrates and scores) and from the clients that evaluate in that round
(`clients.fraction_evaluate`; the paper uses all clients; the presets evaluate all of them).
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from torch import nn

from flowerbed.clients.fedavg import FedAvgClient
from flowerbed.tasks.metrics import predict

STATS = "ccvr"  # the evaluate reply's record of feature statistics (strategies/ccvr.py reads it)


def feature_statistics(h: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """Per-class count [C], sum of h [C, d] and sum of h h^T [C, d, d], in float64."""
    h, onehot = h.double(), nn.functional.one_hot(y, num_classes).double()
    return {"count": onehot.sum(0), "sum": onehot.T @ h, "outer": torch.einsum("nc,nd,ne->cde", onehot, h, h)}


class CCVRClient(FedAvgClient):
    def evaluate(self, msg: Message) -> RecordDict:
        """FedAvg's evaluation (the received model on the local test set) and the statistics."""
        model, d = self.model_from(msg), self.data
        stats = feature_statistics(predict(model.features, d.x_labeled), d.y_labeled, d.num_classes)
        return RecordDict({"metrics": MetricRecord(self.local_metrics(model)), STATS: ArrayRecord({k: v.cpu() for k, v in stats.items()})})
