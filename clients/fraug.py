"""FRAug's client half (Chen, Frikha, Krompass, Gu, Tresp, ICCV 2023): representation augmentation.

The model is FedBN's (its BatchNorm layers stay here, clients/fedbn.py). Two more networks work on
embeddings h = features(x), the input of the linear head:
- G, the shared embedding generator (tasks/fraug.py): noise z and a label y in, a client-agnostic
  embedding out; it arrives with the model, trains here, and is averaged by the server;
- the RTNet, this client's own (in `context.state`, never sent): it turns G's embedding g of label y
  into a client-specific one, RT(g, r, y) = r + MLP([g, onehot(y)]), a learned residual on a
  reference embedding r of this client (the real embedding of the same sample, or the client's
  running class mean of y).

Each local step takes one real mini-batch (x, y) and a batch of balanced labels u (the same
size, cycling over the classes), and makes three SGD steps in turn, as the authors' code does:
1. model: (1 - a) CE(head(h), y) + a/2 [CE(head(RT(G(z), h, y)), y) + CE(head(RT(G(z'), mu_u, u)), u)],
   the augmented embeddings computed without gradient, so that only the head learns from them;
   a = min(0.5, exp(gamma (t - T))) in round t of T (0-based t); with `feature_interpolation` each
   augmented embedding e is first mixed with its reference r, exp(gamma (t - T)) e + (1 - ...) r;
2. G: CE(head(G(z, u)), u) - lambda_G dist_G(G(z, u), mu_u): classifiable by the current head, yet
   away from this client's class means (the head is not stepped here);
3. RTNet: for both branches, -H(head(RT(g, r, y))) + lambda_RT dist_RT(RT(g, r, y), r): embeddings
   the head is unsure of (entropy H maximised), kept near the client's own (dist to the reference).
mu is an exponential moving average (momentum 0.3) of the real embeddings per class, updated from
every batch before it is used. Ablations: `fraug-no-rtnet` feeds G's embeddings to the head as they
are (no RTNet, no step 3); `fraug-no-generator` has nothing to augment with, so only step 1's real
term trains, which is FedBN's local training exactly.

Known from the paper (abstract and published overviews): the shared generator of noise and label,
averaged by the server; the local RTNet making its embeddings client-specific; the classifier
trained on real and augmented embeddings; local BatchNorm. The paper's body could not be read
here, so the loss terms, schedule and settings follow the authors' released code (HaokunChen245/
FRAug, Digits configuration), and these choices fill what neither settles for this codebase:
- dist_G is the mean squared error to the class means (Digits; PACS uses MMD to the real batch);
  dist_RT is the multi-bandwidth Gaussian-kernel MMD (5 bandwidths, factor 2, scale from the mean
  pairwise distance); lambda_G = lambda_RT = 1; G and RTNet lr 0.05, both with train.momentum;
  gamma = 0.002, so a = 0.5 throughout runs of a few hundred rounds or fewer.
- Local BatchNorm is FedBN's (weights, biases and statistics local); the code's Digits setting
  keeps only the running statistics local. G, BatchNorm included, is averaged (its Digits setting).
- The optimizers start afresh each round (the code keeps SGD momentum buffers across rounds).
- Step 3's real branch reuses step 1's embeddings h (train mode, before the step) instead of a
  second forward pass in eval mode after it.
- A batch of one sample is skipped (G's and RTNet's BatchNorm cannot train on it), as in the code.
- Feature interpolation is the code's option for natural images (its PACS and OfficeHome settings,
  gamma = 0.01 over its default 300 rounds, so gamma T = 3: 5% augmented in round 1, 50% at 77% of
  the run); off in its Digits setting and in `fraug-digits`, on in `fraug-cifar10-c` with gamma
  scaled to the preset's rounds (gamma T = 3). The latent size is half the feature size.
- The code's natural-image settings start from an ImageNet-pretrained ResNet-18, whose embeddings
  mean something from round 1; `fraug-cifar10-c` trains its small CNN from scratch (no weights can
  be downloaded here), where FRAug trails FedBN; from a `cnn_bn` pretrained on held-out CIFAR-10
  (`flowerbed pretrain`, `model.init`) it does not (docs/results/fraug.md).
- The class means and the RTNet (with its BatchNorm) are client state, next to the BatchNorm layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, Message
from torch import nn

from flowerbed.clients.base import ClientAlgorithm
from flowerbed.clients.core import batches_from, generator, sgd, sgd_step
from flowerbed.clients.fedbn import LocalBatchNorm
from flowerbed.tasks.fraug import EmbeddingGenerator, build_generator, with_prefix, without_prefix
from flowerbed.tasks.records import snapshot, tensors

RTNET_KEY, MEANS_KEY = "fraug/rtnet", "fraug/class_means"


class RTNet(nn.Module):
    """RT(g, r, y) = r + decode(encode([g, onehot(y)])): a client-specific residual on r."""

    def __init__(self, feature_dim: int, num_classes: int, latent_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encode = nn.Sequential(nn.Linear(feature_dim + num_classes, latent_dim), nn.BatchNorm1d(latent_dim), nn.ReLU())
        self.decode = nn.Sequential(nn.Linear(latent_dim, feature_dim), nn.BatchNorm1d(feature_dim))

    def forward(self, generated: torch.Tensor, reference: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(y, self.num_classes).to(generated.dtype)
        return reference + self.decode(self.encode(torch.cat([generated, onehot], dim=1)))


def mmd(a: torch.Tensor, b: torch.Tensor, kernels: int = 5, factor: float = 2.0) -> torch.Tensor:
    """Maximum mean discrepancy of two equal-sized batches under a sum of Gaussian kernels."""
    both = torch.cat([a, b])
    sq = both.pow(2).sum(1)
    d2 = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * both @ both.T).clamp_min(0)  # squared distances, no (n, n, d) tensor
    n = len(both)
    bandwidth = d2.detach().sum() / (n * n - n) / factor ** (kernels // 2)
    k = sum(torch.exp(-d2 / (bandwidth * factor**i)) for i in range(kernels))
    m = len(a)
    return k[:m, :m].mean() + k[m:, m:].mean() - k[:m, m:].mean() - k[m:, :m].mean()


def distance(kind: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return mmd(a, b) if kind == "mmd" else F.mse_loss(a, b)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    return -(F.softmax(logits, dim=1) * F.log_softmax(logits, dim=1)).sum(1).mean()


def frozen(head: nn.Linear, e: torch.Tensor) -> torch.Tensor:
    """The head's logits with its weights as constants: G's and RTNet's losses do not move it."""
    return F.linear(e, head.weight.detach(), head.bias.detach())


