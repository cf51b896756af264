"""Vision Transformers from timm, plain or with shallow visual prompts (VPT), for pFedPG.

`ViTFeatures` is the `features` part of a `Classifier`: a timm `VisionTransformer` without head,
plus K learnable prompt tokens inserted after the CLS token ([c, P, z], input layer only). With
prompts the backbone is frozen: only the prompt and the linear head train, and only the prompt
travels. Without prompts (`tiny-vit`, `vit-b16`) the same module is an ordinary trainable ViT,
which `flowerbed pretrain` and FedAvg full fine-tuning use.

Weights: `vit-b16` / `prompted-vit-b16` load ImageNet weights of timm's `vit_base_patch16_224`
from the local timm/Hugging Face cache, or from `model.weights=/path`; `tiny-vit` /
`prompted-tiny-vit` load the checkpoint `flowerbed pretrain` writes (default
`~/.cache/flowerbed/tiny-vit-<dataset>.pt`). A missing file is one ConfigError line.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from flowerbed.tasks.classifier import Classifier
from flowerbed.tasks.datasets import cache_dir
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.holdout import pretrained_part


class ViTFeatures(nn.Module):
    """CLS feature of a timm ViT, optionally with K prompt tokens after the CLS token."""

    def __init__(self, backbone: nn.Module, num_prompts: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        self.dim = int(backbone.embed_dim)
        self.img_size = tuple(backbone.patch_embed.img_size)
        self.in_chans = int(backbone.patch_embed.proj.in_channels)
        if num_prompts > 0:
            backbone.requires_grad_(False)  # frozen F*: prompts steer it, they do not change it
            self.prompt = nn.Parameter(init_prompt(num_prompts, self.dim))  # seeded by build_model
        else:
            self.prompt = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_chans:  # gray images into an RGB backbone
            x = x.expand(-1, self.in_chans, -1, -1)
        if tuple(x.shape[-2:]) != self.img_size:  # e.g. 32x32 CIFAR into ViT-B/16 at 224x224
            x = F.interpolate(x, size=self.img_size, mode="bilinear", align_corners=False)
        bb = self.backbone
        tokens = bb._pos_embed(bb.patch_embed(x))  # [c, z] with position embeddings
        if self.prompt is not None:
            prompt = self.prompt.unsqueeze(0).expand(len(x), -1, -1)
            tokens = torch.cat([tokens[:, :1], prompt, tokens[:, 1:]], dim=1)  # [c, P, z]
        tokens = bb.norm(bb.blocks(bb.norm_pre(tokens)))
        return tokens[:, 0]

    def train(self, mode: bool = True) -> ViTFeatures:
        super().train(mode)
        if self.prompt is not None:
            self.backbone.eval()  # a frozen backbone keeps inference behaviour (no dropout)
        return self


def init_prompt(num_prompts: int, dim: int) -> torch.Tensor:
    """VPT's uniform (Xavier-style) prompt initialisation."""
    bound = (6.0 / (num_prompts + dim)) ** 0.5
    return (torch.rand(num_prompts, dim) * 2 - 1) * bound


def tiny_backbone(input_shape: tuple[int, ...]) -> nn.Module:
    """4 blocks of width 64 and 4 heads; patch 2 below 16 px (8x8 digits), 4 below 32 px (28x28
    MNIST), else 8: a 4x4 grid on 32x32 CIFAR, so that with K=10 prompts a prompt-tuning step costs
    ~0.3 ms per image on one core (patch 4: 64 patches, ~4x as much), which is what lets the CPU
    presets run the paper's 100 rounds."""
    from timm.models.vision_transformer import VisionTransformer

    channels, size = input_shape[0], input_shape[-1]
    patch = 2 if size < 16 else 4 if size < 32 else 8
    if len(input_shape) != 3 or size % patch:
        allowed = f"needs square images with a side divisible by {patch}, not {input_shape}"
        raise ConfigError.invalid("model.name", "tiny-vit", allowed)
    return VisionTransformer(img_size=size, patch_size=patch, in_chans=channels, num_classes=0,
                             embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)


