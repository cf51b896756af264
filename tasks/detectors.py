"""Detectors from torchvision, built offline (`weights=None, weights_backbone=None`), each split
into backbone / neck / head by parameter name.

- `ssdlite` (default): SSDlite320 with a MobileNetV3-Large backbone (2.2M parameters at 3 classes);
  backbone = `backbone.features`, neck = `backbone.extra` (the extra feature layers), head = `head`.
- `fcos`, `retinanet`: a MobileNetV3-Small + FPN backbone (small enough for a CPU);
  backbone = `backbone.body`, neck = `backbone.fpn`, head = `head`.
- `retinanet-resnet18`: RetinaNet on ResNet-18 + FPN (19M): the larger, GPU-sized option.
- `fcos-lite0`: FCOS on timm's EfficientNet-Lite0 (strides 8, 16, 32) + FPN, the one ImageNet
  backbone to be had offline: `model.weights=<tf_efficientnet_lite0 .safetensors>` loads the
  backbone from that file (`load_backbone`); "" leaves it random like every other detector here.

All are built for a fixed square input of `image_size` pixels (a batch is one tensor) and with
`num_classes + 1` outputs: label 0 is background for SSD and unused by the sigmoid heads of FCOS and
RetinaNet, so one label convention (the dataset's label + 1) serves all (tasks/detection.py).
BatchNorm layers train (torchvision's default for a backbone without weights would freeze them).
Images go in as floats in [0, 1]; each model normalises them itself (its `transform`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from flowerbed.tasks.errors import ConfigError

PARTS = ("backbone", "neck", "head")
# Parameter-name prefixes of each part, per family.
_SSD_PARTS = {"backbone": ("backbone.features.",), "neck": ("backbone.extra.",), "head": ("head.",)}
_FPN_PARTS = {"backbone": ("backbone.body.",), "neck": ("backbone.fpn.",), "head": ("head.",)}


def _fixed_size(model: nn.Module, image_size: int) -> nn.Module:
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    t = model.transform
    model.transform = GeneralizedRCNNTransform(image_size, image_size, t.image_mean, t.image_std, size_divisible=1,
                                               fixed_size=(image_size, image_size))
    return model


def _ssdlite(num_classes: int, image_size: int) -> nn.Module:
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes + 1)
    return _fixed_size(model, image_size)


def _fpn_backbone(name: str) -> nn.Module:
    from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    if name == "resnet18":
        return resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5, returned_layers=[2, 3, 4],
                                   extra_blocks=LastLevelP6P7(256, 256), norm_layer=nn.BatchNorm2d)
    return mobilenet_backbone(backbone_name="mobilenet_v3_small", weights=None, fpn=True, trainable_layers=6,
                              returned_layers=[2, 3, 4], norm_layer=nn.BatchNorm2d)  # strides 8, 16, 32 (+ 64 pooled)


MOBILE_STRIDES = (8, 16, 32, 64)
RESNET_STRIDES = (8, 16, 32, 64, 128)


def _anchors(strides: tuple[int, ...], scale: float, sizes_per_level: int):
    """Anchors of `scale` x stride on each level (FCOS reads an anchor's size as its level's stride)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    sizes = tuple(tuple(scale * s * 2 ** (j / sizes_per_level) for j in range(sizes_per_level)) for s in strides)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0) if sizes_per_level > 1 else (1.0,),) * len(strides))


def _fcos(num_classes: int, image_size: int) -> nn.Module:
    from torchvision.models.detection import FCOS

    return FCOS(_fpn_backbone("mobilenet_v3_small"), num_classes + 1, min_size=image_size, max_size=image_size,
                anchor_generator=_anchors(MOBILE_STRIDES, 1.0, 1))


def _retinanet(num_classes: int, image_size: int, backbone: str = "mobilenet_v3_small") -> nn.Module:
    from torchvision.models.detection import RetinaNet

    strides = RESNET_STRIDES if backbone == "resnet18" else MOBILE_STRIDES
    return RetinaNet(_fpn_backbone(backbone), num_classes + 1, min_size=image_size, max_size=image_size,
                     anchor_generator=_anchors(strides, 4.0 if backbone == "resnet18" else 2.0, 3))


