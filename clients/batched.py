"""Batched client halves: one round's clients trained as one computation over stacked weights.

The `batched` engine (simulations/engines/batched.py) hands a whole round of train messages to the
batched form of the run's client half. Every client's weights are stacked along a leading client
dimension and each SGD step runs `torch.func.vmap(grad(functional_call))` over the clients, so a
round costs one stream of kernels instead of one per client: on a GPU with small models and small
batches that removes the launch overhead that dominates sequential training.

Same numbers as `sequential`, to float tolerance: each client's batches come from the same
`batch_plan` and `generator(seed, round, client, "train")` as clients/core.py, the loss is the
mean over the same samples, and the update is torch.optim.SGD's (weight decay added to the
gradient, momentum buffer `m = momentum * m + g` starting from zero, `w -= lr * m`). Dropout masks
are drawn per client (`randomness="different"`) but not from the sequential stream, so models with
dropout match in distribution only.

Unequal data sizes: grouping by step count, not masking. Clients are sorted by their number of
steps, so at step s the clients that still train are a prefix of the stack: their weights are a
view (no copy) and finished clients cost nothing. Within a step, clients whose batch differs in size
(the short last batch of an epoch) train in their own vmap call on gathered weights, written back
afterwards. Masking would pad every client to the longest plan, wasting the steps of small clients
under Dirichlet or long-tailed partitions, and padded samples would corrupt BatchNorm's batch
statistics; grouping needs neither padding nor masks and stays exact with BatchNorm, whose buffers
are stacked per client and updated in place by `functional_call`.

An algorithm opts in with an entry in `BATCHED`, keyed by its exact client class (a subclass that
changes local training must not inherit its parent's batched form by accident). A form takes a
`Cohort` and returns one reply content per client, the same records the sequential client sends.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from torch import nn
from torch.func import functional_call, grad, vmap

from flowerbed.clients.augment import strong_view
from flowerbed.clients.base import ClientAlgorithm, Template, template
from flowerbed.clients.core import batches_from, generator
from flowerbed.clients.data import local_data
from flowerbed.tasks.config_key import config_key
from flowerbed.clients.fedavg import FedAvgClient
from flowerbed.clients.feddyn import GRAD as FEDDYN_GRAD
from flowerbed.clients.feddyn import FedDynClient
from flowerbed.clients.fednova import FedNovaClient, normalize, normalizer
from flowerbed.clients.fedlabel import FedLabelClient, combine, fit_metrics, local_plan, pseudo_labels, semi_supervised_loss
from flowerbed.clients.fedlc import FedLCClient, calibrated_cross_entropy, calibration, label_counts
from flowerbed.clients.fedloge import FedLoGeClient, FedLoGeNet
from flowerbed.clients.fedprox import FedProxClient
from flowerbed.clients.scaffold import CONTROL as SCAFFOLD_CONTROL
from flowerbed.clients.scaffold import DELTA as SCAFFOLD_DELTA
from flowerbed.clients.scaffold import OWN as SCAFFOLD_OWN
from flowerbed.clients.scaffold import ScaffoldClient
from flowerbed.tasks.classification import ClassificationTask, client_scores
from flowerbed.tasks.etf import options as etf_options
from flowerbed.tasks.etf import sse_c_for
from flowerbed.tasks.metrics import predict
from flowerbed.tasks.models import build_model
from flowerbed.tasks.partitions import build_federation
from flowerbed.tasks.records import tensor_record, tensors
from flowerbed.tasks.registry import task_of

Tensors = dict[str, torch.Tensor]
# loss(model, params, buffers, x, y, extra) for ONE client; vmapped over the cohort.
StackedLoss = Callable[[nn.Module, Tensors, Tensors, torch.Tensor, torch.Tensor, Tensors], torch.Tensor]


@dataclass
class Cohort:
    """The train messages of one round, with what the batched form needs to serve them."""

    cfg: dict
    messages: list[Message]
    contexts: list[Context]
    client_ids: list[int]
    device: torch.device
    compile: bool = False

    @property
    def server_round(self) -> int:
        return int(self.messages[0].content["config"]["server-round"])


# -- data and weights ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _resident(keys: tuple, device: str) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    cfg = dict(keys)
    fed = task_of(cfg).federation(cfg)
    x = torch.as_tensor(np.ascontiguousarray(fed.data.x_train)).to(device)
    y = torch.as_tensor(np.ascontiguousarray(fed.data.y_train)).to(device)
    return x, y, [c.labeled for c in fed.clients]


def resident_data(cfg: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    """The whole training set on the device, once per process, and each client's labeled rows.

    A client's `x_labeled[i]` (clients/data.py) is row `labeled[i]` of this tensor.
    """
    return _resident(config_key(cfg), str(device))


def template_model(cfg: dict, device: torch.device) -> nn.Module:
    """The architecture, built once per process: `functional_call` never touches its own weights."""
    return shared_template(cfg, device).model


def shared_template(cfg: dict, device: torch.device) -> Template:
    d = task_of(cfg).federation(cfg).data
    return template(d.input_shape, d.num_classes, str(device), config_key(cfg))


def stack(records: list[ArrayRecord], names: list[str], device: torch.device) -> Tensors:
    """Per-client state dicts -> one [clients, ...] tensor per name (one read if shared)."""
    if all(r is records[0] for r in records):
        one = tensors(records[0])
        return {n: one[n].to(device).unsqueeze(0).repeat(len(records), *[1] * one[n].dim()) for n in names}
    dicts = [tensors(r) for r in records]
    return {n: torch.stack([d[n].to(device) for d in dicts]) for n in names}


# -- the vectorised SGD loop -----------------------------------------------------------------------
@dataclass
class Group:
    """One vmap call: clients `sel` (a prefix slice, or slots to gather) on data rows `rows`."""

    sel: slice | torch.Tensor
    rows: torch.Tensor  # [clients in group, batch]


def schedule(plans: list[list[np.ndarray]], device: torch.device) -> list[Group]:
    """Group each step's clients by batch size; `plans` hold data rows, clients sorted by steps."""
    groups, flat = [], []
    for s in range(max((len(p) for p in plans), default=0)):
        by_size: dict[int, list[int]] = {}
        for k, plan in enumerate(plans):
            if s < len(plan):
                by_size.setdefault(len(plan[s]), []).append(k)
        for ks in by_size.values():
            prefix = ks == list(range(len(ks)))
            groups.append((slice(0, len(ks)) if prefix else np.asarray(ks), np.stack([plans[k][s] for k in ks])))
            flat += [groups[-1][1].ravel()] + ([] if prefix else [groups[-1][0]])
    # one host-to-device copy for the whole round's indices; no transfers inside the loop
    on_device = torch.from_numpy(np.concatenate(flat) if flat else np.zeros(0, np.int64)).to(device, non_blocking=True)
    out, at = [], 0
    for sel, rows in groups:
        r = on_device[at : at + rows.size].view(rows.shape)
        at += rows.size
        if not isinstance(sel, slice):
            sel, at = on_device[at : at + len(sel)], at + len(sel)
        out.append(Group(sel, r))
    return out