def tiny_checkpoint(cfg: dict) -> Path:
    """Where `flowerbed pretrain` keeps the tiny ViT for a dataset (or `model.weights`)."""
    given = str(cfg.get("model.weights") or "")
    if given:
        return Path(given).expanduser()
    return cache_dir({}) / f"tiny-vit-{cfg.get('dataset.name', 'digits')}.pt"


def load_tiny(backbone: nn.Module, cfg: dict) -> None:
    path = tiny_checkpoint(cfg)
    if not path.exists():
        dataset = cfg.get("dataset.name", "digits")
        raise ConfigError(f"model.weights={str(path)!r} does not exist: make it with `flowerbed pretrain model=tiny-vit "
                          f"dataset={dataset} partition.pretrain_fraction=0.5` (or set model.weights=/path)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    state = pretrained_part(saved, "backbone", "model.weights", path, cfg)
    try:
        backbone.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f"model.weights={str(path)!r} does not fit this tiny ViT ({str(err).splitlines()[0]})") from err


def vit_b16_backbone(cfg: dict | None) -> nn.Module:
    """timm's ViT-B/16 (224 px); pretrained from the local cache or `model.weights` when cfg is given."""
    import timm

    given = "random" if cfg is None else str(cfg.get("model.weights") or "")
    if given == "random":  # architecture only: tests, shape checks, timing runs without the weights
        return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    overlay = {"file": str(Path(given).expanduser())} if given else None
    if given and not Path(given).expanduser().exists():
        raise ConfigError.invalid("model.weights", given, "an existing vit_base_patch16_224 weights file (.safetensors/.pth), or random")
    try:
        return timm.create_model("vit_base_patch16_224", pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
    except Exception as err:  # offline without a cached file: the Hub's errors vary
        raise ConfigError(f"model.name={cfg.get('model.name')!r}: no pretrained vit_base_patch16_224 weights in the "
                          f"timm/Hugging Face cache and none reachable ({type(err).__name__}); set model.weights=/path") from err


def _classifier(backbone: nn.Module, num_prompts: int, num_classes: int) -> nn.Module:
    features = ViTFeatures(backbone, num_prompts)
    return Classifier(features, features.dim, num_classes)


def _num_prompts(cfg: dict | None) -> int:
    k = int((cfg or {}).get("model.prompts", 10))
    if k < 1:
        raise ConfigError.invalid("model.prompts", k, "an integer >= 1")
    return k


def tiny_vit(input_shape: tuple[int, ...], num_classes: int, cfg: dict | None = None) -> nn.Module:
    backbone = tiny_backbone(input_shape)
    if cfg is not None:
        load_tiny(backbone, cfg)
    return _classifier(backbone, 0, num_classes)


def prompted_tiny_vit(input_shape: tuple[int, ...], num_classes: int, cfg: dict | None = None) -> nn.Module:
    backbone = tiny_backbone(input_shape)
    if cfg is not None:
        load_tiny(backbone, cfg)
    return _classifier(backbone, _num_prompts(cfg), num_classes)


def vit_b16(input_shape: tuple[int, ...], num_classes: int, cfg: dict | None = None) -> nn.Module:
    return _classifier(vit_b16_backbone(cfg), 0, num_classes)


def prompted_vit_b16(input_shape: tuple[int, ...], num_classes: int, cfg: dict | None = None) -> nn.Module:
    return _classifier(vit_b16_backbone(cfg), _num_prompts(cfg), num_classes)


for _factory in (tiny_vit, prompted_tiny_vit, vit_b16, prompted_vit_b16):
    _factory.reads_config = True  # type: ignore[attr-defined]  # build_model passes the run config

MODELS = {"tiny-vit": tiny_vit, "prompted-tiny-vit": prompted_tiny_vit, "vit-b16": vit_b16, "prompted-vit-b16": prompted_vit_b16}
EMBED_DIMS = {"tiny-vit": 64, "prompted-tiny-vit": 64, "vit-b16": 768, "prompted-vit-b16": 768}
