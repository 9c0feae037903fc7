"""One step of the frame KV cache: the chunk's mask, its writes, its attention per layer.

:meth:`FrameKVCache.begin <flexframe.nn.cache.FrameKVCache.begin>` makes a :class:`CacheStep`;
``flexframe.nn.streaming`` explains the whole design.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn.attention.flex_attention import BlockMask

from flexframe._checks import resolve_device
from flexframe.nn.attention import Attention
from flexframe.nn.positions import FramePositions

if TYPE_CHECKING:
    from flexframe.nn.cache import FrameKVCache


class StepMask:
    """The ``[c * P, kv_len]`` mask of one cache step, as the attention asks for it: a BlockMask
    (flex) or a dense bool tensor (sdpa), both from the step's frame-visibility table.

    Attributes:
        q_len: the chunk's tokens ``c * P``.
        kv_len: the keys attended: the whole buffer (flex, fixed shapes) or the slots filled so
            far (sdpa).
        visible: ``[c, kv_len // P]`` bool, which slot each of the chunk's frames sees.

    Example:
        >>> from flexframe import FlexFrameDecoder
        >>> from flexframe.nn import FrameKVCache
        >>> cache = FrameKVCache.for_mask("sliding-window", FlexFrameDecoder(dim=8, depth=1,
        ...     num_heads=2), mask_params={"num_frames": 9, "num_patches_per_frame": 1,
        ...     "window_size": 1})
        >>> for _ in range(3):
        ...     cache.begin(1).finish()
        >>> with cache.begin(1) as step:  # frame 3 sees frames 2 and 3, in slots 0 and 1
        ...     cache.slot_frames.tolist(), step.mask.dense().int().tolist()
        ([2, 3], [[1, 1]])
    """

    def __init__(
        self,
        visible: np.ndarray,
        num_patches_per_frame: int,
        device: torch.device,
        block_mask: Callable[[np.ndarray], BlockMask],
        dense: Callable[[np.ndarray], torch.Tensor],
    ) -> None:
        self.visible = visible
        p = num_patches_per_frame
        self.q_len, self.kv_len = visible.shape[0] * p, visible.shape[1] * p
        self.device = device
        self._build_block_mask, self._build_dense = block_mask, dense
        self._block: BlockMask | None = None
        self._dense: torch.Tensor | None = None

    def block_mask(self, device: torch.device | str | None = None) -> BlockMask:
        """The step's BlockMask (its mask_mod reads the cache's slot table on its device)."""
        self._check_device(device)
        if self._block is None:
            self._block = self._build_block_mask(self.visible)
        return self._block

    def dense(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The step's ``[q_len, kv_len]`` bool mask, True where a query may attend."""
        self._check_device(device)
        if self._dense is None:
            self._dense = self._build_dense(self.visible)
        return self._dense

    def _check_device(self, device: torch.device | str | None) -> None:
        if device is not None and resolve_device(device) != self.device:
            raise ValueError(
                f"the step's mask lives on the cache's device {self.device}, not {device}"
            )