def longest_first(plans: list[list[np.ndarray]], device: torch.device) -> tuple[list[int], torch.Tensor, list[Group]]:
    """The stack's slots for cohort positions with these plans, most steps first (`order[slot]` is the
    position), each slot's number of steps, and the schedule of vmap calls over the slots."""
    order = sorted(range(len(plans)), key=lambda k: -len(plans[k]))
    num_steps = torch.tensor([len(plans[k]) for k in order], dtype=torch.float32).to(device)
    return order, num_steps, schedule([plans[k] for k in order], device)


def _take(d: Tensors, sel) -> Tensors:
    return {k: v[sel] for k, v in d.items()}


def _put(d: Tensors, sel, values: Tensors) -> None:
    if not isinstance(sel, slice):  # gathered copies go back; slices were updated in place
        for k, v in values.items():
            d[k].index_copy_(0, sel, v)


def train_stacked(
    model: nn.Module,
    params: Tensors,
    buffers: Tensors,
    x: torch.Tensor,
    y: torch.Tensor,
    groups: list[Group],
    num_steps: torch.Tensor,
    cfg: dict,
    loss_fn: StackedLoss,
    extra: Tensors | None = None,
    compile: bool = False,
) -> torch.Tensor:
    """SGD on stacked weights in place, as torch.optim.SGD per client; returns mean losses [K]."""
    lr, momentum, decay = float(cfg["train.lr"]), float(cfg["train.momentum"]), float(cfg["train.weight_decay"])
    extra = extra or {}

    def objective(p, b, xb, yb, e):
        loss = loss_fn(model, p, b, xb, yb, e)
        return loss, loss.detach()

    step_grad = vmap(grad(objective, has_aux=True), randomness="different")
    if compile:
        step_grad = torch.compile(step_grad)
    names = list(params)
    velocity = {n: torch.zeros_like(p) for n, p in params.items()} if momentum else {}
    total = torch.zeros(len(num_steps), device=x.device)
    model.train()
    for g in groups:
        p, b, e = _take(params, g.sel), _take(buffers, g.sel), _take(extra, g.sel)
        grads, loss = step_grad(p, b, x[g.rows], y[g.rows], e)
        update = [grads[n] for n in names]
        if decay:
            update = torch._foreach_add(update, [p[n] for n in names], alpha=decay)
        if momentum:
            v = _take(velocity, g.sel)
            torch._foreach_mul_([v[n] for n in names], momentum)
            torch._foreach_add_([v[n] for n in names], update)
            update = [v[n] for n in names]
            _put(velocity, g.sel, v)
        torch._foreach_add_([p[n] for n in names], update, alpha=-lr)
        _put(params, g.sel, p)
        _put(buffers, g.sel, b)  # BatchNorm statistics, updated in place by functional_call
        if isinstance(g.sel, slice):
            total[g.sel] += loss
        else:
            total.index_add_(0, g.sel, loss)
    return total / num_steps.clamp(min=1)