class TimmFPN(nn.Module):
    """A timm features-only network (`body`) and a torchvision FPN over its maps (`fpn`): the
    `backbone` torchvision's FCOS/RetinaNet expect (`out_channels`; maps strides 8 ... 64)."""

    def __init__(self, body: nn.Module, out_channels: int = 128) -> None:
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        super().__init__()
        self.body, self.out_channels = body, out_channels
        self.fpn = FeaturePyramidNetwork(body.feature_info.channels(), out_channels, extra_blocks=LastLevelMaxPool())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.fpn({str(i): f for i, f in enumerate(self.body(x))})


def _fcos_lite0(num_classes: int, image_size: int) -> nn.Module:
    import timm
    from torchvision.models.detection import FCOS

    body = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True, out_indices=(2, 3, 4))
    return FCOS(TimmFPN(body), num_classes + 1, min_size=image_size, max_size=image_size,
                image_mean=[0.5] * 3, image_std=[0.5] * 3,  # the ImageNet weights' inputs are in [-1, 1]
                score_thresh=0.05,  # boxes kept for scoring as COCO evaluations keep them (torchvision's FCOS: 0.2)
                anchor_generator=_anchors(MOBILE_STRIDES, 1.0, 1))


def load_backbone(model: nn.Module, name: str, path: str) -> None:
    """Load `path` (a tf_efficientnet_lite0 state dict as .safetensors) into `fcos-lite0`'s backbone;
    its classifier layers (conv_head, bn2, classifier) have no place in the detector and are left out."""
    if name != "fcos-lite0":
        raise ConfigError.invalid("model.weights", path, f"empty for model.name={name} (only fcos-lite0 loads a backbone file)")
    from pathlib import Path

    if not Path(path).expanduser().is_file():
        raise ConfigError.invalid("model.weights", path, "an existing tf_efficientnet_lite0 .safetensors file, or empty")
    from safetensors.torch import load_file

    body = model.backbone.body
    saved = load_file(str(Path(path).expanduser()))
    missing = [k for k in body.state_dict() if k not in saved]
    if missing:
        raise ConfigError.invalid("model.weights", path, f"tf_efficientnet_lite0 weights (no {missing[0]!r} in the file)")
    body.load_state_dict({k: saved[k] for k in body.state_dict()})


DETECTORS: dict[str, tuple[Callable[[int, int], nn.Module], dict[str, tuple[str, ...]]]] = {
    "ssdlite": (_ssdlite, _SSD_PARTS),
    "fcos": (_fcos, _FPN_PARTS),
    "retinanet": (_retinanet, _FPN_PARTS),
    "retinanet-resnet18": (lambda c, s: _retinanet(c, s, "resnet18"), _FPN_PARTS),
    "fcos-lite0": (_fcos_lite0, _FPN_PARTS),
}


def build_detector(name: str, num_classes: int, image_size: int, seed: int) -> nn.Module:
    """The detector `name` with seeded initial weights (the same on every engine and process)."""
    if name not in DETECTORS:
        raise ConfigError.invalid("model.name", name, "a detector: " + ", ".join(DETECTORS), DETECTORS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DETECTORS[name][0](num_classes, image_size)


def part_names(name: str, model: nn.Module) -> dict[str, list[str]]:
    """{backbone, neck, head} -> the names of the parameters *and* buffers of that part (state_dict
    keys), in state_dict order; every key lands in exactly one part."""
    prefixes = DETECTORS[name][1]
    parts: dict[str, list[str]] = {part: [] for part in PARTS}
    for key in model.state_dict():
        owners = [part for part in PARTS if key.startswith(prefixes[part])]
        if len(owners) != 1:
            raise ValueError(f"{name}: state key {key!r} belongs to {len(owners)} parts")
        parts[owners[0]].append(key)
    return parts


def is_detector(name: str) -> bool:
    return name in DETECTORS
