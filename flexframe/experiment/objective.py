"""What a run learns to predict, its loss, and how it is scored on the held-out clips.

Consecutive frames of real video are nearly equal, so the trivial predictor "next frame = this
frame" (copying) is hard to beat, and a model that predicts the next frame's features from
scratch does far worse. So by default (``predict_residual``) the model predicts the *change*:
its prediction for a layout frame is that frame's own features (never its target's) plus the
model's output times ``scale``, and an output of zero is exactly copying. ``scale``
(``normalize_targets``) is the root mean square of that change over the training clips, so the
model's output has unit scale and the training loss reads as a share of copying's (1.0 =
copying, with MSE). Held-out errors are plain MSEs of the features, whatever the objective.

Example:
    >>> import torch
    >>> from types import SimpleNamespace
    >>> ones = torch.ones(1, 2, 1, 1)  # [B, F, P, E]
    >>> out = SimpleNamespace(features=ones, predictions=ones, targets=0 * ones,
    ...                       target_mask=torch.tensor([[True, False]]))
    >>> Objective(residual=True, scale=(0.5, 1.0)).predictions(out).flatten().tolist()
    [1.5, 2.0]
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flexframe.experiment.configurations import target_frames

__all__ = ["HeldOutScores", "Objective", "evaluate"]


@dataclass(frozen=True)
class Objective:
    """What the model's output means and what it is trained on.

    Attributes:
        residual: the output is the change from each frame's own features (an output of 0 is
            copying); else the target features themselves.
        scale: the output of layout position ``f`` is multiplied by ``scale[f]``: with
            ``normalize_targets`` the root mean square over the training clips of what that
            position's output stands for (its change, for a residual), else 1. One number per
            position, because the streams differ: a slow frame's change spans 4 frames.
        next_position_targets: the seed's targets, the next layout position, instead of the
            next frame of each frame's own stream (a leaking row).
        loss_type: ``mse`` and ``smooth_l1`` on the scaled output, ``cosine`` on the
            predicted features.
        previous: with ``motion_scale``, the layout position of each position's previous frame
            in its own stream (-1 for none): the output of a clip's position is also multiplied
            by the root mean square of the change the model saw last there (its frame minus
            that previous frame, both past), so a still clip's prediction stays near copying
            and a fast one's may move far; ``scale`` is then fitted to the change over that.
        motion_floor: the least that last change counts as (a still frame's is 0).
    """

    residual: bool = True
    scale: tuple[float, ...] | float = 1.0
    next_position_targets: bool = False
    loss_type: str = "mse"
    previous: tuple[int, ...] | None = None
    motion_floor: float = 0.0

    def targets(self, out: Any) -> tuple[Tensor, Tensor]:
        """``[B, F, P, E]`` targets and ``[B, F]`` which positions have one."""
        if not self.next_position_targets:
            return out.targets, out.target_mask
        feats = out.features
        targets = torch.cat([feats[:, 1:], torch.zeros_like(feats[:, :1])], dim=1)
        has = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        has[:, -1] = False
        return targets, has

    def target_frames(self, layout: Any) -> Tensor:
        """``[F]`` the original frame each layout frame predicts, -1 for none."""
        return target_frames(layout, next_position=self.next_position_targets)

    def base(self, out: Any) -> Tensor:
        """``[B, F, P, E]`` what an output of zero predicts: each frame's own features (copying)
        for a residual, else zeros."""
        return out.features.float() if self.residual else torch.zeros_like(out.features.float())

    def motion(self, out: Any) -> Tensor | float:
        """``[B, F, 1, 1]`` the root mean square of each position's last change (its features
        minus its stream's previous frame's; 1 where it has none), or 1 without ``previous``."""
        if self.previous is None:
            return 1.0
        feats = out.features.float()
        prev = torch.tensor(self.previous, device=feats.device)
        has = (prev >= 0).view(1, -1, 1, 1)
        last = (feats - feats[:, prev.clamp(min=0)]).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return torch.where(has, last.clamp(min=self.motion_floor), torch.ones_like(last))

    def scales(self, out: Any) -> Tensor | float:
        """What multiplies ``[B, F, P, E]`` outputs: ``scale`` per position, times
        :meth:`motion` with ``previous``."""
        scale: Tensor | float = self.scale  # type: ignore[assignment]
        if isinstance(self.scale, tuple):
            scale = torch.tensor(self.scale, dtype=torch.float32,
                                 device=out.predictions.device).view(1, -1, 1, 1)  # fmt: skip
        return scale * self.motion(out) if self.previous is not None else scale

    def predictions(self, out: Any) -> Tensor:
        """``[B, F, P, E]`` float32: the predicted features of each frame's target."""
        return self.base(out) + self.scales(out) * out.predictions.float()

    def loss(self, out: Any) -> Tensor:
        """The training loss of the reconstruction module's outputs ``out``."""
        targets, has = self.targets(out)
        if self.loss_type == "cosine":
            pred = self.predictions(out)[has]
            return (1 - F.cosine_similarity(pred, targets[has].float(), dim=-1)).mean()
        wanted = (targets.float() - self.base(out)) / self.scales(out)
        loss = F.mse_loss if self.loss_type == "mse" else F.smooth_l1_loss
        return loss(out.predictions[has].float(), wanted[has])

    def fitted(
        self,
        model: nn.Module,
        clips: Tensor,
        batch_size: int,
        device: torch.device,
        autocast: torch.dtype | None = None,
    ) -> Objective:
        """This objective with ``scale`` fitted to ``clips``: for each layout position, the
        root mean square of what an output of 1 there stands for (the change from the frame,
        or the target itself, over :meth:`motion` with ``previous``). A position without a
        target, or whose target never changes, keeps 1. With ``previous``, ``motion_floor``
        is first set to a tenth of the root mean square last change over ``clips``.

        ``model`` is the run's :class:`~flexframe.experiment.models.TrainStep`; only its
        reconstruction module's features and targets are read.
        """
        fitting = self
        if self.previous is not None:
            outputs = self._outputs(model, clips, batch_size, device, autocast)
            last = [m for _, o in outputs if isinstance(m := self.motion(o), Tensor)]
            has = torch.tensor(self.previous) >= 0
            squares = torch.cat([m.flatten(1)[:, has].double().pow(2).cpu() for m in last])
            floor = 0.1 * float(squares.mean().sqrt()) if squares.numel() else 0.0
            fitting = dataclasses.replace(self, scale=1.0, motion_floor=floor)
        totals: Tensor | None = None
        counts: Tensor | None = None
        for _, out in self._outputs(model, clips, batch_size, device, autocast):
            targets, has = self.targets(out)
            with torch.no_grad():
                change = (targets.double() - self.base(out).double()) / fitting.scales(out)
                change = change.pow(2).sum(dim=(2, 3))
            change = (change * has).sum(dim=0).cpu()  # [F]
            seen = (has.sum(dim=0) * targets[0, 0].numel()).double().cpu()
            totals = change if totals is None else totals + change
            counts = seen if counts is None else counts + seen
        assert totals is not None and counts is not None
        rms = (totals / counts.clamp(min=1)).sqrt().tolist()
        scale = tuple(s if s > 0 and math.isfinite(s) else 1.0 for s in rms)
        return dataclasses.replace(fitting, scale=scale)

    @staticmethod
    def _outputs(
        model: nn.Module,
        clips: Tensor,
        batch_size: int,
        device: torch.device,
        autocast: torch.dtype | None,
    ) -> Any:
        """``(lo, outputs)`` of ``model`` on ``clips`` in batches, without gradients."""
        for lo in range(0, len(clips), batch_size):
            with torch.no_grad(), torch.autocast(device.type, autocast or torch.float32,
                                                 enabled=autocast is not None):  # fmt: skip
                _, out = model(clips[lo : lo + batch_size].to(device), return_outputs=True)
            yield lo, out


