"""Models build for every input size they claim, and BatchNorm buffers travel with the weights."""

import pytest
import torch
from flwr.app import ArrayRecord

from flowerbed.tasks.models import MODELS, build_model


@pytest.mark.parametrize("name", ["cnn", "cnn_bn", "resnet8", "resnet18"])
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


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (2, 5, 9, 7)])
def test_inference_max_pool_is_torch_s_max_pool_bit_for_bit(k, shape):
    """The slice fast path (no autograd) and torch's kernel agree exactly, ties and NaN included;
    with autograd on, the module is torch's kernel, so training is unchanged."""
    from torch import nn

    from flowerbed.tasks.models import MaxPool2d

    x = torch.randint(0, 3, shape).float()  # many ties
    x[0, 0, 0, 0] = float("nan")
    with torch.no_grad():
        assert torch.equal(MaxPool2d(k)(x).nan_to_num(-7.0), nn.MaxPool2d(k)(x).nan_to_num(-7.0))
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    MaxPool2d(k)(a).nan_to_num(0.0).sum().backward()
    nn.MaxPool2d(k)(b).nan_to_num(0.0).sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_predict_gives_the_same_logits_in_cache_sized_batches():
    from flowerbed.tasks.metrics import inference_batch_size, predict

    model = build_model("cnn", (3, 32, 32), 10, seed=0)
    x = torch.randn(150, 3, 32, 32)
    assert inference_batch_size(x) == 64 and inference_batch_size(x[:, :1, :28, :28]) == 256 and inference_batch_size(x[:, :1, :8, :8]) == 1024
    logits = predict(model, x)
    assert torch.allclose(logits, predict(model, x, batch_size=1024), rtol=0, atol=1e-6)
    assert torch.equal(logits, predict(build_model("cnn", (3, 32, 32), 10, seed=1), x, state=model.state_dict()))
    assert model.training  # predict restores the mode it found