def ramp(gamma: float, server_round: int, rounds: int) -> float:
    """exp(gamma (t - T)), t the 0-based round: rises towards 1 at the end of the run."""
    return math.exp(gamma * (server_round - 1 - rounds))


class FRAugClient(LocalBatchNorm, ClientAlgorithm):
    def __init__(self, context) -> None:
        super().__init__(context)
        name = str(self.cfg["algorithm.name"])
        self.use_generator = name != "fraug-no-generator"
        self.use_rtnet = self.use_generator and name != "fraug-no-rtnet"

    # -- the client's own networks and statistics ----------------------------------------------
    def dims(self, model: nn.Module) -> tuple[int, int, int]:
        num_classes, feature_dim = model.classifier.weight.shape
        latent = int(self.cfg.get("algorithm.latent_dim", 0)) or max(1, feature_dim // 2)
        return feature_dim, num_classes, latent

    def generator_from(self, msg: Message, model: nn.Module) -> EmbeddingGenerator:
        feature_dim, num_classes, latent = self.dims(model)
        net = build_generator(feature_dim, num_classes, int(self.cfg["seed"]), latent)
        net.load_state_dict(without_prefix(tensors(msg.content["arrays"])))
        return net.to(self.device)

    def rtnet(self, model: nn.Module) -> RTNet:
        feature_dim, num_classes, latent = self.dims(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.cfg["seed"]) + 1 + self.client_id)
            net = RTNet(feature_dim, num_classes, latent)
        if RTNET_KEY in self.context.state:
            net.load_state_dict(self.context.state[RTNET_KEY].to_torch_state_dict())
        return net.to(self.device)

    def class_means(self, model: nn.Module) -> torch.Tensor:
        feature_dim, num_classes, _ = self.dims(model)
        if MEANS_KEY in self.context.state:
            return self.context.state[MEANS_KEY].to_torch_state_dict()["means"].to(self.device)
        return torch.zeros(num_classes, feature_dim, device=self.device)

    # -- one round -----------------------------------------------------------------------------
    def train(self, msg: Message):
        """The reply: the model without BatchNorm (clients/fedbn.py) and, under `generator.`, G."""
        content = super().train(msg)
        if self.use_generator:
            # added to the reply's tensor record: rebuilding it with ArrayRecord(...) would serialise the model
            for name, array in snapshot(with_prefix(self.trained_generator.state_dict())).items():
                content["arrays"][name] = array
        return content

    def fit(self, model: nn.Module, msg: Message) -> dict:
        cfg, d, rnd = self.cfg, self.data, self.server_round(msg)
        ratio = ramp(float(cfg["algorithm.aug_gamma"]), rnd, int(cfg["rounds"]))
        a = min(0.5, ratio)  # the augmented term's weight; capped so that real data keeps half
        g_net = self.generator_from(msg, model) if self.use_generator else None
        aug = Augmentation(cfg, model.classifier, self.class_means(model), g_net, self.rtnet(model) if self.use_rtnet else None,
                           generator(int(cfg["seed"]), rnd, self.client_id, "fraug"),
                           mix=ratio if cfg.get("algorithm.feature_interpolation", False) else 1.0)
        opt = sgd(model.parameters(), cfg)
        batches = batches_from(cfg, len(d.y_labeled), self.generator(rnd))
        totals = torch.zeros(5)
        for step, idx in enumerate(batches):
            if len(idx) < 2:
                continue
            idx = idx.to(self.device)
            x, y = d.x_labeled[idx], d.y_labeled[idx]
            u = (torch.arange(len(y), device=self.device) + ((rnd - 1) * len(batches) + step) * len(y)) % d.num_classes
            # 1. the model: real embeddings, and (head only) augmented ones
            model.train()
            h = model.features(x)
            real = F.cross_entropy(model.classifier(h), y)
            aug.update_means(h.detach(), y)
            sgd_step(opt, real if g_net is None else (1 - a) * real + a * aug.augmented_ce(h.detach(), y, u))
            # 2. the generator, 3. the RTNet
            totals += torch.stack([real.detach().cpu(), *aug.generator_step(u), *aug.rtnet_step(h.detach(), y, u)])

        self.keep_batchnorm(model)
        self.context.state[MEANS_KEY] = ArrayRecord({"means": aug.means.cpu()})
        if aug.rt is not None:
            self.context.state[RTNET_KEY] = ArrayRecord(aug.rt.cpu().state_dict())
        self.trained_generator = g_net.cpu() if g_net is not None else None
        n = max(len(batches), 1)
        metrics = {"train/loss": float(totals[0]) / n, "num-examples": len(d.y_labeled)}
        if g_net is not None:
            metrics.update({"fraug/generator_ce": float(totals[1]) / n, "fraug/generator_distance": float(totals[2]) / n})
        if aug.rt is not None:
            metrics.update({"fraug/rtnet_entropy": float(totals[3]) / n, "fraug/rtnet_distance": float(totals[4]) / n})
        return metrics


