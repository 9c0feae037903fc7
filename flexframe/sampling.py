"""Fast/slow frame sampling: pick dense recent frames and sparse long-range frames from a clip.

Video models look at two time scales, after SlowFast Networks (Feichtenhofer et al., 2019):
*fast* frames are dense and end at the current frame ``T - 1`` (fine motion); *slow* frames are
sparse and spread over a long window that ends at the clip's end (long context). This module
samples both from a ``[B, T, C, H, W]`` clip, merges them into one sequence, and reports which
original frame each sampled or merged frame came from, so the ``timestamp-causal`` mask can keep
prediction leak-free.

Index rule (``T = num_frames``; every division is an exact integer floor division)::

    fast, if fast_stride * (num_fast - 1) <= T - 1:
        fast_idx[i] = T - 1 - fast_stride * (num_fast - 1 - i)      # exact fast_stride spacing
    fast, otherwise (spread over the whole clip; frames repeat when T < num_fast):
        fast_idx[i] = T - 1 - floor((num_fast - 1 - i) * T / num_fast)
    slow, with window W = min(T, slow_stride * num_slow) ending at the clip's end:
        slow_idx[i] = (T - W) + floor(i * W / num_slow)  # slow_stride apart if stride * num <= T

Both index tensors are ascending (non-decreasing where frames repeat) and the last fast index is
always ``T - 1``.

Presets (the seed design's tuning table, defined in ``flexframe.presets`` and re-exported
here; :func:`preset_for_num_frames` picks one)::

    name     clip length T    num_fast  num_slow  fast_stride  slow_stride
    short    T < 30           -         -         -            -            (all frames, no split)
    medium   30 <= T <= 60    8         8         1            4
    long     T > 60           16        8         2            8

Merge strategies (:func:`merge_fast_slow_frames`, :func:`merge_fast_slow_indices`, and the one
mechanism behind both, :func:`merge_order`)::

    concat      s0, s1, ..., s_{S-1}, f0, f1, ..., f_{F-1}     ([slow | fast], the fast-slow mask)
    interleave  s0, f0, s1, f1, ..., then the rest of the longer stream

Example:
    >>> video = torch.arange(16.0).view(1, 16, 1, 1, 1)  # pixel value = frame number
    >>> fast, slow, fast_idx, slow_idx = sample_fast_slow_frames(
    ...     video, num_fast=3, num_slow=2, return_indices=True
    ... )
    >>> fast_idx.tolist(), slow_idx.tolist()
    ([13, 14, 15], [8, 12])
    >>> merge_fast_slow_frames(fast, slow, "interleave").flatten().tolist()
    [8.0, 13.0, 12.0, 14.0, 15.0]
    >>> merge_fast_slow_indices(fast_idx, slow_idx, "interleave").tolist()
    [8, 13, 12, 14, 15]
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from flexframe._checks import check_choice, check_int
from flexframe._vocab import (
    DEFAULT_FAST_STRIDE,
    DEFAULT_NUM_FAST,
    DEFAULT_NUM_SLOW,
    DEFAULT_SLOW_STRIDE,
    MERGE_STRATEGIES,
)
from flexframe.presets import (
    FAST_SLOW_PRESETS,
    FastSlowPreset,
    get_fast_slow_preset,
    preset_for_num_frames,
)

__all__ = [
    "FAST_SLOW_PRESETS",
    "MERGE_STRATEGIES",
    "FastSlowPreset",
    "fast_slow_indices",
    "get_fast_slow_preset",
    "merge_fast_slow_frames",
    "merge_fast_slow_indices",
    "merge_order",
    "preset_for_num_frames",
    "sample_fast_slow_frames",
]

# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _check_merge_strategy(merge_strategy: object) -> str:
    return check_choice("merge_strategy", merge_strategy, MERGE_STRATEGIES)


def _check_clip(name: str, value: object, time_name: str) -> Tensor:
    """Check that ``value`` is a 5-D tensor with at least one frame; ``time_name`` names dim 1."""
    layout = f"[B, {time_name}, C, H, W]"
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(value)}")
    if value.dim() != 5:
        raise ValueError(
            f"{name} must be 5-D {layout}, got shape {list(value.shape)} ({value.dim()}-D)"
            + (f"; for a single clip use {name}.unsqueeze(0)" if value.dim() == 4 else "")
        )
    if value.shape[1] < 1:
        raise ValueError(
            f"{name} must have at least one frame ({time_name} >= 1), "
            f"got shape {list(value.shape)} as {layout}"
        )
    return value


def _check_same_dtype_and_device(
    first_name: str, first: Tensor, second_name: str, second: Tensor
) -> None:
    # torch.cat would silently promote mixed dtypes; a merged stream has exactly one dtype.
    if first.dtype != second.dtype:
        raise ValueError(
            f"{first_name} and {second_name} must have the same dtype, "
            f"got {first_name}.dtype={first.dtype} and {second_name}.dtype={second.dtype}"
        )
    if first.device != second.device:
        raise ValueError(
            f"{first_name} and {second_name} must be on the same device, "
            f"got {first_name}.device={first.device} and {second_name}.device={second.device}"
        )


# --------------------------------------------------------------------------------------------
# Indices
# --------------------------------------------------------------------------------------------


def _floor_mul_div(i: Tensor, a: int, n: int) -> Tensor:
    """``floor(i * a / n)`` for an int64 tensor ``0 <= i < n``, exact in integer arithmetic.

    Splitting ``a = q * n + r`` keeps every intermediate below ``max(a, n * n)``, so the product
    ``i * a`` (which overflows int64 once ``a * n > 2**63``) is never formed.
    """
    q, r = divmod(a, n)
    return i * q + torch.div(i * r, n, rounding_mode="floor")


def fast_slow_indices(
    num_frames: int,
    fast_stride: int = DEFAULT_FAST_STRIDE,
    slow_stride: int = DEFAULT_SLOW_STRIDE,
    num_fast: int = DEFAULT_NUM_FAST,
    num_slow: int = DEFAULT_NUM_SLOW,
    *,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Original frame indices of the fast and slow frames of a clip of ``num_frames`` frames.

    With ``T = num_frames``, fast frames end at the current frame ``T - 1``:

    - if ``fast_stride * (num_fast - 1) <= T - 1``:
      ``fast_idx[i] = T - 1 - fast_stride * (num_fast - 1 - i)``;
    - otherwise they spread over the whole clip:
      ``fast_idx[i] = T - 1 - floor((num_fast - 1 - i) * T / num_fast)`` (frames repeat when
      ``T < num_fast``).

    Slow frames cover a window of ``W = min(T, slow_stride * num_slow)`` frames ending at the
    clip's end, sampled uniformly from its start: ``slow_idx[i] = (T - W) + floor(i * W /
    num_slow)``. A long clip gets exactly ``slow_stride`` spacing over its most recent frames; a
    clip shorter than the window is covered whole and uniformly. All arithmetic is integer, so the
    indices are exact for any ``T`` that fits in int64.

    A data loader can call this before decoding, to decode only the frames it needs.

    Args:
        num_frames: Number of frames ``T`` in the clip, ``>= 1``.
        fast_stride: Spacing of the fast frames, ``>= 1``.
        slow_stride: Spacing of the slow frames, ``>= 1``.
        num_fast: Number of fast frames ``F``, ``>= 1``.
        num_slow: Number of slow frames ``S``, ``>= 1``.
        device: Device of the returned tensors (default: CPU).

    Returns:
        ``(fast_idx, slow_idx)``: int64 tensors of shapes ``[F]`` and ``[S]``, each ascending
        (non-decreasing where frames repeat), with values in ``[0, T)``.

    Raises:
        TypeError: An argument is not an int (bools and floats such as ``2.5`` are refused).
        ValueError: An argument is ``< 1``.

    Example:
        >>> fast_idx, slow_idx = fast_slow_indices(
        ...     16, fast_stride=1, slow_stride=4, num_fast=8, num_slow=8
        ... )
        >>> fast_idx.tolist()
        [8, 9, 10, 11, 12, 13, 14, 15]
        >>> slow_idx.tolist()  # W = min(16, 4 * 8) = 16, so spacing 16 / 8 = 2
        [0, 2, 4, 6, 8, 10, 12, 14]
        >>> fast_slow_indices(100, slow_stride=4, num_fast=2, num_slow=4)[1].tolist()
        [84, 88, 92, 96]
    """
    t = check_int("num_frames", num_frames, minimum=1)
    fast_stride = check_int("fast_stride", fast_stride, minimum=1)
    slow_stride = check_int("slow_stride", slow_stride, minimum=1)
    num_fast = check_int("num_fast", num_fast, minimum=1)
    num_slow = check_int("num_slow", num_slow, minimum=1)

    # steps_back[i] = num_fast - 1 - i: how many fast steps frame i lies before the current frame.
    steps_back = torch.arange(num_fast - 1, -1, -1, dtype=torch.int64, device=device)
    if fast_stride * (num_fast - 1) <= t - 1:
        fast_idx = (t - 1) - fast_stride * steps_back
    else:
        fast_idx = (t - 1) - _floor_mul_div(steps_back, t, num_fast)

    window = min(t, slow_stride * num_slow)
    slot = torch.arange(num_slow, dtype=torch.int64, device=device)
    slow_idx = (t - window) + _floor_mul_div(slot, window, num_slow)
    return fast_idx, slow_idx


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def sample_fast_slow_frames(
    video_frames: Tensor,
    fast_stride: int = DEFAULT_FAST_STRIDE,
    slow_stride: int = DEFAULT_SLOW_STRIDE,
    num_fast: int = DEFAULT_NUM_FAST,
    num_slow: int = DEFAULT_NUM_SLOW,
    return_indices: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gather the fast and slow frames of a ``[B, T, C, H, W]`` clip, by :func:`fast_slow_indices`.

    Only the sampled frames are copied (``index_select`` on dim 1 with indices built on the
    clip's device); the dtype and device of ``video_frames`` are kept.

    Args:
        video_frames: Clip of shape ``[B, T, C, H, W]`` with ``T >= 1``.
        fast_stride: Spacing of the fast frames, ``>= 1``.
        slow_stride: Spacing of the slow frames, ``>= 1``.
        num_fast: Number of fast frames ``F``, ``>= 1``.
        num_slow: Number of slow frames ``S``, ``>= 1``.
        return_indices: Also return the original frame indices.

    Returns:
        ``(fast, slow)`` of shapes ``[B, F, C, H, W]`` and ``[B, S, C, H, W]``; with
        ``return_indices=True``, ``(fast, slow, fast_idx, slow_idx)`` where ``fast_idx [F]`` and
        ``slow_idx [S]`` are int64 on the clip's device and ``fast[:, i] == video_frames[:,
        fast_idx[i]]``.

    Raises:
        TypeError: ``video_frames`` is not a tensor, or a stride/count is not an int.
        ValueError: ``video_frames`` is not 5-D or has no frames, or a stride/count is ``< 1``.

    Warns:
        UserWarning: the clip has fewer frames than ``num_fast`` or ``num_slow`` (frames
            repeat), or its dim 1 looks like a channel count and dim 2 like a frame count (a
            ``[B, C, T, H, W]`` clip by mistake).

    Example:
        >>> video = torch.arange(10.0).view(1, 10, 1, 1, 1)  # pixel value = frame number
        >>> fast, slow = sample_fast_slow_frames(video, fast_stride=2, num_fast=3, num_slow=2)
        >>> fast.shape, fast.flatten().tolist(), slow.flatten().tolist()
        (torch.Size([1, 3, 1, 1, 1]), [5.0, 7.0, 9.0], [2.0, 6.0])
    """
    _check_clip("video_frames", video_frames, "T")
    if not isinstance(return_indices, bool):
        raise TypeError(f"return_indices must be a bool, got {return_indices!r}")
    fast_idx, slow_idx = fast_slow_indices(
        video_frames.shape[1],
        fast_stride,
        slow_stride,
        num_fast,
        num_slow,
        device=video_frames.device,
    )
    _warn_about_the_clip(video_frames, fast_idx, slow_idx)
    fast = video_frames.index_select(1, fast_idx)
    slow = video_frames.index_select(1, slow_idx)
    if return_indices:
        return fast, slow, fast_idx, slow_idx
    return fast, slow


_CHANNEL_COUNTS = (1, 2, 3, 4)  # grey, grey+alpha, RGB, RGBA


def _warn_about_the_clip(video_frames: Tensor, fast_idx: Tensor, slow_idx: Tensor) -> None:
    """Warn when the clip looks like ``[B, C, T, H, W]`` or is too short for the frames asked
    for (frames then repeat, as documented, but a user should know)."""
    t, c = video_frames.shape[1], video_frames.shape[2]
    if t in _CHANNEL_COUNTS and c not in _CHANNEL_COUNTS:
        warnings.warn(
            f"video_frames has shape {list(video_frames.shape)}, read as [B, T, C, H, W]: T={t} "
            f"frames of C={c} channels. If it is [B, C, T, H, W], pass "
            "video_frames.transpose(1, 2)",
            UserWarning,
            stacklevel=3,
        )
    repeats = [
        f"{name}={n} (indices {idx.tolist()})"
        for name, n, idx in (("num_fast", fast_idx.numel(), fast_idx),
                             ("num_slow", slow_idx.numel(), slow_idx))
        if n > t
    ]  # fmt: skip
    if repeats:
        warnings.warn(
            f"the clip has T={t} frames, fewer than {' and '.join(repeats)}: frames repeat",
            UserWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------------------------


def merge_order(
    num_fast: int,
    num_slow: int,
    merge_strategy: str = "concat",
    *,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Which stream, and which frame of it, sits at each position of a merged sequence.

    This is the single definition of both merge layouts; :func:`merge_fast_slow_frames` and
    :func:`merge_fast_slow_indices` are built on it, so frames and their timestamps can never
    disagree. A reconstruction loss can use ``is_fast`` to tell the streams apart.

    - ``"concat"``: ``[slow | fast]`` (the layout of the ``fast-slow`` mask).
    - ``"interleave"``: ``s0, f0, s1, f1, ...`` starting with slow; when the counts differ the
      rest of the longer stream follows in order, so no frame is dropped.

    Args:
        num_fast: Number of fast frames ``F``, ``>= 1``.
        num_slow: Number of slow frames ``S``, ``>= 1``.
        merge_strategy: One of :data:`MERGE_STRATEGIES`.
        device: Device of the returned tensors (default: CPU).

    Returns:
        ``(is_fast, pos_in_stream)`` of shape ``[F + S]``: bool, True where the merged frame
        comes from the fast stream; int64, its position within its own stream. Each
        ``(stream, position)`` pair occurs exactly once.

    Raises:
        TypeError: A count is not an int.
        ValueError: A count is ``< 1``, or ``merge_strategy`` is unknown.

    Example:
        >>> is_fast, pos = merge_order(num_fast=3, num_slow=2, merge_strategy="interleave")
        >>> is_fast.tolist()
        [False, True, False, True, True]
        >>> pos.tolist()
        [0, 0, 1, 1, 2]
    """
    num_fast = check_int("num_fast", num_fast, minimum=1)
    num_slow = check_int("num_slow", num_slow, minimum=1)
    merge_strategy = _check_merge_strategy(merge_strategy)

    if merge_strategy == "concat":
        is_fast = torch.cat(
            [
                torch.zeros(num_slow, dtype=torch.bool, device=device),
                torch.ones(num_fast, dtype=torch.bool, device=device),
            ]
        )
        pos_in_stream = torch.cat(
            [
                torch.arange(num_slow, dtype=torch.int64, device=device),
                torch.arange(num_fast, dtype=torch.int64, device=device),
            ]
        )
        return is_fast, pos_in_stream

    paired = min(num_fast, num_slow)
    step = torch.arange(2 * paired, dtype=torch.int64, device=device)
    rest = torch.arange(paired, max(num_fast, num_slow), dtype=torch.int64, device=device)
    rest_is_fast = torch.full(rest.shape, num_fast > num_slow, dtype=torch.bool, device=device)
    is_fast = torch.cat([step % 2 == 1, rest_is_fast])
    pos_in_stream = torch.cat([step // 2, rest])
    return is_fast, pos_in_stream


def _merge_along(fast: Tensor, slow: Tensor, dim: int, merge_strategy: str) -> Tensor:
    """Merge two checked streams along ``dim`` in the order given by :func:`merge_order`."""
    num_slow = slow.shape[dim]
    is_fast, pos_in_stream = merge_order(
        fast.shape[dim], num_slow, merge_strategy, device=fast.device
    )
    # In the buffer [slow | fast], fast frame j sits at num_slow + j.
    source = torch.where(is_fast, pos_in_stream + num_slow, pos_in_stream)
    return torch.cat([slow, fast], dim=dim).index_select(dim, source)


def merge_fast_slow_frames(fast: Tensor, slow: Tensor, merge_strategy: str = "concat") -> Tensor:
    """Merge fast ``[B, F, C, H, W]`` and slow ``[B, S, C, H, W]`` frames into one sequence.

    The order is :func:`merge_order`'s: ``"concat"`` gives ``[slow | fast]``; ``"interleave"``
    gives ``s0, f0, s1, f1, ...`` and then the rest of the longer stream. Every input frame
    appears exactly once. Use :func:`merge_fast_slow_indices` for the merged frames' timestamps.

    Args:
        fast: Fast frames ``[B, F, C, H, W]``, ``F >= 1``.
        slow: Slow frames ``[B, S, C, H, W]``, ``S >= 1``, with the same ``B, C, H, W``, dtype
            and device as ``fast``.
        merge_strategy: One of :data:`MERGE_STRATEGIES`.

    Returns:
        Merged frames ``[B, F + S, C, H, W]`` with the inputs' dtype and device.

    Raises:
        TypeError: ``fast`` or ``slow`` is not a tensor.
        ValueError: ``fast`` or ``slow`` is not 5-D or has no frames; their ``B, C, H, W``,
            dtype or device disagree; or ``merge_strategy`` is unknown.

    Example:
        >>> fast = torch.tensor([10.0, 11.0, 12.0]).view(1, 3, 1, 1, 1)
        >>> slow = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1, 1)
        >>> merge_fast_slow_frames(fast, slow).flatten().tolist()
        [0.0, 1.0, 10.0, 11.0, 12.0]
        >>> merge_fast_slow_frames(fast, slow, "interleave").flatten().tolist()
        [0.0, 10.0, 1.0, 11.0, 12.0]
    """
    merge_strategy = _check_merge_strategy(merge_strategy)
    _check_clip("fast", fast, "F")
    _check_clip("slow", slow, "S")
    fast_bchw = (fast.shape[0], *fast.shape[2:])
    slow_bchw = (slow.shape[0], *slow.shape[2:])
    if fast_bchw != slow_bchw:
        raise ValueError(
            "fast [B, F, C, H, W] and slow [B, S, C, H, W] must agree on B, C, H and W, "
            f"got fast shape {list(fast.shape)} and slow shape {list(slow.shape)}"
        )
    _check_same_dtype_and_device("fast", fast, "slow", slow)
    return _merge_along(fast, slow, 1, merge_strategy)


def merge_fast_slow_indices(
    fast_idx: Tensor, slow_idx: Tensor, merge_strategy: str = "concat"
) -> Tensor:
    """Original frame index (timestamp) of each merged frame, in :func:`merge_order`'s order.

    Pass the indices returned by :func:`fast_slow_indices` or
    ``sample_fast_slow_frames(..., return_indices=True)`` and the same ``merge_strategy`` as
    :func:`merge_fast_slow_frames`; entry ``k`` is then the original frame of merged frame ``k``,
    which is what the ``timestamp-causal`` mask needs. Any 1-D tensors work (e.g. float seconds).

    Args:
        fast_idx: Fast-frame timestamps ``[F]``, ``F >= 1``.
        slow_idx: Slow-frame timestamps ``[S]``, ``S >= 1``, same dtype and device as
            ``fast_idx``.
        merge_strategy: One of :data:`MERGE_STRATEGIES`.

    Returns:
        Merged timestamps ``[F + S]`` with the inputs' dtype and device.

    Raises:
        TypeError: ``fast_idx`` or ``slow_idx`` is not a tensor.
        ValueError: ``fast_idx`` or ``slow_idx`` is not 1-D or is empty; their dtype or device
            disagree; or ``merge_strategy`` is unknown.

    Example:
        >>> fast_idx, slow_idx = fast_slow_indices(16, num_fast=3, num_slow=2)
        >>> fast_idx.tolist(), slow_idx.tolist()
        ([13, 14, 15], [8, 12])
        >>> merge_fast_slow_indices(fast_idx, slow_idx).tolist()
        [8, 12, 13, 14, 15]
        >>> merge_fast_slow_indices(fast_idx, slow_idx, "interleave").tolist()
        [8, 13, 12, 14, 15]
    """
    merge_strategy = _check_merge_strategy(merge_strategy)
    for name, value, size in (("fast_idx", fast_idx, "F"), ("slow_idx", slow_idx, "S")):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a 1-D torch.Tensor [{size}], got {type(value)}")
        if value.dim() != 1 or value.numel() == 0:
            raise ValueError(
                f"{name} must be a non-empty 1-D tensor [{size}], got shape {list(value.shape)}"
            )
    _check_same_dtype_and_device("fast_idx", fast_idx, "slow_idx", slow_idx)
    return _merge_along(fast_idx, slow_idx, 0, merge_strategy)
