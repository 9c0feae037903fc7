"""The layout of a prompt row: reading and checking ``frame_ids``, one integer per token.

``flexframe.masks.prompt`` builds its masks from what this module reads: :data:`TEXT` (-1) for
text, :data:`PAD` (-2) for padding (outside videos), ``k >= 0`` for a token of frame ``k`` of its
video (the frames of a video numbered ``0, 1, 2, ...`` in sequence order, each a contiguous run
of tokens; a run numbered 0 starts a new video). A layout against these rules is refused, with
the row and position that break them.

Example:
    >>> import torch
    >>> ids = _check_frame_ids(torch.tensor([[PAD, TEXT, 0, 0, 1, TEXT]]))
    >>> row = _read_row(ids.numpy()[0], 0)
    >>> row.starts.tolist(), row.ends.tolist(), row.frame.tolist(), (row.first, row.last)
    ([2, 4], [3, 4], [0, 1], (1, 5))
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

TEXT = -1
"""``frame_ids`` value of a text token."""
PAD = -2
"""``frame_ids`` value of a padding token."""


@dataclass(frozen=True)
class _Row:
    """One row's frames, read from its frame ids (all positions in the row's own indexing)."""

    length: int
    first: int  # first real (non-padding) position; == length for an all-padding row
    last: int  # last real position; -1 for an all-padding row
    starts: np.ndarray  # [R] first position of each frame run
    ends: np.ndarray  # [R] last position of each frame run
    frame: np.ndarray  # [R] frame index of each run inside its video
    video_first_run: np.ndarray  # [R] the run index of the first frame of each run's video
    run_start: np.ndarray  # [U] first position of each run of equal ids (frames, text, padding)
    run_length: np.ndarray  # [U] length of each run of equal ids
    run_id: np.ndarray  # [U] the id of each run of equal ids
    frame_run: np.ndarray  # [U] each run's index among the frame runs, -1 for text and padding

    @cached_property
    def padded(self) -> bool:
        """True when the row holds padding."""
        return bool((self.run_id == PAD).any())

    def per_token(self, per_run: np.ndarray) -> np.ndarray:
        """``[L]``: a value per run of equal ids (``[U]``), given to each of its tokens."""
        return np.repeat(per_run, self.run_length)

    def by_run(self, per_frame_run: np.ndarray, outside: int) -> np.ndarray:
        """``[U]``: ``per_frame_run[r]`` (``[R]``) at frame run ``r``, ``outside`` at the runs of
        text and padding."""
        return np.append(per_frame_run, outside)[self.frame_run]


def _read_row(ids: np.ndarray, row: int, name: str = "") -> _Row:
    n = ids.size
    # Runs of equal ids: a frame is one run of its number (a video token's run ends where the
    # id changes, to text, padding or another frame); the rest of the reading works on runs.
    run_start = np.concatenate([[0], np.flatnonzero(ids[1:] != ids[:-1]) + 1])
    run_end = np.append(run_start[1:], n) - 1
    run_id = ids[run_start]
    if int(run_id.min()) < PAD:
        at = int(run_start[np.argmax(run_id < PAD)])
        raise ValueError(
            f"frame_ids row {row} holds {int(ids[at])} at position {at}; use frame numbers >= 0, "
            f"TEXT={TEXT} or PAD={PAD}"
        )
    is_frame = run_id >= 0
    starts, ends, frame = run_start[is_frame], run_end[is_frame], run_id[is_frame]
    padded_runs = run_id == PAD
    if padded_runs.all():
        first, last = n, -1
    else:
        first = int(run_start[np.argmin(padded_runs)])
        last = int(run_end[padded_runs.size - 1 - np.argmin(padded_runs[::-1])])
    new_video = frame == 0
    if frame.size and not new_video[0]:
        raise ValueError(
            f"frame_ids row {row}: the first frame at position {int(starts[0])} is numbered "
            f"{int(frame[0])}; the frames of a video are numbered 0, 1, 2, ... in sequence order"
        )
    if padded_runs.any():
        _check_padding(ids, ids != PAD, row, starts, ends, frame, name)
    wrong = np.flatnonzero(~new_video[1:] & (frame[1:] != frame[:-1] + 1)) + 1
    if wrong.size:
        r = int(wrong[0])
        raise ValueError(
            f"frame_ids row {row}: frame {int(frame[r])} at position {int(starts[r])} follows "
            f"frame {int(frame[r - 1])}; the frames of a video are numbered 0, 1, 2, ... in "
            "sequence order (a frame numbered 0 starts a new video)"
        )
    video_index = np.cumsum(new_video) - 1
    first_runs = np.flatnonzero(new_video)
    # Each token's frame run (its index among the frames), -1 outside frames: one value a run.
    frame_run = np.where(is_frame, np.cumsum(is_frame) - 1, -1)
    video_first_run = first_runs[video_index] if frame.size else frame
    return _Row(
        n, first, last, starts, ends, frame, video_first_run, run_start, run_end - run_start + 1,
        run_id, frame_run,
    )  # fmt: skip


def _check_padding(
    ids: np.ndarray,
    real: np.ndarray,
    row: int,
    starts: np.ndarray,
    ends: np.ndarray,
    frame: np.ndarray,
    name: str,
) -> None:
    """Padding sits outside videos; for the sliding window, also before no video token but at
    the left end (then every block column with padding has keys a window's bounds never skip)."""
    if real.all() or not frame.size:
        return
    pads = np.cumsum(~real)  # padding up to and including each position
    # Two runs of one frame number with only padding between: a padded frame, which would read
    # as a new video (a run numbered 0) or break the numbering.
    gap_pads = pads[starts[1:] - 1] - pads[ends[:-1]]
    only_padding = gap_pads == starts[1:] - ends[:-1] - 1
    resumed = np.flatnonzero((frame[1:] == frame[:-1]) & only_padding & (gap_pads > 0))
    if resumed.size:
        r = int(resumed[0]) + 1
        at = int(ends[r - 1]) + 1
        raise ValueError(
            f"frame_ids row {row} has padding (PAD={PAD}) at position {at} inside frame "
            f"{int(frame[r])} (positions {int(starts[r - 1])}..{int(ends[r])}); padding goes "
            "outside videos (a frame is one contiguous run of tokens; two videos side by side "
            "need a TEXT token between them here)"
        )
    new_video = np.flatnonzero(frame == 0)
    video_starts = starts[new_video]
    video_ends = ends[np.append(new_video[1:] - 1, frame.size - 1)]
    inside = pads[video_ends] - pads[video_starts]
    if (inside > 0).any():
        v = int(np.flatnonzero(inside > 0)[0])
        s, e = int(video_starts[v]), int(video_ends[v])
        at = s + int(np.flatnonzero(~real[s : e + 1])[0])
        raise ValueError(
            f"frame_ids row {row} has padding (PAD={PAD}) at position {at} inside the video at "
            f"positions {s}..{e}; padding goes outside videos"
        )
    if name == "prompt-sliding-window":
        first = int(np.flatnonzero(real)[0])
        last_video = int(ends[-1])
        middle = np.flatnonzero(~real[first:last_video])
        if middle.size:
            at = first + int(middle[0])
            raise ValueError(
                f"frame_ids row {row} has padding (PAD={PAD}) at position {at}, between real "
                f"tokens before the row's last video token at {last_video}; {name} takes "
                "padding at the left end of a row or after its videos (generate appends new "
                "tokens after a right padding)"
            )


def _check_frame_ids(frame_ids: object) -> torch.Tensor:
    if not isinstance(frame_ids, torch.Tensor):
        raise TypeError(f"frame_ids must be an integer tensor [B, L], got {type(frame_ids)}")
    if frame_ids.dim() != 2 or frame_ids.shape[1] == 0 or frame_ids.shape[0] == 0:
        raise ValueError(
            f"frame_ids must be [B, L] with B, L >= 1 (one id per token: frame >= 0, TEXT={TEXT}, "
            f"PAD={PAD}), got shape {tuple(frame_ids.shape)}"
        )
    if frame_ids.dtype.is_floating_point or frame_ids.dtype in (torch.bool, torch.complex64):
        raise TypeError(f"frame_ids must be an integer tensor, got {frame_ids.dtype}")
    return frame_ids.detach().to("cpu", torch.int64)