class Augmentation:
    """What a round trains next to the model: G (shared), the RTNet and the class means (this client's)."""

    def __init__(self, cfg: dict, head: nn.Linear, means: torch.Tensor, g_net: EmbeddingGenerator | None,
                 rt: RTNet | None, noise: torch.Generator, mix: float = 1.0) -> None:
        self.head, self.means, self.g_net, self.rt, self.noise = head, means, g_net, rt, noise
        self.momentum = float(cfg["algorithm.class_mean_momentum"])
        self.lambda_g, self.lambda_rt = float(cfg["algorithm.lambda_generator"]), float(cfg["algorithm.lambda_rtnet"])
        self.dist_g, self.dist_rt = str(cfg["algorithm.generator_distance"]), str(cfg["algorithm.rtnet_distance"])
        self.opt_g = sgd(g_net.parameters(), cfg, lr=float(cfg["algorithm.generator_lr"])) if g_net else None
        self.opt_rt = sgd(rt.parameters(), cfg, lr=float(cfg["algorithm.rtnet_lr"])) if rt else None
        self.zero = torch.zeros(2)
        self.mix = mix  # share of the augmented embedding in what the head sees (the rest: its reference)

    def update_means(self, h: torch.Tensor, y: torch.Tensor) -> None:
        """mu_c <- (1 - m) mu_c + m mean(h | y = c) for the classes in the batch."""
        onehot = F.one_hot(y, len(self.means)).to(h.dtype)
        count = onehot.sum(0).unsqueeze(1)
        rate = (count > 0).to(h.dtype) * self.momentum
        self.means = self.means * (1 - rate) + (onehot.T @ h / count.clamp_min(1)) * rate

    def augmented_ce(self, h: torch.Tensor, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Step 1's augmented term: the head on fixed augmented embeddings of labels y (reference h)
        and of the balanced labels u (reference the class means)."""
        with torch.no_grad():
            self.g_net.eval()
            g_real, g_uni = self.g_net.sample(y, self.noise), self.g_net.sample(u, self.noise)
            if self.rt is not None:  # (fraug-no-rtnet: G's embeddings as they are)
                self.rt.eval()
                g_real, g_uni = self.rt(g_real, h, y), self.rt(g_uni, self.means[u], u)
            if self.mix < 1.0:  # feature interpolation: early in the run, close to the real embeddings
                g_real = self.mix * g_real + (1 - self.mix) * h
                g_uni = self.mix * g_uni + (1 - self.mix) * self.means[u]
        return (F.cross_entropy(self.head(g_real), y) + F.cross_entropy(self.head(g_uni), u)) / 2

    def generator_step(self, u: torch.Tensor) -> torch.Tensor:
        """Step 2: G's embeddings classifiable by the head, away from this client's class means."""
        if self.g_net is None:
            return self.zero
        self.g_net.train()
        g = self.g_net.sample(u, self.noise)
        ce, dist = F.cross_entropy(frozen(self.head, g), u), distance(self.dist_g, g, self.means[u])
        sgd_step(self.opt_g, ce - self.lambda_g * dist)
        return torch.stack([ce.detach(), dist.detach()]).cpu()

    def rtnet_step(self, h: torch.Tensor, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Step 3: the RTNet makes embeddings the head is unsure of, near this client's own."""
        if self.rt is None:
            return self.zero
        self.g_net.eval()
        self.rt.train()
        with torch.no_grad():
            g_real, g_uni = self.g_net.sample(y, self.noise), self.g_net.sample(u, self.noise)
        pairs = ((self.rt(g_real, h, y), h), (self.rt(g_uni, self.means[u], u), self.means[u]))
        neg_entropy = sum(-entropy(frozen(self.head, t)) for t, _ in pairs) / 2
        closeness = sum(distance(self.dist_rt, t, ref) for t, ref in pairs) / 2
        sgd_step(self.opt_rt, neg_entropy + self.lambda_rt * closeness)
        return torch.stack([-neg_entropy.detach(), closeness.detach()]).cpu()
