"""Evaluation shared by the server (global test set) and the clients (local test sets)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from flowerbed.tasks.models import set_training

CPU_CHUNK_NUMEL = 1 << 18  # input values per inference batch on a CPU: activations stay in cache


def inference_batch_size(x: torch.Tensor, limit: int = 1024) -> int:
    """Rows per inference batch: `limit` on an accelerator; on a CPU the largest power of two that
    keeps about 2^18 input values (64 CIFAR images, 256 MNIST, 1024 digits). The first conv's
    activations of a 1024-image CIFAR batch (128 MB into 32 channels) overflow the caches and
    ReLU/max-pool turn memory-bound: 64-image batches infer 2-4x faster per image on one core.
    Powers of two keep oneDNN's blocking, so the logits match 1024-image batches bit for bit on
    the machines measured (each row is computed on its own in eval mode)."""
    if x.device.type != "cpu" or len(x) == 0:
        return limit
    rows = max(1, CPU_CHUNK_NUMEL // max(1, x[0].numel()))
    return min(limit, 1 << (rows.bit_length() - 1))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int | None = None, state: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Logits for `x`, in evaluation mode, in batches (`inference_batch_size` unless given);
    (0, classes) for no samples (a client with every label has no unlabeled set), so that softmax
    and argmax over classes still apply.

    `state`: parameters and buffers to run instead of the model's own (`torch.func.functional_call`),
    e.g. one client's slice of a batched engine's stacked weights.
    """
    was_training = model.training
    set_training(model, False)
    batch_size = batch_size or inference_batch_size(x)
    forward = model if state is None else (lambda chunk: functional_call(model, state, (chunk,)))
    logits = torch.cat([forward(x[i : i + batch_size]) for i in range(0, max(len(x), 1), batch_size)])
    set_training(model, was_training)
    return logits


def classification_metrics(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, float | list[float]]:
    """Loss, accuracy and per-class accuracy (NaN-free: absent classes report 0 and are skipped).

    No samples give loss and accuracy 0.0 with no per-class list: a placeholder, not a score; a mean
    over clients leaves such a client out (strategies/sampling.py, `has_test_samples`)."""
    if len(y) == 0:
        return {"loss": 0.0, "acc": 0.0}
    loss = nn.functional.cross_entropy(logits, y).item()
    correct = (logits.argmax(1) == y).cpu().numpy()
    labels = y.cpu().numpy()
    return {"loss": loss, "acc": float(correct.mean()), "per_class": per_class_accuracy(correct, labels, num_classes)}


def per_class_accuracy(correct: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    totals = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels, weights=correct.astype(float), minlength=num_classes)
    return [float(h / t) if t else 0.0 for h, t in zip(hits, totals)]


def group_accuracy(per_class: list[float], groups: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean per-class accuracy within each of the many/medium/few class groups."""
    acc = np.asarray(per_class)
    return {name: float(acc[ids].mean()) for name, ids in groups.items() if len(ids)}
