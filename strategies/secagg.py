"""Secure aggregation: Flower's SecAgg+ workflow serving a Message-API strategy's round.

As shipped in flwr 1.41/1.42, SecAgg+ cannot serve this app's strategies: `SecAggPlusWorkflow`
runs only inside the legacy `DefaultWorkflow` (it raises `TypeError: Expect a LegacyContext`
for anything else) and asks a legacy `flwr.server.strategy.Strategy` for `configure_fit` /
`aggregate_fit`, while `secaggplus_mod` reads the ClientApp's reply as a legacy `FitRes`
(`KeyError: 'fitres.parameters'` on a Message-API reply). Both halves are used here unchanged,
with a hand-over on each side:
- here, a legacy strategy that hands the workflow the train messages the run's strategy built
  (`configure_train`: sampling, config, the DP clipping norm) and takes back what the workflow
  unmasks, the example-weighted mean of the sampled clients' models, which is all the server
  ever sees;
- on the client (clients/secagg.py), a mod between `secaggplus_mod` and the train handler that
  turns the legacy FitIns into the app's train message and its reply back into a FitRes.
Each surviving client's reply then carries the secure mean (and its own metrics, which travel in
the clear) into the strategy's `aggregate_train`, as with robust aggregation (strategies/robust.py):
the mean of identical models is that model, a server optimizer steps toward it, and central DP
noises it (with client-side clipping: the server never sees an update to clip).
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerConfig
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from flowerbed.tasks.records import SECAGG_ARRAY_KEYS as KEYS

SHARE_FRACTION = 1.0  # every sampled client holds a share of every other's secrets
THRESHOLD_FRACTION = 2 / 3  # shares needed to unmask: a third of the sampled clients may drop out


class HandOver(LegacyStrategy):
    """The legacy strategy the workflow talks to: it sends what the run's strategy built."""

    def __init__(self, sent: list[Message], grid: Grid) -> None:
        self.sent = {m.metadata.dst_node_id: m for m in sent}
        self.grid = grid
        self.results: list = []

    def configure_fit(self, server_round, parameters, client_manager):
        out = []
        for node, msg in self.sent.items():
            arrays = msg.content["arrays"]
            config = {**dict(msg.content["config"]), KEYS: "\n".join(arrays.keys())}
            parameters = ndarrays_to_parameters([a.numpy() for a in arrays.values()])
            out.append((GridClientProxy(node, self.grid, self.grid.run.run_id), FitIns(parameters, config)))
        return out

    def aggregate_fit(self, server_round, results, failures):
        self.results = results  # each FitRes now holds the unmasked mean, and its client's metrics
        return None, {}

    def initialize_parameters(self, client_manager):
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


class Counted:
    """The grid, counting the bytes of every message of the protocol's four exchanges."""

    def __init__(self, grid: Grid) -> None:
        self.grid, self.down, self.up = grid, 0, 0

    @property
    def run(self):
        return self.grid.run

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.down += sum(map(_size, messages))
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        self.up += sum(map(_size, replies))
        return replies


def _size(msg: Message) -> int:
    """Model bytes and protocol bytes (keys, shares, masked vectors travel as bytes in ConfigRecords)."""
    if not msg.has_content():
        return 0
    total = sum(r.count_bytes() for r in msg.content.array_records.values())
    for record in msg.content.config_records.values():
        for value in record.values():
            total += sum(len(v) for v in (value if isinstance(value, list) else [value]) if isinstance(v, bytes))
    return total


def secure_round(grid: Grid, sent: list[Message], server_round: int, timeout: float,
                 max_weight: float) -> tuple[list[Message], int, int]:
    """Run SecAgg+ for the round's train messages: one reply per surviving client, each carrying the
    secure weighted mean (none if too few clients stayed to unmask), and the bytes sent down and up."""
    if not sent:
        return [], 0, 0
    grid = Counted(grid)
    hand_over = HandOver(sent, grid)
    context = LegacyContext(Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                            config=ServerConfig(num_rounds=server_round), strategy=hand_over)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: server_round})
    context.state.array_records[MAIN_PARAMS_RECORD] = sent[0].content["arrays"]
    m = len(sent)
    workflow = SecAggPlusWorkflow(num_shares=SHARE_FRACTION, reconstruction_threshold=max(2, math.ceil(THRESHOLD_FRACTION * m)),
                                  max_weight=max_weight, timeout=timeout)
    workflow(grid, context)
    by_node = {m.metadata.dst_node_id: m for m in sent}
    template = sent[0].content["arrays"]
    replies = []
    for proxy, fitres in hand_over.results:
        mean = parameters_to_ndarrays(fitres.parameters)
        arrays = ArrayRecord({k: Array(np.asarray(v, dtype=np.dtype(template[k].dtype)).reshape(template[k].shape))
                              for k, v in zip(template.keys(), mean)})
        metrics = MetricRecord({k: v for k, v in fitres.metrics.items() if isinstance(v, (int, float))})
        replies.append(Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=by_node[proxy.node_id]))
    return replies, grid.down, grid.up