# -- a batched form: FedAvg's local SGD with a pluggable per-client loss ----------------------------
def proximal(task_loss: StackedLoss) -> StackedLoss:
    """FedProx's local objective: the task's loss + (mu/2)||w - w_global||^2 (clients/fedprox.py)."""

    def loss(model: nn.Module, p: Tensors, b: Tensors, x: torch.Tensor, y: torch.Tensor, e: Tensors) -> torch.Tensor:
        drift = sum(((p[n] - e["anchor/" + n]) ** 2).sum() for n in p)
        return task_loss(model, p, b, x, y, e) + 0.5 * e["mu"] * drift

    return loss


def local_sgd(
    cohort: Cohort,
    loss_fn: StackedLoss | None = None,
    extra: Callable[[Tensors, list[int]], Tensors] | None = None,
    net: nn.Module | None = None,
    own: Callable[[list[int]], tuple[Tensors, Tensors]] | None = None,
    keep: Callable[[int, Tensors], None] | None = None,
) -> list[RecordDict]:
    """FedAvgClient.train for a whole cohort: same batches, same update, same reply records.

    A loss that reads more than the batch gets `extra(params, order)`: per-client tensors, stacked
    in slot order (`order[slot]` is the client's position in the cohort), passed to `loss_fn` as `e`.
    Algorithms that train more than the travelling model pass `net` (a module holding it as
    `net.model`), `own(order)` (their stacked extra parameters and buffers, by name in `net`, for
    the cohort positions in `order`) and `keep(position, trained)` (to store what stays on the client).
    """
    cfg, device = cohort.cfg, cohort.device
    loss_fn = loss_fn or task_of(cfg).stacked_loss
    x, y, labeled = resident_data(cfg, device)
    model = template_model(cfg, device)
    prefix = "model." if net is not None else ""
    keys = list(model.state_dict())
    param_names = [n for n, _ in model.named_parameters()]
    buffer_names = [n for n, _ in model.named_buffers()]

    # batch plans exactly as the sequential client draws them, as rows of the resident data
    plans = [
        [labeled[c][idx.numpy()] for idx in batches_from(cfg, len(labeled[c]), generator(int(cfg["seed"]), cohort.server_round, c, "train"))]
        for c in cohort.client_ids
    ]
    order, num_steps, groups = longest_first(plans, device)
    records = [cohort.messages[k].content["arrays"] for k in order]
    with torch.no_grad():
        params = {prefix + n: t for n, t in stack(records, param_names, device).items()}
        buffers = {prefix + n: t for n, t in stack(records, buffer_names, device).items()}
        if own is not None:
            more_params, more_buffers = own(order)
            params.update(more_params)
            buffers.update(more_buffers)
    ex = extra(params, order) if extra else {}
    losses = train_stacked(net if net is not None else model, params, buffers, x, y, groups, num_steps, cfg, loss_fn, ex,
                           cohort.compile)

    # one reply per client in the sequential key order: views of the stacked weights, on the device
    # (tasks/records.py), which screening and aggregation read as the stacks they are
    trained = {**params, **buffers}
    stacks = {n: trained[prefix + n] for n in keys}
    losses = losses.cpu().tolist()  # the round's one host synchronisation
    replies: list[RecordDict | None] = [None] * len(order)
    for slot, k in enumerate(order):
        state = OrderedDict((n, stacks[n][slot]) for n in keys)
        metrics = {"train/loss": losses[slot], "num-examples": len(labeled[cohort.client_ids[k]])}
        replies[k] = RecordDict({"arrays": tensor_record(state, stacks, slot), "metrics": MetricRecord(metrics)})
        if keep is not None:
            keep(k, {n: t[slot] for n, t in trained.items()})
    return replies  # type: ignore[return-value]


