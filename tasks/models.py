"""Models by name. Every model is `classifier(features(x))`, so that algorithms that treat the
head apart from the body (FedRep, FedBABU, FedLoGe) find both under the same names."""

from __future__ import annotations

import copy
import functools
import math
import weakref
from typing import Callable

import torch
from torch import nn

from flowerbed.tasks import plugins, vit
from flowerbed.tasks.classifier import Classifier
from flowerbed.tasks.config_key import config_key
from flowerbed.tasks.errors import ConfigError


@functools.lru_cache(maxsize=16)
def resolve_device(name: str) -> torch.device:
    """`train.device` as a torch device: `auto` is the GPU when there is one. The server's central
    evaluation and the clients read it the same way, so `cuda:1` means GPU 1 for both."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class MaxPool2d(nn.MaxPool2d):
    """`nn.MaxPool2d(k)` (stride k, no padding) with an exact fast path for inference.

    On CPUs torch's NCHW max-pool kernel costs more than the convolutions around it (about
    0.4 ms per 32x32x32 activation map on one core, over half of the small CNN's inference
    time). Without autograd the same maxima come from k*k strided slices, about 9x faster; a
    maximum is exact, so the logits are bit for bit those of `nn.MaxPool2d`. Training keeps
    torch's kernel: its backward routes ties to the first maximum, slices would split them.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        if (torch.is_grad_enabled() and x.requires_grad) or not isinstance(k, int) or self.stride != k or self.padding \
                or self.dilation != 1 or self.ceil_mode or self.return_indices:
            return super().forward(x)
        h, w = x.shape[-2] // k * k, x.shape[-1] // k * k
        out = None
        for i in range(k):
            for j in range(k):
                part = x[..., i:h:k, j:w:k]
                out = part if out is None else torch.maximum(out, part)
        return out


def small_cnn(input_shape: tuple[int, ...], num_classes: int, batchnorm: bool = False) -> Classifier:
    """Two 3x3 conv blocks and a hidden layer; fits 8x8 digits and 28x28/32x32 images.

    `batchnorm=True` (`cnn_bn`) puts a BatchNorm2d after each convolution, for the algorithms that
    keep BatchNorm on the client (FedBN, FRAug); the hidden layer has none, so that a last batch of
    one sample still trains.
    """
    channels, height = input_shape[0], input_shape[1]
    pool = 2 if height >= 8 else 1
    norm = (lambda c: [nn.BatchNorm2d(c)]) if batchnorm else (lambda c: [])  # noqa: E731
    features = nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), *norm(32), nn.ReLU(), MaxPool2d(pool),
        nn.Conv2d(32, 64, 3, padding=1), *norm(64), nn.ReLU(), MaxPool2d(pool),
        nn.AdaptiveAvgPool2d(4 if height >= 16 else 2), nn.Flatten(),
        nn.Linear(64 * (16 if height >= 16 else 4), 128), nn.ReLU(),
    )
    return Classifier(features, 128, num_classes)


def mlp(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    features = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 128), nn.ReLU())
    return Classifier(features, 128, num_classes)


