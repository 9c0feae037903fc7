"""Frame-aware positions: each token's frame time and its patch index within the frame.

Attention in flexframe is told *when* a token was shown (its frame index, or its timestamp when
frames are not in time order) and *where* in the frame it sits (its patch index). Both enter as
rotary embeddings on two halves of each head: relative time on one, relative patch position on
the other. Under a timestamp-causal mask the frame positions follow the timestamps, so two
copies of one frame (slow and fast) are at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from flexframe._checks import check_int
from flexframe.masks import MaskSpec, create_frame_position_ids


@dataclass(frozen=True)
class FramePositions:
    """Per-token positions: ``frame`` (time) and ``patch`` (place in the frame), each ``[N]`` int64.

    Example:
        >>> pos = FramePositions.for_frames(num_frames=2, num_patches_per_frame=3)
        >>> pos.frame.tolist(), pos.patch.tolist()
        ([0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2])
    """

    frame: torch.Tensor
    patch: torch.Tensor

    def __post_init__(self) -> None:
        if self.frame.shape != self.patch.shape or self.frame.dim() != 1:
            raise ValueError(
                "FramePositions.frame and .patch must be 1-D and of one length, got shapes "
                f"{tuple(self.frame.shape)} and {tuple(self.patch.shape)}"
            )

    def __len__(self) -> int:
        return self.frame.numel()

    def to(self, device: torch.device | str) -> FramePositions:
        return FramePositions(self.frame.to(device), self.patch.to(device))

    @staticmethod
    def for_frames(
        num_frames: int, num_patches_per_frame: int, timestamps: torch.Tensor | None = None
    ) -> FramePositions:
        """Frames one after another; frame ``f`` is at time ``timestamps[f]`` (default ``f``).

        Example:
            >>> FramePositions.for_frames(2, 2, timestamps=torch.tensor([7, 3])).frame.tolist()
            [7, 7, 3, 3]
        """
        f = check_int("num_frames", num_frames, minimum=1)
        p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)
        if timestamps is None:
            frame = create_frame_position_ids(f, p)
        else:
            timestamps = torch.as_tensor(timestamps, dtype=torch.int64)
            if timestamps.shape != (f,):
                raise ValueError(
                    f"timestamps must hold one value per frame ({f}), got shape "
                    f"{tuple(timestamps.shape)}"
                )
            frame = timestamps.repeat_interleave(p)
        return FramePositions(frame, torch.arange(p).repeat(f))

    @staticmethod
    def for_tokens(seq_len: int) -> FramePositions:
        """No frames: every token is its own time step, at patch 0."""
        n = check_int("seq_len", seq_len, minimum=1)
        return FramePositions(torch.arange(n), torch.zeros(n, dtype=torch.int64))

    @staticmethod
    def from_mask(spec: MaskSpec) -> FramePositions:
        """The positions a mask implies: its ``frame_times`` when it has them (timestamps for
        ``timestamp-causal``, the frame index within its own video for ``packed-causal-frame``,
        and either of these combined with another mask), the frame index for other frame masks,
        and the token index for masks without frames.

        Example:
            >>> from flexframe import get_mask
            >>> spec = get_mask("timestamp-causal", timestamps=[0, 4, 2], num_patches_per_frame=1)
            >>> FramePositions.from_mask(spec).frame.tolist()
            [0, 4, 2]
        """
        p = spec.num_patches_per_frame
        if p is None:
            return FramePositions.for_tokens(spec.q_len)
        num_frames = spec.q_len // p
        if spec.frame_times is not None:  # also when combined with another mask (a & b)
            return FramePositions.for_frames(num_frames, p, torch.tensor(spec.frame_times))
        return FramePositions.for_frames(num_frames, p)


class FrameRotaryEmbedding(nn.Module):
    """Rotary embedding of (frame time, patch index) on the two halves of each head.

    The first ``head_dim // 2`` channels rotate with the frame position and the last
    ``head_dim // 2`` with the patch position, so attention scores depend on the *relative*
    time and the relative patch index of query and key.

    Example:
        >>> rope = FrameRotaryEmbedding(head_dim=8)
        >>> x = torch.randn(1, 2, 6, 8)  # [B, H, N, head_dim]
        >>> rope(x, FramePositions.for_frames(3, 2)).shape
        torch.Size([1, 2, 6, 8])
    """

    def __init__(self, head_dim: int, base: float = 10_000.0) -> None:
        super().__init__()
        head_dim = check_int("head_dim", head_dim, minimum=4)
        if head_dim % 4:
            raise ValueError(
                f"head_dim must be a multiple of 4 for frame+patch rotary embeddings, got "
                f"{head_dim}"
            )
        self.head_dim = head_dim
        self.base = base
        self.register_buffer("inv_freq", self._inv_freq(torch.device("cpu")), persistent=False)

    def _inv_freq(self, device: torch.device) -> torch.Tensor:
        quarter = self.head_dim // 4
        exponents = torch.arange(quarter, dtype=torch.float32, device=device) / quarter
        return self.base**-exponents

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202 (torch's signature)
        # ``model.to(torch.bfloat16)`` would round the frequencies, and positions in bf16 are
        # exact only up to 256: frames 300 and 301 would rotate alike. Keep float32 always.
        out = super()._apply(fn, *args, **kwargs)
        self.inv_freq = self._inv_freq(self.inv_freq.device)
        return out

    def _cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions.to(torch.float32)[:, None] * self.inv_freq.float()[None, :]
        return angles.cos(), angles.sin()  # [N, head_dim // 4] each

    def forward(self, x: torch.Tensor, positions: FramePositions) -> torch.Tensor:
        """Rotate ``x`` of shape ``[B, H, N, head_dim]`` by the positions of its N tokens."""
        if x.shape[-2] != len(positions):
            raise ValueError(
                f"positions cover {len(positions)} tokens but the sequence has {x.shape[-2]}"
            )
        positions = positions.to(x.device)
        half = self.head_dim // 2
        out = []
        for part, pos in ((x[..., :half], positions.frame), (x[..., half:], positions.patch)):
            cos, sin = self._cos_sin(pos)
            a, b = part.float().chunk(2, dim=-1)
            out += [a * cos - b * sin, a * sin + b * cos]
        return torch.cat(out, dim=-1).to(x.dtype)
