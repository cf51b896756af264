"""The task seam (tasks/task.py): the run's task is chosen by name and its loss is what trains."""

from __future__ import annotations

import copy

import torch

from flowerbed.simulations import config
from flowerbed.tasks.registry import TASKS, task_of
from flowerbed.tasks.task import Shape
from tests.conftest import flowerbed


def test_an_unknown_task_is_one_line_and_exit_2(capsys):
    assert flowerbed("run", "experiment=smoke", "task.name=segmentation") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task.name" in err[0] and "classification" in err[0]


def test_the_default_task_is_classification():
    cfg = config.load([], load_data=False)
    assert cfg["task.name"] == "classification" and task_of(cfg) is TASKS["classification"]


def test_the_batched_form_of_the_loss_runs_the_weights_it_is_given():
    """`stacked_loss` on parameters p equals `loss` of a model holding p (not the template's own)."""
    task = TASKS["classification"]
    cfg = {"model.name": "cnn", "seed": 0}
    template = task.build_model(cfg, Shape((1, 8, 8), 10))
    other = copy.deepcopy(template)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x, y = torch.randn(6, 1, 8, 8), torch.arange(6)
    params, buffers = dict(other.named_parameters()), dict(other.named_buffers())
    stacked = task.stacked_loss(template, params, buffers, x, y, {})
    assert torch.allclose(stacked, task.loss(other, x, y))
    assert not torch.allclose(stacked, task.loss(template, x, y))