def fedprox(cohort: Cohort) -> list[RecordDict]:
    """FedProxClient.fit for a cohort: each client's received weights anchor its proximal term."""

    def anchor_and_mu(params: Tensors, order: list[int]) -> Tensors:
        mus = [float(cohort.messages[k].content["config"].get("proximal-mu", 0.0)) for k in order]
        anchors = {"anchor/" + n: p.detach().clone() for n, p in params.items()}
        return {**anchors, "mu": torch.tensor(mus, dtype=torch.float32).to(cohort.device)}

    return local_sgd(cohort, proximal(task_of(cohort.cfg).stacked_loss), anchor_and_mu)


def fedlc(cohort: Cohort) -> list[RecordDict]:
    """FedLCClient.fit for a cohort: each client's logits shifted by its own tau * n_c^(-1/4)."""
    _, labels, labeled = resident_data(cohort.cfg, cohort.device)
    num_classes, tau = build_federation(cohort.cfg).data.num_classes, float(cohort.cfg["algorithm.calibration_tau"])

    def shifts(params: Tensors, order: list[int]) -> Tensors:
        counts = [label_counts(labels[torch.as_tensor(labeled[cohort.client_ids[k]])], num_classes) for k in order]
        return {"shift": torch.stack([calibration(n, tau) for n in counts])}

    def calibrated(model: nn.Module, p: Tensors, b: Tensors, x: torch.Tensor, y: torch.Tensor, e: Tensors) -> torch.Tensor:
        return calibrated_cross_entropy(functional_call(model, (p, b), (x,)), y, e["shift"])

    return local_sgd(cohort, calibrated, shifts)


