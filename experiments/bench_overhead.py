"""Host cost of the replies of one B1 round: 50 replies of pfl_cnn (1.63M parameters).

    python -m flowerbed.experiments.bench_overhead

Builds the 50 reply records an engine sends, as Flower's `ArrayRecord` (bytes, what the `flower`
engine and deployments carry) and as the in-process engines' tensor records (tasks/records.py:
views of the stacked weights, as the batched engine makes them), and runs the strategy's
`aggregate_train` on each (screening for NaN/Inf, FedAvg), 1 torch thread, median of 3. No
training: this is the part of a round that vmap cannot take away.
"""

from __future__ import annotations

import statistics
import time
from collections import OrderedDict

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from flowerbed.simulations import config
from flowerbed.strategies.registry import build_strategy
from flowerbed.tasks.models import build_model
from flowerbed.tasks.records import tensor_record

COHORT = 50


def replies(contents: list[RecordDict]) -> list[Message]:
    query = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=1, message_type="train")
    query.metadata.__dict__["_message_id"] = "m1"
    out = []
    for i, content in enumerate(contents):
        reply = Message(content=content, reply_to=query)
        reply.metadata.__dict__["_src_node_id"] = i + 1
        out.append(reply)
    return out


def main() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    torch.set_num_threads(1)
    cfg = config.load(["model=pfl_cnn", "dataset=fake-images", "partition=iid", f"clients.num={COHORT}"], load_data=False)
    weights = build_model("pfl_cnn", (3, 32, 32), 10, 0).state_dict()
    stacked = {k: v.unsqueeze(0).repeat(COHORT, *[1] * v.dim()) for k, v in weights.items()}
    forms = {
        "bytes (Flower ArrayRecord)": lambda i: ArrayRecord(OrderedDict((k, v[i]) for k, v in stacked.items())),
        "tensors (tasks/records.py)": lambda i: tensor_record(OrderedDict((k, v[i]) for k, v in stacked.items()), stacked, i),
    }
    for form, record in forms.items():
        times: dict[str, list[float]] = {"reply records": [], "aggregate_train": []}
        for _ in range(3):
            strategy = build_strategy(cfg)
            strategy.client_of_node = {i + 1: i for i in range(COHORT)}
            start = time.perf_counter()
            contents = [RecordDict({"arrays": record(i), "metrics": MetricRecord({"train/loss": 1.0, "num-examples": 50})})
                        for i in range(COHORT)]
            times["reply records"].append(time.perf_counter() - start)
            sent = replies(contents)
            start = time.perf_counter()
            strategy.aggregate_train(1, sent)
            times["aggregate_train"].append(time.perf_counter() - start)
        for name, values in times.items():
            print(f"{form}: {name}: {statistics.median(values) * 1000:.1f} ms per round ({COHORT} clients)")


if __name__ == "__main__":
    main()