@dataclass
class HeldOutScores:
    """Held-out MSEs of one run (see :mod:`flexframe.experiment.results` for each)."""

    test_error: float
    copy_error: float
    last_frame_error: float
    last_frame_copy_error: float


def evaluate(
    model: nn.Module,
    objective: Objective,
    clips: Tensor,
    layout: Any,
    batch_size: int,
    device: torch.device,
    autocast: torch.dtype | None = None,
) -> HeldOutScores:
    """The held-out errors of ``model`` (a ``TrainStep``, maybe wrapped by DDP or FSDP2) with
    its ``objective`` on ``clips`` ``[M, T, C, H, W]``: sums of squared errors over every clip,
    divided once at the end.

    The positions of ``layout`` that predict frame ``T - 1`` give the last-frame errors. Under
    torchrun every rank evaluates all held-out clips (they are few): each rank then runs the
    same number of forward passes, which FSDP's collectives need, and gets the same numbers.
    """
    last = (objective.target_frames(layout) == clips.shape[1] - 1).to(device)  # [F]
    sums = torch.zeros(4, dtype=torch.float64)
    counts = torch.zeros(2, dtype=torch.float64)
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, autocast or torch.float32,
                                         enabled=autocast is not None):  # fmt: skip
        for lo in range(0, len(clips), batch_size):
            _, out = model(clips[lo : lo + batch_size].to(device), return_outputs=True)
            targets, m = objective.targets(out)
            pred = objective.predictions(out).double()
            tgt, feat = targets.double(), out.features.double()
            sums[0] += (pred[m] - tgt[m]).pow(2).sum().cpu()
            sums[1] += (feat[m] - tgt[m]).pow(2).sum().cpu()
            counts[0] += tgt[m].numel()
            sums[2] += (pred[:, last] - tgt[:, last]).pow(2).sum().cpu()
            sums[3] += (feat[:, last] - tgt[:, last]).pow(2).sum().cpu()
            counts[1] += tgt[:, last].numel()
    own, last_frame = (sums[:2] / counts[0]).tolist(), (sums[2:] / counts[1]).tolist()
    return HeldOutScores(own[0], own[1], last_frame[0], last_frame[1])