class _FedLoGeObjective(FedLoGeNet):
    """FedLoGe's three-head loss as `forward`, so that `functional_call` runs it."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(x, y)


def fedloge(cohort: Cohort) -> list[RecordDict]:
    """FedLoGeClient.fit for a cohort: backbone + psi travel, SSE-C is shared, phi_k is per client."""
    cfg, device = cohort.cfg, cohort.device
    model = template_model(cfg, device)
    out_dim, dim = model.classifier.weight.shape
    etf = sse_c_for(model.state_dict(), int(cfg["seed"]), **etf_options(cfg)).to(device)
    net = _FedLoGeObjective(model, etf, nn.Linear(dim, out_dim).to(device))
    d = build_federation(cfg).data
    first = build_model(str(cfg["model.name"]), d.input_shape, d.num_classes, int(cfg["seed"])).classifier.state_dict()

    def heads(order: list[int]) -> tuple[Tensors, Tensors]:
        states = [cohort.contexts[k].state["fedloge/phi"].to_torch_state_dict() if "fedloge/phi" in cohort.contexts[k].state else first
                  for k in order]
        phi = {"phi." + n: torch.stack([s[n] for s in states]).to(device) for n in first}
        return phi, {"etf": etf.unsqueeze(0).repeat(len(order), 1, 1)}

    def keep(k: int, trained: Tensors) -> None:
        cohort.contexts[k].state["fedloge/phi"] = ArrayRecord(OrderedDict((n, trained["phi." + n]) for n in first))

    loss = lambda net, p, b, x, y, e: functional_call(net, (p, b), (x, y))  # noqa: E731
    return local_sgd(cohort, loss, net=net, own=heads, keep=keep)


def fednova(cohort: Cohort) -> list[RecordDict]:
    """FedNovaClient.fit for a cohort: FedAvg's stacked SGD, then each reply's update divided by its a_i."""
    cfg, seed, momentum = cohort.cfg, int(cohort.cfg["seed"]), float(cohort.cfg["train.momentum"])
    labeled = resident_data(cfg, cohort.device)[2]
    replies = local_sgd(cohort)
    for msg, reply, c in zip(cohort.messages, replies, cohort.client_ids):
        a = normalizer(len(batches_from(cfg, len(labeled[c]), generator(seed, cohort.server_round, c, "train"))), momentum)
        trained = tensors(reply["arrays"])  # views of the stacked weights: normalized in place
        normalize({k: v.to(cohort.device) for k, v in tensors(msg.content["arrays"]).items()}, trained, a)
        reply["metrics"]["fednova/a"] = a
    return replies


def _per_client_state(cohort: Cohort, key: str, names: list[str], like: Tensors, order: list[int]) -> Tensors:
    """A record of each client's `context.state` (zero where it has none yet), stacked in slot order."""
    held = [cohort.contexts[k].state[key].to_torch_state_dict() if key in cohort.contexts[k].state else {} for k in order]
    return {n: torch.stack([h[n].to(cohort.device) if n in h else torch.zeros_like(like[n][0]) for h in held]) for n in names}


def feddyn(cohort: Cohort) -> list[RecordDict]:
    """FedDynClient.fit for a cohort: the anchors and gradient states stacked, g_k updated per client."""
    alpha, stacked_extra, slot_of = float(cohort.cfg["algorithm.dyn_alpha"]), {}, {}
    task_loss = task_of(cohort.cfg).stacked_loss

    def anchor_and_grad(params: Tensors, order: list[int]) -> Tensors:
        slot_of.update({k: slot for slot, k in enumerate(order)})
        grads = _per_client_state(cohort, FEDDYN_GRAD, list(params), params, order)
        stacked_extra.update({"anchor/" + n: p.detach().clone() for n, p in params.items()})
        stacked_extra.update({"grad/" + n: g for n, g in grads.items()})
        return stacked_extra

    def dynamic(model: nn.Module, p: Tensors, b: Tensors, x: torch.Tensor, y: torch.Tensor, e: Tensors) -> torch.Tensor:
        linear = sum((e["grad/" + n] * p[n]).sum() for n in p)
        drift = sum(((p[n] - e["anchor/" + n]) ** 2).sum() for n in p)
        return task_loss(model, p, b, x, y, e) - linear + 0.5 * alpha * drift

    def keep(k: int, trained: Tensors) -> None:
        slot, names = slot_of[k], [n.removeprefix("grad/") for n in stacked_extra if n.startswith("grad/")]
        grad = {n: stacked_extra["grad/" + n][slot] - alpha * (trained[n] - stacked_extra["anchor/" + n][slot]) for n in names}
        cohort.contexts[k].state[FEDDYN_GRAD] = ArrayRecord(OrderedDict((n, g.detach().cpu()) for n, g in grad.items()))

    return local_sgd(cohort, dynamic, anchor_and_grad, keep=keep)


