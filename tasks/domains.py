"""Domain shift between clients: each client sees its images through its own fixed transform.

This stands in for feature-shift benchmarks (Digits-5, Office-Caltech10, DomainNet: one domain per
client) on embedded or cached data. Client k gets `names[k % len(names)]` of the run's
`partition.domains` list, applied to its training and local test images alike (never to the
balanced global test set). Every transform is a pure function of the client id and the images, so
all engines, processes and seeds see the same domain for a client.

Two families of transforms:
- on the standardised arrays as stored (`DOMAINS`, the default list): rotations, contrast
  inversion, additive noise and a box blur, which read the same on any image size;
- on pixels in [0, 1] (`CORRUPTIONS`), modelled on CIFAR-10-C's corruption families at a middle
  severity and written with torch/torchvision ops: the arrays are mapped back to pixels with the
  dataset's mean and std, corrupted, clipped and standardised again. Each client sees one family,
  so the label distribution is shared while the image statistics are not.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np
import torch

DOMAINS = ("identity", "rotate90", "invert", "noise", "blur", "rotate180")
CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "contrast", "jpeg", "fog", "pixelate", "brightness", "saturate")


def parse(names: str | Sequence[str] | None) -> tuple[str, ...]:
    """A `partition.domains` value ("jpeg+fog+...", "jpeg,fog,...", a list, or empty for the default)."""
    if not names:
        return DOMAINS
    items = re.split(r"[,+]", names) if isinstance(names, str) else list(names)
    return tuple(item.strip() for item in items if item.strip())


def unknown(names: Sequence[str]) -> list[str]:
    return [n for n in names if n not in DOMAINS + CORRUPTIONS]


def domain_of(client_id: int, names: Sequence[str] = DOMAINS) -> str:
    return names[client_id % len(names)]


def shift(x: np.ndarray, client_id: int, names: Sequence[str] = DOMAINS,
          scale: tuple[Sequence[float], Sequence[float]] | None = None) -> np.ndarray:
    """Images (n, c, h, w) as client `client_id` sees them.

    `scale` is the dataset's per-channel (mean, std); the pixel-space corruptions need it.
    """
    name = domain_of(client_id, names)
    if name in CORRUPTIONS:
        if scale is None:
            raise ValueError(f"domain {name!r} works on pixels and needs the dataset's mean and std")
        return _corrupt(x, name, client_id, scale)
    if name == "rotate90":
        return np.ascontiguousarray(np.rot90(x, 1, axes=(2, 3)))
    if name == "rotate180":
        return np.ascontiguousarray(np.rot90(x, 2, axes=(2, 3)))
    if name == "invert":  # data are standardised: negation inverts contrast around the mean
        return -x
    if name == "noise":  # the same noise on the same image every time: seeded by client and image
        rng = np.random.default_rng([client_id, len(x)])
        return (x + rng.normal(0.0, 0.5, x.shape)).astype(x.dtype)
    if name == "blur":
        return _box_blur(x)
    return x


def _box_blur(x: np.ndarray) -> np.ndarray:
    """3x3 mean filter with edge padding, per channel."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = x.shape[2:]
    return sum(padded[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)).astype(x.dtype) / 9.0


# -- pixel-space corruptions ------------------------------------------------------------------------
def _corrupt(x: np.ndarray, name: str, client_id: int, scale) -> np.ndarray:
    if len(x) == 0:
        return x
    mean = torch.tensor(scale[0], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(scale[1], dtype=torch.float32).view(1, -1, 1, 1)
    pixels = (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) * std + mean).clamp(0, 1)
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([client_id, len(x), CORRUPTIONS.index(name)]).generate_state(1)[0]))
    out = CORRUPT[name](pixels, gen).clamp(0, 1)
    return ((out - mean) / std).numpy().astype(x.dtype)


def _gaussian_noise(p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return p + 0.08 * torch.randn(p.shape, generator=gen)


def _gaussian_blur(p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    return F.gaussian_blur(p, kernel_size=5, sigma=1.0)


def _contrast(p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Pulled toward each image's mean over all its pixels and channels, factor 0.3 (CIFAR-10-C
    takes the mean per channel; one mean also keeps a grey image grey after any colour transform)."""
    mu = p.mean(dim=(1, 2, 3), keepdim=True)
    return (p - mu) * 0.3 + mu


def _jpeg(p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image saved as a JPEG of quality 15 and read back (Pillow's libjpeg)."""
    import io

    from PIL import Image

    out = []
    for image in (p * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buffer, format="JPEG", quality=15)
        decoded = np.asarray(Image.open(buffer), dtype=np.float32) / 255
        out.append(decoded.reshape(image.shape))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def _fog(p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Haze: a bright, smooth random field per image (bicubic 4x4 noise), blended in where it is thick."""
    n, _, h, w = p.shape
    field = torch.nn.functional.interpolate(torch.rand(n, 1, 4, 4, generator=gen), size=(h, w), mode="bicubic", align_corners=False)
    thickness = (0.35 + 0.4 * field).clamp(0, 1)
    return p * (1 - thickness) + thickness * (0.75 + 0.25 * field)


def _pixelate(p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    h, w = p.shape[2:]
    small = torch.nn.functional.interpolate(p, size=(max(1, h * 3 // 8), max(1, w * 3 // 8)), mode="area")
    return torch.nn.functional.interpolate(small, size=(h, w), mode="nearest")


def _brightness(p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return p + 0.3


def _saturate(p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Colours pushed away from grey (factor 3); single-channel images are left as they are."""
    grey = p.mean(dim=1, keepdim=True)
    return grey + (p - grey) * 3.0


CORRUPT: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise, "gaussian_blur": _gaussian_blur, "contrast": _contrast, "jpeg": _jpeg,
    "fog": _fog, "pixelate": _pixelate, "brightness": _brightness, "saturate": _saturate,
}
