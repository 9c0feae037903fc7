"""The rows of the ablation table, and the brute-force check that none of them sees its target.

Four configurations train the same reconstruction setup and differ only in the predictor's mask
and the frames it sees (:data:`ABLATION_CONFIGURATIONS`)::

    Baseline      token-causal mask, all frames
    +Frame Mask   causal-frame mask, all frames
    +Fast-Slow    token-causal mask (over the fast/slow layout), fast/slow frames
    Full          timestamp-causal frame mask, fast/slow frames

:data:`LEAK_CONFIGURATIONS` are optional rows (``leak_rows``, never the default) that put back
one piece of the seed design each into Full, and so leak the future: its ``fast-slow`` mask,
its predictor's cross-attention to its own input (``tgt=x, memory=x``) and its targets (each
frame predicts the next position of the merged sequence, so the last slow frame predicts the
first fast one, a frame it sees). They are labelled, and shown beside Full.

Example:
    >>> [c.name for c in ABLATION_CONFIGURATIONS]
    ['Baseline', '+Frame Mask', '+Fast-Slow', 'Full']
    >>> [c.name for c in LEAK_CONFIGURATIONS]
    ['Leak: fast-slow mask', 'Leak: memory=x', 'Leak: next-position targets']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ABLATION_CONFIGURATIONS",
    "LEAK_CONFIGURATIONS",
    "AblationConfiguration",
    "configurations_for",
    "leak_free",
    "mask_label",
    "target_frames",
]

MAX_LEAK_CHECK_TOKENS = 8192
"""The leak check reads dense masks; longer masks are not checked (``leak_free`` is None)."""


@dataclass(frozen=True)
class AblationConfiguration:
    """One row of the ablation: its name, the reconstruction module's two switches, and for a
    row that reproduces the seed design, what of it comes back (and so what leaks).

    Attributes:
        name: the row's name.
        use_frame_causal_mask, use_fast_slow_frames: the reconstruction module's switches.
        mask: the predictor's mask by registry name, instead of the module's choice.
        memory_is_input: the predictor also cross-attends to its own input with the memory mask
            ``full``, as the seed's ``predictor(tgt=x, memory=x)`` did.
        next_position_targets: each layout frame predicts the next position of the merged
            sequence (the seed's targets), not the next frame of its own stream.
        leak: what leaks, for a seed-design row; None for the leak-free rows.
        compare_with: the leak-free row a seed-design row is shown beside.

    Example:
        >>> ABLATION_CONFIGURATIONS[3]
        AblationConfiguration(name='Full', use_frame_causal_mask=True, ...)
        >>> ABLATION_CONFIGURATIONS[3].leaks, LEAK_CONFIGURATIONS[0].leaks
        (False, True)
    """

    name: str
    use_frame_causal_mask: bool
    use_fast_slow_frames: bool
    mask: str | None = None
    memory_is_input: bool = False
    next_position_targets: bool = False
    leak: str | None = None
    compare_with: str | None = None

    @property
    def leaks(self) -> bool:
        """Whether this row reproduces a leak of the seed design."""
        return self.leak is not None

    @property
    def slug(self) -> str:
        """The name as a folder name: ``'+Frame Mask'`` -> ``'plus-frame-mask'``."""
        slug = self.name.lower().replace("+", "plus-").replace(": ", "-").replace("=", "-is-")
        return slug.replace(" ", "-")


ABLATION_CONFIGURATIONS: tuple[AblationConfiguration, ...] = (
    AblationConfiguration("Baseline", False, False),
    AblationConfiguration("+Frame Mask", True, False),
    AblationConfiguration("+Fast-Slow", False, True),
    AblationConfiguration("Full", True, True),
)
"""The seed design's four configurations, in table order."""

LEAK_CONFIGURATIONS: tuple[AblationConfiguration, ...] = (
    AblationConfiguration(
        "Leak: fast-slow mask", True, True, mask="fast-slow",
        leak="the seed's fast-slow mask: every fast frame sees every slow frame, later ones "
        "included, and slow frames see each other both ways",
        compare_with="Full",
    ),
    AblationConfiguration(
        "Leak: memory=x", True, True, memory_is_input=True,
        leak="the seed's predictor(tgt=x, memory=x): a cross-attention to its own input, given "
        "memory_mask=get_mask('full', ...) explicitly, reads every frame",
        compare_with="Full",
    ),
    AblationConfiguration(
        "Leak: next-position targets", True, True, next_position_targets=True,
        leak="the seed's targets: each frame predicts the next position of the merged "
        "sequence, so the last slow frame predicts the first fast one, a frame it sees",
        compare_with="Full",
    ),
)  # fmt: skip
"""Full with one piece of the seed design put back each; optional rows, labelled as leaking."""


def target_frames(layout: Any, next_position: bool = False) -> Tensor:
    """``[F]`` the original frame each layout frame's prediction targets, -1 where none.

    Args:
        layout: a ``FrameLayout``.
        next_position: the seed's targets (the frame at the next layout position) instead of
            the next frame of each frame's own stream.

    Example:
        >>> from flexframe.reconstruction.layout import FrameLayout
        >>> layout = FrameLayout.build(8, {"num_fast": 2, "num_slow": 2, "fast_stride": 1,
        ...                                "slow_stride": 4})
        >>> layout.frame_indices.tolist()
        [0, 4, 6, 7]
        >>> target_frames(layout).tolist(), target_frames(layout, next_position=True).tolist()
        ([4, -1, 7, -1], [4, 6, 7, -1])
    """
    frames, nxt = layout.frame_indices.cpu(), layout.next_index.cpu()
    if next_position:
        return torch.cat([frames[1:], frames.new_full((1,), -1)])
    return torch.where(nxt >= 0, frames[nxt.clamp(min=0)], torch.full_like(frames, -1))


def configurations_for(config: Any) -> tuple[AblationConfiguration, ...]:
    """The rows ``config`` runs: the four, then with ``leak_rows`` the seed-design rows whose
    change exists in this layout (next-position targets only where they differ).

    Example:
        >>> from flexframe.experiment.config import AblationConfig
        >>> len(configurations_for(AblationConfig())), len(configurations_for(
        ...     AblationConfig(leak_rows=True)))
        (4, 7)
    """
    rows = list(ABLATION_CONFIGURATIONS)
    if not config.leak_rows:
        return tuple(rows)
    from flexframe.reconstruction.layout import FrameLayout

    layout = FrameLayout.build(config.num_frames, config.fast_slow_settings(),
                               config.merge_strategy)  # fmt: skip
    for row in LEAK_CONFIGURATIONS:
        if row.mask == "fast-slow" and config.merge_strategy != "concat":
            continue  # the seed's fast-slow mask describes [slow | fast] only
        if row.next_position_targets and torch.equal(
            target_frames(layout), target_frames(layout, next_position=True)
        ):
            continue
        rows.append(row)
    return tuple(rows)


def mask_label(spec: Any) -> str:
    """The mask's name, with how tokens see each other within a frame when the mask says.

    Example:
        >>> from flexframe import get_mask
        >>> mask_label(get_mask("timestamp-causal", timestamps=[0, 1], num_patches_per_frame=2,
        ...                     within_frame="causal"))
        'timestamp-causal (token-causal within a frame)'
    """
    within = dict(spec.params).get("within_frame")
    if within is None or within == "full":
        return spec.name
    return f"{spec.name} (token-{within} within a frame)"


def leak_free(
    masks: Any | Sequence[Any],
    frame_indices: Tensor,
    target_frames: Tensor,
    tokens_per_frame: int,
) -> bool | None:
    """Whether no prediction can see its target: no query token of a layout frame whose target
    is frame ``g`` may reach a token of a frame at or after ``g``.

    ``masks`` are the attention masks a prediction reads through, each ``[F * P, F * P]``: the
    predictor's, and the stand-in LLM's or a cross-attention's where there are any. Layers pass
    on what they read, so a frame reaches what any frame it sees reaches: the check runs on the
    reflexive-transitive closure of the masks' union, frame by frame. Checked on dense masks, so
    it is skipped (``None``) above :data:`MAX_LEAK_CHECK_TOKENS` tokens, or when a mask is not
    ``[F * P, F * P]``.

    Args:
        masks: one ``MaskSpec`` or several.
        frame_indices: ``[F]`` the original frame of each layout frame.
        target_frames: ``[F]`` the original frame each layout frame predicts, -1 for none.
        tokens_per_frame: ``P``.

    Example:
        >>> from flexframe import get_mask
        >>> frames, targets = torch.tensor([0, 2, 1, 2]), torch.tensor([2, -1, 2, -1])
        >>> leak_free(get_mask("timestamp-causal", timestamps=[0, 2, 1, 2],
        ...                    num_patches_per_frame=1), frames, targets, 1)
        True
        >>> leak_free(get_mask("token-causal", seq_len=4), frames, targets, 1)  # 1 sees 2
        False
    """
    specs: list[Any] = list(masks) if isinstance(masks, (list, tuple)) else [masks]
    f, p = len(frame_indices), tokens_per_frame
    if any(s.q_len != f * p or s.kv_len != f * p for s in specs) or f * p > MAX_LEAK_CHECK_TOKENS:
        return None
    reach = torch.eye(f, dtype=torch.bool)
    for spec in specs:  # [F, F]: frame q sees a token of frame k
        reach |= spec.to_dense().view(f, p, f, p).any(dim=3).any(dim=1)
    for _ in range(max(1, f.bit_length())):  # squaring doubles the path length each time
        reach = (reach.float() @ reach.float()) > 0
    frames, targets = frame_indices.cpu(), target_frames.cpu()
    sees_target = reach & (frames[None, :] >= targets[:, None]) & (targets[:, None] >= 0)
    return not bool(sees_target.any())