def scaffold(cohort: Cohort) -> list[RecordDict]:
    """ScaffoldClient.fit for a cohort: corrections c - c_i stacked, option II's c_i+ per client, and
    c_i+ - c_i in each reply's record."""
    cfg, seed, lr = cohort.cfg, int(cohort.cfg["seed"]), float(cohort.cfg["train.lr"])
    labeled, stacked_extra, slot_of, changes = resident_data(cfg, cohort.device)[2], {}, {}, {}
    task_loss = task_of(cfg).stacked_loss

    def corrections(params: Tensors, order: list[int]) -> Tensors:
        slot_of.update({k: slot for slot, k in enumerate(order)})
        received = [tensors(m.content[SCAFFOLD_CONTROL]) if SCAFFOLD_CONTROL in m.content.array_records else {}
                    for m in (cohort.messages[k] for k in order)]
        c = {n: torch.stack([r[n].to(cohort.device) if n in r else torch.zeros_like(params[n][0]) for r in received]) for n in params}
        c_i = _per_client_state(cohort, SCAFFOLD_OWN, list(params), params, order)
        stacked_extra.update({"start/" + n: p.detach().clone() for n, p in params.items()})
        stacked_extra.update({"c/" + n: v for n, v in c.items()} | {"c_i/" + n: v for n, v in c_i.items()})
        return {"correction/" + n: c[n] - c_i[n] for n in params}

    def corrected(model: nn.Module, p: Tensors, b: Tensors, x: torch.Tensor, y: torch.Tensor, e: Tensors) -> torch.Tensor:
        return task_loss(model, p, b, x, y, e) + sum((e["correction/" + n] * p[n]).sum() for n in p)

    def keep(k: int, trained: Tensors) -> None:
        slot, names = slot_of[k], [n.removeprefix("c/") for n in stacked_extra if n.startswith("c/")]
        steps = len(batches_from(cfg, len(labeled[cohort.client_ids[k]]), generator(seed, cohort.server_round, cohort.client_ids[k], "train")))
        old = {n: stacked_extra["c_i/" + n][slot] for n in names}
        new = {n: old[n] - stacked_extra["c/" + n][slot] + (stacked_extra["start/" + n][slot] - trained[n]) / (steps * lr) if steps else old[n]
               for n in names}
        cohort.contexts[k].state[SCAFFOLD_OWN] = ArrayRecord(OrderedDict((n, v.detach().cpu()) for n, v in new.items()))
        changes[k] = {SCAFFOLD_DELTA + n: (new[n] - old[n]).detach() for n in names}

    replies = local_sgd(cohort, corrected, corrections, keep=keep)
    for k, reply in enumerate(replies):
        for key, array in tensor_record(changes[k]).items():
            reply["arrays"][key] = array
    return replies


