"""CreamFL's representation terms (tasks/representations.py) against hand-computed values."""

from __future__ import annotations

import math

import torch

from flowerbed.tasks.representations import aggregate, ensemble_weights, inter_modal_loss, intra_modal_loss


def test_ensemble_weights_match_a_hand_computed_case():
    """Two clients, two public items, global text g = [[1, 0], [0, 1]]. Client 0 represents item 0 as
    [1, 0] (its pair): s = 1 - log(e + 1); client 1 as [0, 1] (the other item's): s = 0 - log(1 + e).
    Item 1: both represent it as [0, 1]: equal scores, equal weights."""
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    uploads = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]])
    w = ensemble_weights(uploads, g, chunk=1)
    s0, s1 = 1 - math.log(math.e + 1), 0 - math.log(1 + math.e)
    expected0 = math.exp(s0) / (math.exp(s0) + math.exp(s1))
    assert math.isclose(float(w[0, 0]), expected0, rel_tol=1e-6) and math.isclose(float(w[1, 0]), 1 - expected0, rel_tol=1e-6)
    assert torch.allclose(w[:, 1], torch.tensor([0.5, 0.5]))
    assert torch.allclose(aggregate(uploads, w)[0], torch.tensor([expected0, 1 - expected0]))
    assert torch.allclose(aggregate(uploads), uploads.mean(0))


def test_chunks_do_not_change_the_weights():
    gen = torch.Generator().manual_seed(0)
    uploads = torch.nn.functional.normalize(torch.randn(3, 10, 4, generator=gen), dim=-1)
    g = torch.nn.functional.normalize(torch.randn(10, 4, generator=gen), dim=-1)
    assert torch.allclose(ensemble_weights(uploads, g, chunk=3), ensemble_weights(uploads, g, chunk=100))


def test_inter_modal_loss_is_cross_entropy_toward_the_pair():
    g = torch.eye(3)
    local = torch.tensor([[1.0, 0.0, 0.0]])
    loss = inter_modal_loss(local, g, torch.tensor([0]), temperature=0.5)
    assert math.isclose(float(loss), -math.log(math.exp(2) / (math.exp(2) + 2)), rel_tol=1e-6)
    assert inter_modal_loss(local, g, torch.tensor([1])) > loss


def test_intra_modal_loss_pulls_toward_the_global_and_away_from_the_start():
    local = torch.tensor([[1.0, 0.0]])
    toward, away = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert math.isclose(float(intra_modal_loss(local, toward, away, 0.5)), math.log(1 + math.exp(-2)), rel_tol=1e-6)
    assert intra_modal_loss(local, away, toward) > intra_modal_loss(local, toward, away)
