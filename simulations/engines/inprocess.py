"""An in-process implementation of Flower's `Grid`: the `sequential` engine.

The real ServerApp runs against it and every message is executed by the real ClientApp in the
same process, one after another. Each virtual node keeps one `Context` for the whole run
(node_config with partition-id / num-partitions, and `state`), as a SuperNode would. No Ray, no
subprocesses, one CUDA context.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterable
from types import MappingProxyType

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=no-name-in-module
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run, RunStatus
from flwr.supercore.task_identity import TaskIdentity

from flowerbed.tasks.records import readdressed, record_dict

SERVER_NODE_ID = 0
CLIENT_EXCEPTION = 300  # the error code Flower's runtimes use when a ClientApp raises


class InProcessGrid(Grid):
    def __init__(self, client_app: ClientApp, run_config: dict, num_nodes: int, run_id: int = 1) -> None:
        self.client_app = client_app
        self._run = _run_record(run_id, run_config)
        rng = random.Random(run_id)  # node ids are arbitrary, as Flower's are
        node_ids = rng.sample(range(1, 2**62), num_nodes)
        # one read-only run config for every node: a copy each would cost ~1.6 KB a node (160 MB at
        # 100,000 clients), and no node may change what all of them run
        shared = MappingProxyType(dict(run_config))
        self.contexts = {
            node_id: Context(
                run_id=run_id,
                node_id=node_id,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=shared,  # type: ignore[arg-type]
            )
            for i, node_id in enumerate(node_ids)
        }
        self._ids = itertools.count(1)
        self._replies: dict[str, Message] = {}
        self.timeout: float | None = None  # set by send_and_receive; a slower reply is dropped

    # -- Grid API ------------------------------------------------------------------------------
    def set_run(self, run_id: int) -> None:
        self._run.run_id = run_id

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return [NodeInfo(node_id=n) for n in self.contexts]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message_id = self.assign_id(message)
            start = time.perf_counter()
            reply = self.execute(message)
            # messages run one after another here, so each gets the whole timeout, as if in parallel
            if self.in_time(start):
                self._replies[message_id] = reply
            ids.append(message_id)
        return ids

    def assign_id(self, message: Message) -> str:
        """Give `message` its id, the SuperLink's job in Flower."""
        message_id = f"m{next(self._ids)}"
        message.metadata.__dict__["_message_id"] = message_id
        return message_id

    def in_time(self, start: float) -> bool:
        """Whether a reply begun at `start` is in time; a later one is lost, as on a SuperLink (the
        server counts it failed)."""
        return self.timeout is None or time.perf_counter() - start <= self.timeout

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        self.timeout = timeout
        try:
            return self.pull_messages(self.push_messages(messages))
        finally:
            self.timeout = None

    # -- execution -----------------------------------------------------------------------------
    def execute(self, message: Message) -> Message:
        """Run the ClientApp on one message; an exception becomes an error reply, as in Flower."""
        context = self.contexts[message.metadata.dst_node_id]
        TaskIdentity.node_id = context.node_id
        message = node_copy(message)
        try:
            reply = self.client_app(message, context)
        except Exception as err:  # a failing client must not stop the round
            reply = Message(Error(code=CLIENT_EXCEPTION, reason=f"{type(err).__name__}: {err}"), reply_to=message)
        finally:
            TaskIdentity.node_id = SERVER_NODE_ID
        return reply


def node_copy(message: Message) -> Message:
    """The node's own copy of a message, as over the network: Flower's mods may edit the records
    they receive (SecAgg+'s pops its stage), and a strategy may send one content object to every
    node. Records are copied, not the values in them: arrays are never written in place (their
    bytes are immutable, a tensor is loaded into a model by copy). `copy.deepcopy` rebuilt every
    value through Flower's type checks: 0.18 ms of a sequential client call."""
    copy = readdressed(message, message.metadata.dst_node_id)
    vars(copy)["_content"] = record_dict({name: record.copy() for name, record in message.content.items()})
    return copy


def _run_record(run_id: int, run_config: dict) -> Run:
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    return Run(
        run_id=run_id, fab_id="flowerbed", fab_version="", fab_hash="", override_config=dict(run_config),
        pending_at=now, starting_at=now, running_at=now, finished_at="",
        status=RunStatus("running", "", ""), flwr_aid="", federation_id="", primary_task_id=None,
        bytes_sent=0, bytes_recv=0, clientapp_runtime=0.0,
    )


def run_in_process(
    server_app: ServerApp, client_app: ClientApp, run_config: dict, num_nodes: int, grid_class: type[InProcessGrid] = InProcessGrid
) -> InProcessGrid:
    """Run a ServerApp to completion against `num_nodes` in-process nodes (`grid_class`: the engine)."""
    run_id = 1
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SERVER_NODE_ID, 0
    grid = grid_class(client_app, run_config, num_nodes, run_id)
    server_app(grid, Context(run_id=run_id, node_id=SERVER_NODE_ID, node_config={}, state=RecordDict(), run_config=dict(run_config)))
    return grid