# -- a batched evaluate: ClientAlgorithm.evaluate (the received model on each local test set) ------
@torch.no_grad()
def evaluate_received(cohort: Cohort) -> list[RecordDict]:
    """ClientAlgorithm.evaluate for a cohort: the clients that received the same model are scored in
    one forward pass over their local test sets put together, then split back per client (for
    classification, whose metrics are a function of each sample's logits; other tasks client by client)."""
    cfg, device = cohort.cfg, cohort.device
    shared, task = shared_template(cfg, device), task_of(cfg)
    data = [local_data(cfg, c.node_config, device) for c in cohort.contexts]
    replies: list[RecordDict | None] = [None] * len(cohort.messages)
    by_model: dict[int, list[int]] = {}
    for k, message in enumerate(cohort.messages):
        by_model.setdefault(id(message.content["arrays"]), []).append(k)
    for members in by_model.values():
        model = shared.load(tensors(cohort.messages[members[0]].content["arrays"]))
        if not isinstance(task, ClassificationTask):
            for k in members:
                replies[k] = RecordDict({"metrics": MetricRecord(task.client_metrics(model, data[k]))})
            continue
        logits = predict(model, torch.cat([data[k].x_test for k in members]))
        for k, part in zip(members, logits.split([len(data[k].y_test) for k in members])):
            replies[k] = RecordDict({"metrics": MetricRecord(client_scores(part, data[k].y_test, data[k].num_classes))})
    return replies  # type: ignore[return-value]


# -- FedLabel: two stacked SGD runs from the global weights, pseudo-labels in between ----------------
def _train_from(
    model: nn.Module, start: Tensors, param_names: list[str], plans: list[list[np.ndarray]], x: torch.Tensor, y: torch.Tensor,
    cohort: Cohort, loss_fn: StackedLoss,
) -> tuple[Tensors, torch.Tensor]:
    """Copies of the stacked `start` weights trained on `plans` (rows of x/y per cohort position);
    returns the trained weights and mean losses, both in cohort order."""
    order, num_steps, groups = longest_first(plans, cohort.device)
    perm = torch.tensor(order, device=cohort.device)
    with torch.no_grad():
        params = {n: t[perm] for n, t in start.items() if n in param_names}  # indexing copies
        buffers = {n: t[perm] for n, t in start.items() if n not in param_names}
    losses = train_stacked(model, params, buffers, x, y, groups, num_steps, cohort.cfg, loss_fn, None, cohort.compile)
    back = torch.argsort(perm)
    return {n: t[back] for n, t in {**params, **buffers}.items()}, losses[back]


def _semi_supervised(model: nn.Module, p: Tensors, b: Tensors, x: torch.Tensor, y: torch.Tensor, e: Tensors) -> torch.Tensor:
    """Eq. 8 for one client: x holds (plain, strong view) pairs, y (label, accepted, weight, teacher...)."""
    strong = functional_call(model, (p, b), (x[:, 1],))
    return semi_supervised_loss(strong, functional_call(model, (p, b), (x[:, 0],)), y[:, 0].long(), y[:, 1], y[:, 3:], y[:, 2])