def logistic_regression(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    """The model of FedProx's Synthetic experiments."""
    return Classifier(nn.Flatten(), math.prod(input_shape), num_classes)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def cifar_resnet(blocks: list[int], widths: list[int]) -> Callable[[tuple[int, ...], int], Classifier]:
    """A CIFAR-style ResNet: 3x3 stem, no max-pool, stride 2 at each stage after the first."""

    def build(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
        layers: list[nn.Module] = [
            nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        ]
        c_in = widths[0]
        for stage, (n, width) in enumerate(zip(blocks, widths)):
            for i in range(n):
                layers.append(BasicBlock(c_in, width, 2 if stage > 0 and i == 0 else 1))
                c_in = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        return Classifier(nn.Sequential(*layers), c_in, num_classes)

    return build


def pfl_cnn(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    """The CNN of pfl-research's CIFAR-10 benchmark (1.63M parameters on 3x32x32): two unpadded 3x3
    convs (32, 64), a 2x2 max-pool, dropout 0.25, a 128-unit layer, dropout 0.5, Xavier-uniform weights."""
    if len(input_shape) != 3 or min(input_shape[1:]) < 6:
        raise ConfigError.invalid("model.name", "pfl_cnn", f"needs images of at least 6x6; this dataset's samples have shape {input_shape}")
    channels, height, width = input_shape
    features = nn.Sequential(
        nn.Conv2d(channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), MaxPool2d(2), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(64 * ((height - 4) // 2) * ((width - 4) // 2), 128), nn.ReLU(), nn.Dropout(0.5),
    )
    model = Classifier(features, 128, num_classes)
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
    return model


MODELS: dict[str, Callable[[tuple[int, ...], int], nn.Module]] = {
    "cnn": small_cnn,
    "cnn_bn": lambda shape, classes: small_cnn(shape, classes, batchnorm=True),
    "mlp": mlp,
    "logreg": logistic_regression,
    "resnet8": cifar_resnet([1, 1, 1], [16, 32, 64]),
    "resnet18": cifar_resnet([2, 2, 2, 2], [64, 128, 256, 512]),
    "resnet34": cifar_resnet([3, 4, 6, 3], [64, 128, 256, 512]),
    "pfl_cnn": pfl_cnn,
    **vit.MODELS,  # tiny-vit, prompted-tiny-vit, vit-b16, prompted-vit-b16 (pFedPG)
}


_MODULES: "weakref.WeakKeyDictionary[nn.Module, tuple[list[nn.Module], bool]]" = weakref.WeakKeyDictionary()


def set_training(model: nn.Module, mode: bool = True) -> nn.Module:
    """`model.train(mode)`, cheaply: Module.train walks the module tree through Module.__setattr__,
    which costs more than the local step of a small model. Where no module has its own `train`, the
    flags are set directly, and not at all when they already are `mode` (the usual case from one
    call to the next); a module with its own `train` (a frozen ViT backbone) gets `model.train`."""
    known = _MODULES.get(model)
    if known is None:
        modules = list(model.modules())
        known = _MODULES.setdefault(model, (modules, all(type(m).train is nn.Module.train for m in modules)))
    modules, plain = known
    if not plain:
        model.train(mode)
    elif any(m.training is not mode for m in modules):
        for m in modules:
            m.__dict__["training"] = mode  # what Module.train sets, module by module
    return model


BATCHNORM_RECORD = "batchnorm"  # FedBN's message record with the run's starting BatchNorm layers (model.init)


def batchnorm_keys(state_keys) -> list[str]:
    """The state-dict keys of every BatchNorm layer: its affine weight and bias and its running
    statistics. A layer is recognised by its `running_mean` buffer, so the server finds the same
    keys in an ArrayRecord as a client finds in its model, without building either."""
    keys = list(state_keys)
    layers = {k[: -len("running_mean")] for k in keys if k.endswith("running_mean")}
    return [k for k in keys if k[: k.rfind(".") + 1] in layers]


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder `model.name` names: one of MODELS, your own `package.module:function(input_shape,
    num_classes)` returning an `nn.Module`, or a `flowerbed.models` entry point (tasks/plugins.py)."""
    builder = plugins.find("model.name", name, MODELS)
    if not callable(builder):
        raise ConfigError.invalid("model.name", name, f"a function (input_shape, num_classes) -> torch.nn.Module; got {type(builder).__name__}")
    return builder


def check_fits(model: nn.Module, name: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    """One line, before any work, if a model (your own, typically) cannot take this dataset's samples
    or does not give one logit per class: otherwise the run would fail mid-way with torch's traceback."""
    x = torch.zeros((2, *input_shape))
    try:
        with torch.no_grad():
            logits = model.eval()(x)
    except Exception as err:  # whatever the user's forward raises
        detail = f"{type(err).__name__}: {err}".splitlines()[0]
        raise ConfigError.invalid("model.name", name, f"a model that takes this dataset's samples of shape {tuple(input_shape)} ({detail})") from err
    finally:
        model.train()
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, num_classes):
        got = tuple(logits.shape[1:]) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConfigError.invalid("model.name", name, f"a model that gives {num_classes} logits per sample (this one gives {got})")


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, seed: int, cfg: dict | None = None) -> nn.Module:
    """The named model, its initial weights a function of the seed alone (and of pretrained weights
    for models that read the run config `cfg`, e.g. `model.weights`).

    Each new model is a copy of one built per process and arguments: building (module init, a
    forked and reseeded RNG, maybe reading pretrained weights) costs more than copying."""
    factory = model_builder(name)
    if name in ("cnn", "cnn_bn") and len(input_shape) != 3 or name.startswith("resnet") and len(input_shape) != 3:
        raise ConfigError.invalid("model.name", name, f"needs image inputs; this dataset's samples have shape {input_shape}")
    given = config_key(cfg) if cfg is not None and getattr(factory, "reads_config", False) else None
    return copy.deepcopy(_prototype(name, tuple(input_shape), num_classes, seed, given))


@functools.lru_cache(maxsize=2)
def _prototype(name: str, input_shape: tuple[int, ...], num_classes: int, seed: int, cfg: tuple | None) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        factory = model_builder(name)
        model = factory(input_shape, num_classes, dict(cfg)) if cfg is not None else factory(input_shape, num_classes)
    if not isinstance(model, nn.Module):
        raise ConfigError.invalid("model.name", name, f"a builder that returns a torch.nn.Module (it returned {type(model).__name__})")
    return model
