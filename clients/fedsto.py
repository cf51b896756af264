"""FedSTO's client half (Kim et al., NeurIPS 2023, arXiv 2310.17097): self-training on unlabeled
images from a local EMA teacher, the backbone only in stage 1, every parameter with an
orthogonality regulariser in stage 2. The server half (warm-up, the stage schedule, the server's
supervised step) is strategies/fedsto.py; the paper's split of the detector is tasks/detectors.py.

Each local step: the teacher (no gradient, evaluation mode) detects on an unlabeled batch; its
boxes scoring at least `algorithm.pseudo_threshold` become the targets of the student's own
detection loss on a photometric strong view of the same images (boxes unchanged); images where the
teacher keeps no box are left out of the step, and a step left with fewer than two images is not
taken (BatchNorm in training mode needs two). After each step the teacher moves toward the
student: teacher <- rate * teacher + (1 - rate) * student, on every floating entry of the state
(BatchNorm statistics included; integer counters are copied).

Stage 1 (`fedsto-stage` 1 in the round's config): only backbone parameters are in the optimizer,
neck and head are put back exactly as received after the local steps (their BatchNorm statistics
would otherwise move), and only backbone entries are sent back. Stage 2: every parameter, plus
`algorithm.ortho_lambda` x SRIP (`srip`) over the conv weights.

Choices where the paper (as far as read: docs in /work/shared/docs/multimodal-detection.md e.2) is
silent, each listed:
- [NF] EMA rate `algorithm.ema_rate` 0.99 per local step (Efficient Teacher's 0.999 is for
  thousands of steps; a CPU round has tens).
- [NF] the teacher is reset to the received global model at every round (`algorithm.teacher_reset`
  true, the third-party reading of the paper's appendix); with false it persists across rounds as
  client state (`context.state`, written to the node's state-dir by clients/state.py, so it
  survives a resume and a SuperNode restart).
- [NF] one threshold, `algorithm.pseudo_threshold` 0.5: torchvision's detectors have no objectness
  branch, so Efficient Teacher's "uncertain" boxes (0.1-0.6, objectness-only loss) have no loss to
  go to and are dropped; no teacher-loss weight (the client's only loss is the pseudo-label loss,
  where a weight would act as the learning rate).
- [NF] the strong view: per image brightness and contrast factors in 1 +- 0.4 and Gaussian pixel
  noise of std 0.03 (photometric only, so the teacher's boxes stay valid); no geometric views.
- [NF] SRIP covers every Conv2d weight with groups = 1 (depthwise kernels mix no channels) and at
  least two rows and columns, through the smaller Gram matrix, with 2 power iterations from a
  fixed start; lambda `algorithm.ortho_lambda` 1e-3 (the third-party value), on clients and server.
- [NF] local work: `train.local_epochs` / `train.local_steps` over the unlabeled images, as every
  client half here.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Message
from torch import nn

from flowerbed.clients.base import ClientAlgorithm
from flowerbed.clients.core import batches_from, sgd
from flowerbed.tasks.detection import MIN_BATCH, detect, detection_loss, rows_of, train_steps
from flowerbed.tasks.detectors import part_names
from flowerbed.tasks.orthogonality import with_orthogonality
from flowerbed.tasks.records import snapshot
from flowerbed.tasks.voc import PAD

TEACHER = "fedsto/teacher"
STRONG_FACTOR, STRONG_NOISE = 0.4, 0.03


# -- the teacher ---------------------------------------------------------------------------------
@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, rate: float) -> None:
    """teacher <- rate * teacher + (1 - rate) * student on floating entries; others copied."""
    for t, s in zip(teacher.state_dict().values(), student.state_dict().values()):
        if t.is_floating_point():
            t.mul_(rate).add_(s.detach(), alpha=1 - rate)
        else:
            t.copy_(s)


def strong_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """uint8 images -> float images in [0, 1] with per-image brightness, contrast and noise."""
    f = x.float() / 255
    n = len(f)
    bright = 1 + STRONG_FACTOR * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
    contrast = 1 + STRONG_FACTOR * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
    mean = f.mean(dim=(1, 2, 3), keepdim=True)
    f = (f - mean) * contrast.to(f) + mean * bright.to(f)
    return (f + STRONG_NOISE * torch.randn(f.shape, generator=gen).to(f)).clamp(0, 1)


def pseudo_label_loss(teacher: nn.Module, threshold: float, gen: torch.Generator, counts: dict):
    """The student's loss on the teacher's confident boxes of the batch, on the strong view."""

    def loss(model: nn.Module, x: torch.Tensor, _y: torch.Tensor) -> torch.Tensor | None:
        rows = rows_of(detect(teacher, x), threshold).to(x.device)
        keep = (rows[:, :, 0] != PAD).any(dim=1)
        counts["images"] += len(x)
        counts["kept"] += int(keep.sum())
        counts["boxes"] += int((rows[:, :, 0] != PAD).sum())
        if int(keep.sum()) < MIN_BATCH:
            return None
        return detection_loss(model, strong_view(x[keep], gen), rows[keep])

    return loss


class FedSTOClient(ClientAlgorithm):
    @staticmethod
    def applies_to(setting: dict) -> bool:
        """For the leaderboard (experiments/leaderboard.py): detection settings only."""
        return setting.get("task.name") == "detection"

    def fit(self, model: nn.Module, msg: Message) -> dict:
        cfg, d, rnd = self.cfg, self.data, self.server_round(msg)
        stage = int(msg.content["config"].get("fedsto-stage", 2))
        ortho = float(msg.content["config"].get("fedsto-ortho", 0.0))
        parts = part_names(str(cfg["model.name"]), model)
        sent = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in parts["backbone"]}
        teacher = self.teacher(model)
        trained = [p for n, p in model.named_parameters() if stage == 2 or n in set(parts["backbone"])]
        counts = {"images": 0, "kept": 0, "boxes": 0}
        loss_fn = with_orthogonality(pseudo_label_loss(teacher, float(cfg["algorithm.pseudo_threshold"]),
                                                       self.generator(rnd, "strong"), counts), ortho if stage == 2 else 0.0)
        batches = batches_from(cfg, len(d.x_unlabeled), self.generator(rnd))
        rate = float(cfg["algorithm.ema_rate"])
        loss, steps = train_steps(model, d.x_unlabeled, d.y_unlabeled, batches, sgd(trained, cfg), loss_fn,
                                  lambda: ema_update(teacher, model, rate))
        if stage == 1:
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    if k in sent:
                        v.copy_(sent[k])
        self.context.state[TEACHER] = ArrayRecord({k: v.detach().cpu() for k, v in teacher.state_dict().items()})
        self._stage_keys = parts["backbone"] if stage == 1 else None
        return {"train/loss": loss, "fedsto/steps": steps, "fedsto/kept_images": counts["kept"] / max(counts["images"], 1),
                "fedsto/boxes_per_image": counts["boxes"] / max(counts["kept"], 1), "num-examples": len(d.x_unlabeled)}

    def teacher(self, model: nn.Module) -> nn.Module:
        """The EMA teacher: the received model at a reset (or the first time), else the kept one."""
        teacher = self.new_model()
        if TEACHER in self.context.state and not bool(self.cfg["algorithm.teacher_reset"]):
            teacher.load_state_dict(self.context.state[TEACHER].to_torch_state_dict())
        else:
            teacher.load_state_dict(model.state_dict())
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    def reply_arrays(self, model: nn.Module) -> ArrayRecord:
        keys = getattr(self, "_stage_keys", None)
        if keys is None:
            return super().reply_arrays(model)
        state = model.state_dict()
        return snapshot({k: state[k] for k in keys})