class CacheStep:
    """One step of ``num_frames`` frames from ``first_frame``: positions, mask and writes.

    Made by :meth:`FrameKVCache.begin`. On :meth:`finish` (or leaving the ``with`` block) an
    appending step moves the cache's frame count on; a reading step (``append=False``), or one
    left by an exception, marks the chunk's slots empty again.

    Attributes:
        first_frame, num_frames, append: what the step covers.
        slots: the slot of each of its frames.
        positions: its tokens' :class:`~flexframe.nn.FramePositions` (absolute frame times).
        mask: its :class:`StepMask`.

    Example:
        >>> from flexframe import FlexFrameDecoder
        >>> from flexframe.nn import FrameKVCache
        >>> cache = FrameKVCache.for_mask("causal-frame", FlexFrameDecoder(dim=8, depth=1,
        ...     num_heads=2), mask_params={"num_frames": 4, "num_patches_per_frame": 2})
        >>> with cache.begin(2, append=False) as step:  # a reading step: nothing stays
        ...     step.slots, step.positions.frame.tolist()
        ([0, 1], [0, 0, 1, 1])
        >>> cache.frames, cache.slot_frames.tolist()
        (0, [-1, -1, -1, -1])
    """

    def __init__(
        self,
        cache: FrameKVCache,
        first_frame: int,
        num_frames: int,
        append: bool,
        slots: list[int],
        mask: StepMask,
        close: Callable[[CacheStep, bool], None],
    ) -> None:
        self.cache = cache
        self.first_frame, self.num_frames, self.append = first_frame, num_frames, append
        self.slots, self.mask = slots, mask
        self._close = close
        # Runs of consecutive slots: (first slot, first frame of the chunk, frames); two where
        # the chunk wraps around the ring.
        runs: list[list[int]] = []
        for j, slot in enumerate(slots):
            if runs and runs[-1][0] + runs[-1][2] == slot:
                runs[-1][2] += 1
            else:
                runs.append([slot, j, 1])
        self._runs = runs
        self.done = False

    @cached_property
    def positions(self) -> FramePositions:
        """The chunk's tokens' positions: absolute frame times ``first_frame ..`` and patches."""
        return self.cache.positions(self.first_frame, self.num_frames)

    def write(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the chunk's ``[B, H_kv, c * P, head_dim]`` keys and values into layer
        ``layer``'s slots; returns the buffers as the step's attention reads them."""
        cache = self.cache
        k_buf, v_buf = cache.keys(layer), cache.values(layer)
        p = cache.num_patches_per_frame
        expected = (cache.batch_size, k_buf.shape[1], self.num_frames * p, k_buf.shape[3])
        if torch.is_grad_enabled() and (keys.requires_grad or values.requires_grad):
            raise RuntimeError(
                "a cache step runs in inference only: call it under torch.no_grad() or "
                "torch.inference_mode() (the cache's buffers are written in place, which autograd "
                "cannot follow)"
            )
        for name, t in (("keys", keys), ("values", values)):
            if tuple(t.shape) != expected:
                raise ValueError(f"{name} must be {list(expected)}, got {list(t.shape)}")
            if t.dtype != cache.dtype:
                raise TypeError(
                    f"the step's {name} are {t.dtype} but the cache holds {cache.dtype} (under "
                    f"autocast, build the cache with dtype={t.dtype})"
                )
        if len(self._runs) == 1:  # the chunk in consecutive slots: one copy each
            slot = self._runs[0][0]
            k_buf[:, :, slot * p : slot * p + keys.shape[2]].copy_(keys)
            v_buf[:, :, slot * p : slot * p + keys.shape[2]].copy_(values)
        else:
            for slot, j, n in self._runs:
                k_buf[:, :, slot * p : (slot + n) * p].copy_(keys[:, :, j * p : (j + n) * p])
                v_buf[:, :, slot * p : (slot + n) * p].copy_(values[:, :, j * p : (j + n) * p])
        if self.mask.kv_len == cache.capacity_tokens:
            return k_buf, v_buf
        return k_buf[:, :, : self.mask.kv_len], v_buf[:, :, : self.mask.kv_len]

    def layer(self, index: int) -> LayerStep:
        """The step as layer ``index`` sees it (what ``DecoderLayer`` takes)."""
        return LayerStep(self, index)

    def finish(self, commit: bool | None = None) -> None:
        """End the step: append its frames (``commit``, default: the step's ``append``) or mark
        their slots empty again."""
        if self.done:
            return
        self.done = True
        self._close(self, self.append if commit is None else commit)

    def __enter__(self) -> CacheStep:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(commit=self.append and exc_type is None)


class LayerStep:
    """A :class:`CacheStep` for one layer: project the chunk's keys and values, write them into
    the layer's buffers, attend from the chunk to the cache.

    Example:
        >>> from flexframe import get_mask
        >>> from flexframe.nn import DecoderConfig, FrameKVCache
        >>> attn = Attention(DecoderConfig(dim=8, depth=1, num_heads=2))
        >>> cache = FrameKVCache.for_mask(get_mask("causal-frame", num_frames=2,
        ...                                        num_patches_per_frame=3), attn)
        >>> with torch.no_grad(), cache.begin(1) as step:
        ...     step.layer(0).attend(attn, torch.randn(1, 3, 8)).shape
        torch.Size([1, 3, 8])
    """

    def __init__(self, step: CacheStep, index: int) -> None:
        self.step, self.index = step, index

    def attend(self, attention: Attention, x: torch.Tensor) -> torch.Tensor:
        """``attention`` from ``x`` ``[B, c * P, dim]`` to the cached frames the mask allows and
        the chunk itself; returns ``[B, c * P, dim]``."""
        step = self.step
        k, v = attention.project_kv(x, step.positions)
        keys, values = step.write(self.index, k, v)
        # A step's shapes are fixed by the cache (the whole buffer, one chunk size), but every
        # cache's mask_mod shares one code object, so one compiled function serves them all:
        # compiled for fixed shapes, another cache's lengths and closure numbers are never made
        # dynamic (torch's CPU flex kernel fails to compile those).
        return attention.attend(
            x, keys, values, step.mask, step.positions, dynamic=False, graphs=step.cache.graphs
        )
