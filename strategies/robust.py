"""Robust aggregation for any strategy, by composition: `algorithm.aggregation=mean|trimmed|median|krum`.

Flower ships robust aggregation as whole strategies (FedTrimmedAvg, FedMedian, Krum), each a
FedAvg whose `aggregate_train` computes something other than the weighted mean. To give every
algorithm that aggregates weights (FedAvg, FedProx, FedAvgM, FedAdam, FedLabel, ...) the same
choice without a class per pair, one of those Flower strategies is kept as a helper: it computes
the robust model from the screened replies, and every reply then carries that model before the
algorithm's own `aggregate_train` runs. The algorithm's weighted mean of identical models is the
robust model itself, its metrics are aggregated as usual, and a server optimizer (FedAdam's,
FedAvgM's momentum) steps toward the robust model instead of the mean. Nothing is rewritten:
the robust statistic is Flower's, the rest is the algorithm's.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import strategy as flwr_strategy

from flowerbed.tasks.records import shallow_copy

AGGREGATIONS = ("mean", "trimmed", "median", "krum")


def aggregator(cfg: dict) -> flwr_strategy.FedAvg | None:
    """The Flower strategy that computes the robust model, or None for the plain mean."""
    how = str(cfg.get("algorithm.aggregation", "mean"))
    if how == "trimmed":
        return flwr_strategy.FedTrimmedAvg(beta=float(cfg.get("algorithm.trim_beta", 0.2)))
    if how == "median":
        return flwr_strategy.FedMedian()
    if how == "krum":
        return flwr_strategy.Krum(num_malicious_nodes=int(cfg.get("algorithm.num_malicious", 0)))
    return None


def robust_replies(helper: flwr_strategy.FedAvg, server_round: int, replies: list[Message]) -> list[Message]:
    """The replies, each now holding the robust model (their metrics untouched)."""
    if not replies:
        return replies
    # Flower's FedTrimmedAvg pops arrays from the records it reads: hand it shallow copies
    copies = []
    for msg in replies:
        content = RecordDict({k: shallow_copy(v) for k, v in msg.content.array_records.items()})
        content["metrics"] = msg.content["metrics"]
        copies.append(with_content(msg, content))
    arrays, _ = helper.aggregate_train(server_round, copies)
    return replies if arrays is None else carrying(replies, arrays)


def carrying(replies: list[Message], arrays: ArrayRecord) -> list[Message]:
    """The replies, each holding `arrays` in place of its own (metrics untouched): the algorithm's
    mean of them is `arrays`, and its server optimizer steps toward it."""
    key = next(iter(replies[0].content.array_records))
    out = []
    for msg in replies:
        content = RecordDict({key: arrays, **{k: v for k, v in msg.content.items() if k != key}})
        out.append(with_content(msg, content))
    return out


def with_content(msg: Message, content: RecordDict) -> Message:
    """The same reply (sender, ids) with other content."""
    copy = Message.__new__(Message)
    copy.__dict__.update(msg.__dict__)
    copy.__dict__["_content"] = content
    return copy