def fedlabel(cohort: Cohort) -> list[RecordDict]:
    """FedLabelClient.fit for a cohort: the labeled local models and the unlabeled models each train
    as one vmapped SGD run from the stacked global weights; pseudo-labelling predicts client by client
    (large inference batches, already efficient) with the same kernels as the sequential client.

    The unlabeled run reads a table built before it: each client's planned batches with their strong
    views drawn from its own `(seed, round, client, "strong")` generator in step order, exactly as the
    sequential loss draws them, and each sample's pseudo-label, mask, KL weight and teacher output.
    """
    cfg, device, rnd = cohort.cfg, cohort.device, cohort.server_round
    seed = int(cfg["seed"])
    x, y, labeled = resident_data(cfg, device)
    clients = build_federation(cfg).clients
    model = template_model(cfg, device)
    keys = list(model.state_dict())
    param_names = [n for n, _ in model.named_parameters()]
    with torch.no_grad():
        start = stack([m.content["arrays"] for m in cohort.messages], keys, device)

    # 1. labeled local models, tau_l steps each
    plans = [[labeled[c][idx.numpy()] for idx in local_plan(cfg, len(labeled[c]), "algorithm.tau_l", generator(seed, rnd, c, "train"))]
             for c in cohort.client_ids]
    local, loss_l = _train_from(model, start, param_names, plans, x, y, cohort, task_of(cfg).stacked_loss)

    # 2. pseudo-labels, client by client
    rows = [torch.as_tensor(clients[c].unlabeled, device=device) for c in cohort.client_ids]
    pseudo = []
    for k, r in enumerate(rows):
        own = lambda state: {n: t[k] for n, t in state.items()}  # noqa: E731
        p_global = F.softmax(predict(model, x[r], state=own(start)), dim=1)
        pseudo.append(pseudo_labels(cfg, p_global, F.softmax(predict(model, x[r], state=own(local)), dim=1)))

    # 3. the unlabeled models on a table of (plain, strong) pairs and their targets
    pairs, targets, plans, at = [], [], [], 0
    for c, r, pl in zip(cohort.client_ids, rows, pseudo):
        plans.append([])
        if not pl.accepted.any():
            continue
        gen = generator(seed, rnd, c, "strong")
        for idx in local_plan(cfg, len(r), "algorithm.tau_u", generator(seed, rnd, c, "unlabeled")):
            plain = x[r[idx.to(device)]]
            pairs.append(torch.stack([plain, strong_view(plain, gen)], dim=1))
            targets.append(torch.cat([pl.labels[idx, None].float(), pl.accepted[idx, None].float(), pl.kl_weight[idx, None], pl.teacher[idx]], dim=1))
            plans[-1].append(np.arange(at, at + len(idx)))
            at += len(idx)
    if pairs:
        unlabeled, loss_u = _train_from(model, start, param_names, plans, torch.cat(pairs), torch.cat(targets).to(device), cohort, _semi_supervised)
    else:
        unlabeled, loss_u = start, torch.zeros(len(rows))

    # 4. replies: w_G + (w_L - w_G) + (w_U - w_G), in the sequential client's key order
    stacks = {n: t.detach() for n, t in combine(start, local, unlabeled).items()}
    loss_l, loss_u = loss_l.cpu().tolist(), loss_u.cpu().tolist()
    replies = []
    for k, (c, r, pl) in enumerate(zip(cohort.client_ids, rows, pseudo)):
        state = OrderedDict((n, stacks[n][k]) for n in keys)
        metrics = fit_metrics(loss_l[k], loss_u[k] if plans[k] else 0.0, pl, y[r], len(labeled[c]))
        replies.append(RecordDict({"arrays": tensor_record(state, stacks, k), "metrics": MetricRecord(metrics)}))
    return replies


BATCHED: dict[type[ClientAlgorithm], Callable[[Cohort], list[RecordDict]]] = {
    FedAvgClient: local_sgd,
    FedProxClient: fedprox,
    FedLCClient: fedlc,
    FedLoGeClient: fedloge,
    FedLabelClient: fedlabel,
    FedNovaClient: fednova,
    FedDynClient: feddyn,
    ScaffoldClient: scaffold,
}
# evaluate forms, used where the algorithm also trains batched (BATCHED)
BATCHED_EVALUATE: dict[type[ClientAlgorithm], Callable[[Cohort], list[RecordDict]]] = {
    FedAvgClient: evaluate_received,
    FedProxClient: evaluate_received,
    FedLCClient: evaluate_received,
    FedNovaClient: evaluate_received,
    FedDynClient: evaluate_received,
    ScaffoldClient: evaluate_received,
}


def batched_form(algorithm: str, table: dict | None = None) -> Callable[[Cohort], list[RecordDict]] | None:
    """The batched form of the named algorithm's client half (`table`: BATCHED, or BATCHED_EVALUATE),
    or None (its messages go through the ClientApp one by one)."""
    from flowerbed.clients.registry import CLIENTS

    table = BATCHED if table is None else table
    return table.get(CLIENTS[algorithm]) if algorithm in CLIENTS else None
