"""Models build for every input size they claim, and BatchNorm buffers travel with the weights."""

import pytest
import torch
from flwr.app import ArrayRecord

from tasks.models import MODELS, build_model


@pytest.mark.parametrize("name", ["cnn", "resnet8", "resnet18"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_image_models_map_inputs_to_class_logits(name, shape):
    model = build_model(name, shape, 10, seed=0)
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_flat_models_take_feature_vectors():
    for name in ("mlp", "logreg"):
        assert build_model(name, (60,), 10, seed=0)(torch.zeros(3, 60)).shape == (3, 10)


def test_initial_weights_depend_only_on_the_seed():
    a, b, c = (build_model("cnn", (1, 8, 8), 10, seed=s).state_dict() for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_batchnorm_buffers_travel_in_the_array_record():
    model = build_model("resnet8", (3, 32, 32), 10, seed=0)
    model.train()
    model(torch.randn(8, 3, 32, 32))  # moves running statistics
    record = ArrayRecord(model.state_dict())
    assert any(k.endswith("running_mean") for k in record)
    other = build_model("resnet8", (3, 32, 32), 10, seed=1)
    other.load_state_dict(record.to_torch_state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[key]), key


def test_registry_lists_the_promised_models():
    assert {"cnn", "resnet8", "resnet18", "resnet34"} <= set(MODELS)
