"""Pictures of attention masks: every cell, block sparsity, side-by-side, and frame timelines.

Every mask picture uses one layout: query tokens run top to bottom, key tokens left to right, and
both axes are in token units, so cell ``(q, k)`` covers ``k <= x < k + 1`` and ``q <= y < q + 1``
whatever the drawing resolution. Thin lines mark frame boundaries when the frame size is known.
The colours are the module constants below (RGB hex), so tests and users can read pixels back.

Masks up to ``max_elements`` tokens a side (512 by default) are drawn cell by cell, and every
cell then gets at least two whole pixels a side clear of frame lines: the figure keeps its size
in inches but its dpi is raised as far as that needs (a 512-token mask in the default 7 x 5 inch
figure is saved at about 260 dpi), frame lines are thinned to at most a quarter of a cell, and
the picture is resampled "nearest", so the pixel under each cell's centre shows exactly that
cell's colour. When that would take more than 8192 pixels on the figure's long side (a large
``max_elements``), the mask is drawn by block instead and the axis label says why. Longer masks
are drawn one cell per block and never as the ``[q_len, kv_len]`` mask:

- a :class:`~flexframe.MaskSpec` with a closed form (every built-in mask) uses its BlockMask
  (O(blocks) to build): full blocks get ``ATTEND_COLOR``, skipped blocks ``MASKED_COLOR``, and a
  partial block a colour in between, darker the larger the share of its cells that attend (a
  share ``s`` strictly between 0 and 1 is drawn ``0.1 + 0.8 * s`` of the way from masked to
  attend). The share is exact when the block's real part is at most ``samples_per_block`` cells
  a side (every cell is evaluated); otherwise it is the mask_mod's share at ``samples_per_block``
  x ``samples_per_block`` evenly spaced cells, kept strictly inside (0, 1) so that a sampled
  partial block never looks full or skipped. (A padded last block whose real cells all attend is
  partial for the kernel but drawn as attend: this picture shows the mask, and
  :func:`plot_block_sparsity` shows the kernel's blocks.)
- a spec without a closed form (your own masks, ``a & b``) is sampled the same way in every block,
  since building its BlockMask on the CPU would hold the whole mask; there a block whose samples
  all agree is drawn as attend or masked, and the figure says the blocks were sampled (block
  *counts* of such a spec, :func:`block_sparsity` and :func:`plot_block_sparsity`, are exact:
  its mask_mod is evaluated at every cell, a few query rows at a time, in bounded memory);
- a ``BlockMask`` is read from its block tensors (batch 0, head 0) with its ``mask_mod`` sampled
  inside partial blocks: this is what the FlexAttention kernel computes;
- a dense bool tensor is reduced block by block, and the share of each block is exact.

Every figure is returned with matplotlib's constrained layout, so that a suptitle, a colorbar or
a new size added after the call is laid out again, except a figure whose dpi was raised for
whole-pixel cells: its layout is fixed after one pass (no layout engine), so that the cells stay
on the same pixels in the saved file and in every later draw. Call
``fig.set_layout_engine("constrained")`` on such a figure before adding to it (each cell still
covers the pixel under its centre unless the axes then shrink).

Only matplotlib's object API is used (``Figure`` with an Agg canvas, never ``pyplot``): nothing
is shared between calls and it works without a display. This module depends on
``flexframe.masks`` alone.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from torch.nn.attention.flex_attention import BlockMask

from flexframe._checks import check_int, check_int_sequence
from flexframe.masks.spec import MaskSpec

__all__ = [
    "ATTEND_COLOR",
    "FRAME_LINE_COLOR",
    "FULL_BLOCK_COLOR",
    "MASKED_COLOR",
    "PARTIAL_BLOCK_COLOR",
    "SEQUENCE_END_COLOR",
    "SKIPPED_BLOCK_COLOR",
    "BlockSparsity",
    "block_sparsity",
    "compare_masks",
    "filename_for_title",
    "mask_summary",
    "mask_to_png",
    "mask_to_png_with_size",
    "plot_block_sparsity",
    "plot_frame_timeline",
    "visualize_mask",
]

ATTEND_COLOR = "#1f4e8c"
"""A cell where the query may attend (dark blue)."""
MASKED_COLOR = "#e6e6e6"
"""A cell where the query may not attend (light grey)."""
FULL_BLOCK_COLOR = "#1f4e8c"
"""A full block: computed without evaluating the mask_mod (the attend colour)."""
PARTIAL_BLOCK_COLOR = "#f5a623"
"""A partial block: computed, with the mask_mod evaluated inside (orange)."""
SKIPPED_BLOCK_COLOR = "#e6e6e6"
"""A skipped block: never computed (the masked colour)."""
FRAME_LINE_COLOR = "#d1495b"
"""Frame boundaries (red)."""
SEQUENCE_END_COLOR = "#000000"
"""Where the real sequence ends inside a padded last block (block-sparsity plots)."""

AnyMask = MaskSpec | torch.Tensor | BlockMask
BlockSize = int | tuple[int, int]

_MAX_GRID = 1024  # block cells a side at most; the block size is raised to stay under it
_MAX_FRAME_LINES = 64  # more frames than this would hide the cells under the lines
_EVAL_CHUNK = 1 << 20  # mask_mod evaluations per batch when sampling or scanning blocks
_MIN_CELL_PX = 2  # an element-level cell spans at least this many pixels clear of frame lines
_FRAME_LINE_PT = 0.8  # frame-line width in points; at element level at most a quarter cell
_MAX_FIGURE_PX = 8192  # the dpi is never raised past this many pixels on a figure's long side
_PICTURE_ZORDER = 2.6  # a mask picture sits above the axes spines (2.5); frame lines above it
_PARTIAL_SHADE = (0.1, 0.9)  # a partial block's colour spans this part of masked -> attend


# -- inputs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    """One mask in any of the accepted forms, with its lengths and frame size."""

    kind: str  # "spec" | "block_mask" | "dense"
    mask: AnyMask
    q_len: int
    kv_len: int
    num_patches_per_frame: int | None
    name: str


def _as_source(mask: object, num_patches_per_frame: int | None, arg: str = "mask") -> _Source:
    p = None
    if num_patches_per_frame is not None:
        p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)
    if isinstance(mask, MaskSpec):
        p = mask.num_patches_per_frame if p is None else p
        return _Source("spec", mask, mask.q_len, mask.kv_len, p, mask.name)
    if isinstance(mask, BlockMask):
        q_len, kv_len = (int(n) for n in mask.seq_lengths)
        return _Source("block_mask", mask, q_len, kv_len, p, "BlockMask")
    if isinstance(mask, torch.Tensor):
        if mask.dim() != 2:
            raise ValueError(
                f"{arg} must be a 2-D [q_len, kv_len] bool tensor, got shape {tuple(mask.shape)}"
                + ("; pass mask[0, 0] for a [B, H, q_len, kv_len] mask" if mask.dim() == 4 else "")
            )
        if mask.dtype != torch.bool:
            raise TypeError(
                f"{arg} must be a bool tensor (True = may attend), got dtype {mask.dtype}; for an "
                "additive float mask pass `mask == 0`"
            )
        if mask.shape[0] == 0 or mask.shape[1] == 0:
            raise ValueError(f"{arg} must not be empty, got shape {tuple(mask.shape)}")
        return _Source("dense", mask.detach().cpu(), mask.shape[0], mask.shape[1], p, "mask")
    raise TypeError(
        f"{arg} must be a MaskSpec, a BlockMask or a [q_len, kv_len] bool tensor, "
        f"got {type(mask).__name__}"
    )


def _block_size(block_size: object, arg: str = "block_size") -> tuple[int, int]:
    if isinstance(block_size, tuple):
        if len(block_size) != 2:
            raise ValueError(f"{arg} must be an int or a (q, kv) pair, got {block_size!r}")
        return check_int(arg, block_size[0], minimum=1), check_int(arg, block_size[1], minimum=1)
    size = check_int(arg, block_size, minimum=1)
    return size, size


def _default_title(src: _Source) -> str:
    if src.kind == "spec":
        params = ", ".join(f"{k}={v}" for k, v in src.mask.params.items())
        return f"{src.name} ({params})" if params else src.name
    return f"{src.name} [{src.q_len} x {src.kv_len}]"


def filename_for_title(title: str) -> str:
    """The PNG file name a picture titled ``title`` is saved under when no path is given.

    Lower case; every run of spaces, punctuation and underscores becomes one ``_``, and none is
    kept at either end.

    Example:
        >>> filename_for_title("My Frame Mask")
        'my_frame_mask.png'
        >>> filename_for_title("causal-frame (num_frames=3)")
        'causal_frame_num_frames_3.png'
    """
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, got {title!r} ({type(title).__name__})")
    stem = re.sub(r"[\W_]+", "_", title.lower()).strip("_")
    if not stem:
        raise ValueError(f"title {title!r} leaves no file name; give a path= instead")
    return stem + ".png"


# -- mask_mod evaluation ------------------------------------------------------------------------
def _evaluate(
    mod: Callable, q_idx: torch.Tensor, kv_idx: torch.Tensor, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``mod`` at the pairs ``(q_idx[i], kv_idx[i])``: ``[M]`` bool on the CPU, batch 0, head 0.

    It runs on ``device``, where the tensors a mask_mod closes over live (a BlockMask built on a
    GPU). Plain tensor calls serve every mask_mod made of elementwise ops and indexing (all of
    flexframe's); any other gets torch's own vmap route, the one ``create_mask`` takes.
    """
    q_idx, kv_idx = q_idx.to(device), kv_idx.to(device)
    zero = torch.zeros((), dtype=torch.int64, device=device)
    try:
        out = torch.as_tensor(mod(zero, zero, q_idx, kv_idx), device=device)
        out = torch.broadcast_to(out, q_idx.shape)
    except Exception:  # a genuine error in the mask_mod raises again from the vmap route
        from torch._dynamo._trace_wrapped_higher_order_op import TransformGetItemToIndex

        with TransformGetItemToIndex():
            out = torch.vmap(mod, in_dims=(None, None, 0, 0))(zero, zero, q_idx, kv_idx)
    return out.to(torch.bool).cpu()


def _sample_points(start: torch.Tensor, size: torch.Tensor, samples: int):
    """Up to ``samples`` evenly spaced cell centres in each run ``[start, start + size)``.

    Returns ``(points, valid)``, each ``[P, samples]``; a run shorter than ``samples`` gets every
    cell once and the rest of its row is invalid.
    """
    i = torch.arange(samples, dtype=torch.int64)
    n = size.clamp(max=samples)[:, None]
    valid = i[None, :] < n
    points = start[:, None] + ((2 * i[None, :] + 1) * size[:, None]) // (2 * n)
    return torch.where(valid, points, start[:, None]), valid


def _evaluate_rows(
    mod: Callable, q_idx: torch.Tensor, kv_idx: torch.Tensor, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``mod`` at every pair of ``q_idx`` x ``kv_idx``: ``[len(q_idx), len(kv_idx)]`` bool.

    One broadcast call (``[R, 1]`` queries against ``[1, K]`` keys), so that a mask_mod's
    per-query and per-key work is done once per row and column. Its result is taken only when
    its shape is one that elementwise ops on those inputs give: 0-d, or 2-d ``[R or 1, K or 1]``.
    Anything else (a mask_mod that squeezes or reshapes its indices, which flex_attention passes
    as 0-d tensors, can return ``[R]`` here, and ``[R]`` would broadcast along the keys when
    ``R == K``), and any mask_mod that raises, is evaluated at the flattened pairs by
    :func:`_evaluate`.
    """
    shape = (q_idx.numel(), kv_idx.numel())
    q_dev, kv_dev = q_idx.to(device), kv_idx.to(device)
    zero = torch.zeros((), dtype=torch.int64, device=device)
    try:
        out = torch.as_tensor(mod(zero, zero, q_dev[:, None], kv_dev[None, :]), device=device)
    except Exception:
        out = None
    if out is not None and _broadcast_shape(tuple(out.shape), shape):
        return torch.broadcast_to(out, shape).to(torch.bool).cpu()
    q_all = q_idx.repeat_interleave(shape[1])
    return _evaluate(mod, q_all, kv_idx.repeat(shape[0]), device).view(shape)


def _broadcast_shape(got: tuple[int, ...], shape: tuple[int, int]) -> bool:
    """Whether ``got`` is what elementwise ops on ``[R, 1]`` and ``[1, K]`` inputs give."""
    if len(got) == 0:
        return True
    return len(got) == 2 and got[0] in (shape[0], 1) and got[1] in (shape[1], 1)


def _sampled_shares(
    mod: Callable,
    rows: torch.Tensor,
    cols: torch.Tensor,
    block: tuple[int, int],
    lengths: tuple[int, int],
    samples: int,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Share of sampled cells that attend in blocks ``(rows[i], cols[i])``: ``[P]`` float64, and
    ``[P]`` bool, whether that share is exact (every real cell of the block was evaluated)."""
    (bq, bkv), (q_len, kv_len) = block, lengths
    out = torch.empty(rows.numel(), dtype=torch.float64)
    q_size = (q_len - rows * bq).clamp(max=bq)
    kv_size = (kv_len - cols * bkv).clamp(max=bkv)
    exact = (q_size <= samples) & (kv_size <= samples)
    chunk = max(1, _EVAL_CHUNK // samples**2)
    for lo in range(0, rows.numel(), chunk):
        r, c = rows[lo : lo + chunk], cols[lo : lo + chunk]
        q_pts, q_ok = _sample_points(r * bq, q_size[lo : lo + chunk], samples)
        k_pts, k_ok = _sample_points(c * bkv, kv_size[lo : lo + chunk], samples)
        shape = (r.numel(), samples, samples)
        q_all = q_pts[:, :, None].expand(shape).reshape(-1)
        k_all = k_pts[:, None, :].expand(shape).reshape(-1)
        ok = q_ok[:, :, None] & k_ok[:, None, :]
        seen = _evaluate(mod, q_all, k_all, device).view(shape) & ok
        out[lo : lo + chunk] = seen.sum((1, 2)) / ok.sum((1, 2))
    return out, exact


# -- block structure ----------------------------------------------------------------------------
def _grid_from_kv(num: torch.Tensor, idx: torch.Tensor, nq: int, nk: int) -> torch.Tensor:
    """``[nq, nk]`` bool from a BlockMask's ``[B, H, nq]`` counts and ``[B, H, nq, *]`` indices."""
    num, idx = num[0, 0].cpu().long(), idx[0, 0].cpu().long()
    slot = torch.arange(idx.shape[-1])
    used = slot[None, :] < num[:, None]
    grid = torch.zeros(nq, nk, dtype=torch.bool)
    r, s = used.nonzero(as_tuple=True)
    grid[r, idx[r, s]] = True
    return grid


def _block_mask_grids(bm: BlockMask) -> tuple[torch.Tensor, torch.Tensor]:
    """``(partial, full)`` ``[nq, nk]`` bool grids of batch 0, head 0 of a BlockMask."""
    q_len, kv_len = (int(n) for n in bm.seq_lengths)
    bq, bkv = (int(b) for b in bm.BLOCK_SIZE)
    nq, nk = -(-q_len // bq), -(-kv_len // bkv)
    partial = _grid_from_kv(bm.kv_num_blocks, bm.kv_indices, nq, nk)
    if bm.full_kv_num_blocks is None:
        full = torch.zeros(nq, nk, dtype=torch.bool)
    else:
        full = _grid_from_kv(bm.full_kv_num_blocks, bm.full_kv_indices, nq, nk)
    return partial, full


def _dense_block_counts(
    dense: torch.Tensor, block: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attending cells and real cells of each block of a dense mask: two ``[nq, nk]`` int64.

    One block row at a time, so the extra memory is O(block_q * kv_len).
    """
    (bq, bkv), (q_len, kv_len) = block, dense.shape
    nq, nk = -(-q_len // bq), -(-kv_len // bkv)
    counts = torch.empty(nq, nk, dtype=torch.int64)
    for i in range(nq):
        col_counts = dense[i * bq : (i + 1) * bq].sum(0)
        counts[i] = torch.nn.functional.pad(col_counts, (0, nk * bkv - kv_len)).view(nk, bkv).sum(1)
    rows = (q_len - torch.arange(nq) * bq).clamp(max=bq)
    cols = (kv_len - torch.arange(nk) * bkv).clamp(max=bkv)
    return counts, rows[:, None] * cols[None, :]


def _scan_block_grids(
    mod: Callable, lengths: tuple[int, int], block: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``(partial, full)`` ``[nq, nk]`` grids from ``mod`` at every cell, never ``N x N``.

    The mask_mod is evaluated a few query rows at a time (about ``_EVAL_CHUNK`` cells per call)
    and each slice is reduced to its blocks at once, so the extra memory is
    O(``_EVAL_CHUNK`` + ``num_q_blocks * num_kv_blocks``) whatever the lengths; the time is
    ``q_len * kv_len`` evaluations. Cells past the real lengths count as masked, as torch pads,
    so a padded block is never full.
    """
    (bq, bkv), (q_len, kv_len) = block, lengths
    nq, nk = -(-q_len // bq), -(-kv_len // bkv)
    kv_idx = torch.arange(kv_len, dtype=torch.int64)
    rows = max(1, _EVAL_CHUNK // kv_len)  # query rows per evaluation
    group = max(1, rows // bq)  # block rows per pass: one pass evaluates them all at once
    step = group * bq if rows >= bq else rows
    seen = torch.zeros(nq, nk, dtype=torch.bool)  # some cell attends
    every = torch.zeros(nq, nk, dtype=torch.bool)  # every cell attends
    for i0 in range(0, nq, group):
        i1 = min(i0 + group, nq)
        r_lo, r_hi = i0 * bq, min(i1 * bq, q_len)
        # Per block row and key: does any / every query of the block attend? (uint8: fast
        # reductions.) Queries past q_len are masked, so a short last block row is never full.
        col_any = torch.zeros(i1 - i0, kv_len, dtype=torch.uint8)
        complete = int(r_hi - r_lo == (i1 - i0) * bq)
        col_all = torch.full((i1 - i0, kv_len), complete, dtype=torch.uint8)
        for r0 in range(r_lo, r_hi, step):
            r1 = min(r0 + step, r_hi)
            out = _evaluate_rows(mod, torch.arange(r0, r1, dtype=torch.int64), kv_idx)
            out = out.view(torch.uint8)
            if step >= bq:  # whole block rows at once
                if r1 - r0 < (i1 - i0) * bq:
                    out = torch.nn.functional.pad(out, (0, 0, 0, (i1 - i0) * bq - (r1 - r0)))
                out = out.view(i1 - i0, bq, kv_len)
                col_any, col_all = out.amax(1), out.amin(1)
            else:  # a slice of one block row
                torch.maximum(col_any, out.amax(0, keepdim=True), out=col_any)
                torch.minimum(col_all, out.amin(0, keepdim=True), out=col_all)
        pad = (0, nk * bkv - kv_len)  # keys past kv_len are masked too
        seen[i0:i1] = torch.nn.functional.pad(col_any, pad).view(-1, nk, bkv).amax(2).bool()
        every[i0:i1] = torch.nn.functional.pad(col_all, pad).view(-1, nk, bkv).amin(2).bool()
    return seen & ~every, every


def _classify(
    src: _Source, block: tuple[int, int] | None
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Exact ``(partial, full, (bq, bkv))`` block grids, as FlexAttention sees them.

    A padded block is never full (torch pads with "masked"). A spec without a closed form is
    scanned with :func:`_scan_block_grids` rather than given to torch's eager
    ``create_block_mask``, which would hold the whole ``[q_len, kv_len]`` mask (and several
    times that in temporaries) on the CPU.
    """
    if src.kind == "block_mask":
        own = tuple(int(b) for b in src.mask.BLOCK_SIZE)
        if block is not None and block != own:
            raise ValueError(
                f"block_size={block} differs from the BlockMask's BLOCK_SIZE={own}; pass "
                f"block_size=None (or {own}) for a BlockMask"
            )
        return (*_block_mask_grids(src.mask), own)
    block = (128, 128) if block is None else block
    if src.kind == "spec" and src.mask.relation is None:
        mod = src.mask.mask_mod_for("cpu")
        return (*_scan_block_grids(mod, (src.q_len, src.kv_len), block), block)
    if src.kind == "spec":
        return (*_block_mask_grids(src.mask.block_mask("cpu", block)), block)
    counts, _ = _dense_block_counts(src.mask, block)
    full = counts == block[0] * block[1]  # a padded block holds fewer cells: never full
    return (counts > 0) & ~full, full, block


@dataclass(frozen=True)
class BlockSparsity:
    """Block counts of a mask as FlexAttention runs it, and what they save.

    Attributes:
        q_len: query tokens.
        kv_len: key tokens.
        block_size: ``(BLOCK_Q, BLOCK_KV)``.
        num_q_blocks: ``ceil(q_len / BLOCK_Q)``.
        num_kv_blocks: ``ceil(kv_len / BLOCK_KV)``.
        full: blocks computed without evaluating the mask_mod.
        partial: blocks computed with the mask_mod evaluated inside.
        skipped: blocks never computed.

    Example:
        >>> from flexframe import get_mask
        >>> stats = block_sparsity(get_mask("causal-frame", num_frames=4, num_patches_per_frame=2),
        ...                        block_size=2)
        >>> (stats.full, stats.partial, stats.skipped), stats.skipped_share
        ((10, 0, 6), 0.375)
    """

    q_len: int
    kv_len: int
    block_size: tuple[int, int]
    num_q_blocks: int
    num_kv_blocks: int
    full: int
    partial: int
    skipped: int

    @property
    def total(self) -> int:
        """All blocks of the grid: ``num_q_blocks * num_kv_blocks``."""
        return self.num_q_blocks * self.num_kv_blocks

    @property
    def skipped_share(self) -> float:
        """Skipped blocks over all blocks, in [0, 1]."""
        return self.skipped / self.total

    @property
    def computed_share(self) -> float:
        """Attention FLOPs computed, as a share of dense attention over the real lengths.

        ``(full + partial) * BLOCK_Q * BLOCK_KV / (q_len * kv_len)``: the kernel computes whole
        blocks, padding included, while dense attention computes ``q_len * kv_len`` scores. It
        can exceed 1 when padding outweighs the skipped blocks (a 130-token mask in 128-blocks
        computes 3 blocks of 128 x 128). It equals ``1 - BlockMask.sparsity() / 100``.
        """
        computed = (self.full + self.partial) * self.block_size[0] * self.block_size[1]
        return computed / (self.q_len * self.kv_len)

    def __str__(self) -> str:
        bq, bkv = self.block_size
        return (
            f"{self.total} block{'s' if self.total != 1 else ''} of {bq}x{bkv}: "
            f"{self.full} full, {self.partial} partial, "
            f"{self.skipped} skipped ({self.skipped_share:.1%} skipped); "
            f"{self.computed_share:.1%} of dense attention FLOPs computed"
        )


def block_sparsity(mask: AnyMask, block_size: BlockSize | None = None) -> BlockSparsity:
    """Full, partial and skipped blocks of a mask, and the share of dense FLOPs they compute.

    Args:
        mask: a ``MaskSpec``, a ``BlockMask`` (batch 0, head 0) or a ``[q_len, kv_len]`` bool
            tensor. A spec with a closed form (every built-in mask) is read from its CPU
            BlockMask, built in O(blocks). A spec without one (your own masks, ``a & b``) has
            its mask_mod evaluated at every cell, about 2**20 cells at a time and reduced to
            blocks at once: memory stays O(blocks) at any length (never the ``[q_len, kv_len]``
            mask torch's eager ``create_block_mask`` would hold), time grows as
            ``q_len * kv_len`` (seconds at 16K tokens on a CPU, minutes at 64K).
        block_size: an int or ``(BLOCK_Q, BLOCK_KV)``; ``None`` means 128, or the BlockMask's own.

    Returns:
        A :class:`BlockSparsity`.

    Example:
        >>> import torch
        >>> print(block_sparsity(torch.ones(4, 4, dtype=torch.bool).tril(), block_size=2))
        4 blocks of 2x2: 1 full, 2 partial, 1 skipped (25.0% skipped); 75.0% of dense attention
        FLOPs computed
    """
    src = _as_source(mask, None)
    partial, full, block = _classify(src, None if block_size is None else _block_size(block_size))
    return _stats(src, partial, full, block)


def _stats(
    src: _Source, partial: torch.Tensor, full: torch.Tensor, block: tuple[int, int]
) -> BlockSparsity:
    n_full, n_partial = int(full.sum()), int(partial.sum())
    nq, nk = full.shape
    return BlockSparsity(
        q_len=src.q_len,
        kv_len=src.kv_len,
        block_size=block,
        num_q_blocks=nq,
        num_kv_blocks=nk,
        full=n_full,
        partial=n_partial,
        skipped=nq * nk - n_full - n_partial,
    )


# -- pictures -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Picture:
    """What a mask panel draws: an RGB image in token coordinates, and notes for its labels."""

    rgb: np.ndarray  # [rows, cols, 3] float in [0, 1]
    cell: tuple[int, int]  # tokens per image cell, (q, kv); (1, 1) at element level
    q_len: int
    kv_len: int
    num_patches_per_frame: int | None
    note: str  # how the picture was made, for the axis label
    partial: bool  # whether any cell shows a partial block


def _rgb(color: str) -> np.ndarray:
    return np.asarray(to_rgb(color), dtype=np.float64)


def _shade(share: np.ndarray) -> np.ndarray:
    """``[..., 3]`` colours: 0 -> masked, 1 -> attend, partial shares 10%-90% of the way."""
    lo, hi = _PARTIAL_SHADE
    t = np.where((share > 0) & (share < 1), lo + (hi - lo) * share, share)
    masked, attend = _rgb(MASKED_COLOR), _rgb(ATTEND_COLOR)
    return masked + t[..., None] * (attend - masked)


def _display_block(src: _Source, block: tuple[int, int]) -> tuple[int, int]:
    """``block`` scaled up by a whole factor until the grid is at most ``_MAX_GRID`` a side."""
    nq, nk = -(-src.q_len // block[0]), -(-src.kv_len // block[1])
    factor = max(1, -(-nq // _MAX_GRID), -(-nk // _MAX_GRID))
    return block[0] * factor, block[1] * factor


def _mask_picture(
    src: _Source, max_elements: int, block_size: tuple[int, int], samples: int
) -> _Picture:
    """The picture of ``src``: every cell when small, else one cell per block (module doc)."""
    frame = src.num_patches_per_frame
    if src.q_len <= max_elements and src.kv_len <= max_elements:
        if src.kind == "spec":
            dense = src.mask.to_dense("cpu")
            note = ""
        elif src.kind == "dense":
            dense = src.mask
            note = ""
        else:
            dense = _block_mask_dense(src.mask)
            note = "as the kernel computes it: full blocks + mask_mod in partial blocks"
        return _Picture(
            _shade(dense.numpy().astype(np.float64)),
            (1, 1),
            src.q_len,
            src.kv_len,
            frame,
            note,
            False,
        )

    if src.kind == "block_mask":
        block = tuple(int(b) for b in src.mask.BLOCK_SIZE)
    else:
        block = _display_block(src, block_size)
    nq, nk = -(-src.q_len // block[0]), -(-src.kv_len // block[1])
    lengths = (src.q_len, src.kv_len)
    per_block = f"one cell per {block[0]}x{block[1]}-token block"
    if src.kind == "dense":
        counts, area = _dense_block_counts(src.mask, block)
        share = (counts.double() / area.double()).numpy()
        note = f"{per_block}; shade = share that attends"
    elif src.kind == "spec" and src.mask.relation is None:
        rows, cols = torch.meshgrid(torch.arange(nq), torch.arange(nk), indexing="ij")
        mod = src.mask.mask_mod_for("cpu")
        share, _ = _sampled_shares(mod, rows.reshape(-1), cols.reshape(-1), block, lengths, samples)
        share = share.view(nq, nk).numpy()
        note = f"{per_block}, each sampled at {samples}x{samples} cells (no closed form)"
    else:
        if src.kind == "spec":
            bm = src.mask.block_mask("cpu", block)
            mod = src.mask.mask_mod_for("cpu")
        else:
            bm, mod = src.mask, src.mask.mask_mod
        device = bm.kv_indices.device
        partial, full = _block_mask_grids(bm)
        share_t = full.to(torch.float64)
        rows, cols = partial.nonzero(as_tuple=True)
        if rows.numel():
            sampled, exact = _sampled_shares(mod, rows, cols, block, lengths, samples, device)
            # A sampled partial block shows as partial even when its samples all agree.
            share_t[rows, cols] = torch.where(exact, sampled, sampled.clamp(1e-9, 1 - 1e-9))
        share = share_t.numpy()
        note = per_block
        if rows.numel():
            note += f"; partial blocks shaded from {samples}x{samples} samples"
    partial_any = bool(((share > 0) & (share < 1)).any())
    return _Picture(_shade(share), block, *lengths, frame, note, partial_any)


def _too_many_cells(src: _Source, block_size: tuple[int, int], samples: int) -> _Picture:
    """The block-level picture of ``src``, for a figure that cannot give each cell its pixels."""
    pic = _mask_picture(src, 0, block_size, samples)
    why = (
        f"{max(src.q_len, src.kv_len)} tokens a side need more than {_MAX_FIGURE_PX} pixels "
        f"at {_MIN_CELL_PX} a token"
    )
    return dataclasses.replace(pic, note=f"{why}: {pic.note}")


def _block_mask_dense(bm: BlockMask) -> torch.Tensor:
    """``[q_len, kv_len]`` bool that a kernel computes from a (small) BlockMask."""
    q_len, kv_len = (int(n) for n in bm.seq_lengths)
    bq, bkv = (int(b) for b in bm.BLOCK_SIZE)
    partial, full = _block_mask_grids(bm)

    def expand(grid: torch.Tensor) -> torch.Tensor:
        return grid.repeat_interleave(bq, 0).repeat_interleave(bkv, 1)[:q_len, :kv_len]

    q = torch.arange(q_len).repeat_interleave(kv_len)
    kv = torch.arange(kv_len).repeat(q_len)
    inside = _evaluate(bm.mask_mod, q, kv, bm.kv_indices.device).view(q_len, kv_len)
    return expand(full) | (expand(partial) & inside)


def _frame_lines(ax, q_len: int, kv_len: int, p: int | None) -> tuple[LineCollection | None, str]:
    """Thin lines at frame boundaries; returns (the lines or None, why not) for legend and label."""
    if p is None:
        return None, ""
    frames = max(-(-q_len // p), -(-kv_len // p))
    if frames > _MAX_FRAME_LINES:
        return None, f"frame lines omitted: {frames} frames of {p} > {_MAX_FRAME_LINES}"
    segs = [((x, 0), (x, q_len)) for x in range(p, kv_len, p)]
    segs += [((0, y), (kv_len, y)) for y in range(p, q_len, p)]
    if not segs:
        return None, ""
    lines = LineCollection(
        segs, colors=FRAME_LINE_COLOR, linewidths=_FRAME_LINE_PT, zorder=_PICTURE_ZORDER + 0.1
    )
    ax.add_collection(lines)
    return lines, ""


def _token_axes(ax, q_len: int, kv_len: int, note: str) -> None:
    ax.set_xlim(0, kv_len)
    ax.set_ylim(q_len, 0)  # row 0 at the top
    ax.set_xlabel("key token (left to right)" + (f"\n{note}" if note else ""), fontsize=8)
    ax.set_ylabel("query token (top to bottom)", fontsize=8)
    ax.tick_params(labelsize=7)


def _draw_mask(ax, pic: _Picture, wrap: int = 60) -> tuple[list, LineCollection | None]:
    """Draw ``pic`` on ``ax`` (notes wrapped at ``wrap`` characters).

    Returns the legend handles and the frame lines (``None`` when there are none), which
    :func:`_fit_cells` thins at element level.
    """
    rows, cols = pic.rgb.shape[:2]
    ax.imshow(
        pic.rgb,
        extent=(0, cols * pic.cell[1], rows * pic.cell[0], 0),
        # Element level: each pixel takes the colour of the one cell under its centre (the
        # figure gives every cell whole pixels, see _fit_cells). Block level: sub-pixel blocks
        # are averaged rather than dropped.
        interpolation="nearest" if pic.cell == (1, 1) else "antialiased",
        aspect="equal",
        zorder=_PICTURE_ZORDER,  # over the inner half of the axes frame, which hid edge cells
    )
    lines, why_not = _frame_lines(ax, pic.q_len, pic.kv_len, pic.num_patches_per_frame)
    note = "; ".join(n for n in (pic.note, why_not) if n)
    _token_axes(ax, pic.q_len, pic.kv_len, textwrap.fill(note, wrap) if note else "")
    handles = [
        Patch(facecolor=ATTEND_COLOR, label="attend"),
        Patch(facecolor=MASKED_COLOR, edgecolor="#999999", label="masked"),
    ]
    if pic.partial:
        mid = _shade(np.array(0.5))
        handles.append(Patch(facecolor=mid, label="partial block\n(darker = more attend)"))
    if lines is not None:
        handles.append(
            Line2D(
                [],
                [],
                color=FRAME_LINE_COLOR,
                lw=_FRAME_LINE_PT,
                label=f"frame boundary ({pic.num_patches_per_frame} tokens)",
            )
        )
    return handles, lines


_Panel = tuple[Axes, _Picture, LineCollection | None]  # (axes, what it shows, frame lines)


def _settle(fig: Figure, axes: Sequence[Axes] | None = None, tol_px: float = 1e-3) -> None:
    """Lay ``fig`` out until its axes stop moving (by ``tol_px`` pixels; at most 12 passes).

    Constrained layout moves the axes between the first and second pass when a legend sits
    outside them, then by a quarter as much on each pass after; ``axes`` defaults to all of them.
    """
    before = None
    for _ in range(12):
        fig.draw_without_rendering()
        boxes = np.array([ax.get_window_extent().bounds for ax in (axes or fig.axes)])
        if before is not None and np.abs(boxes - before).max(initial=0.0) <= tol_px:
            return
        before = boxes


def _fit_cells(fig: Figure, panels: Sequence[_Panel]) -> int | None:
    """Raise ``fig``'s dpi until every element-level cell has ``_MIN_CELL_PX`` clear pixels.

    The layout is in inches, so the dpi scales every axes' pixels alike. Each element-level
    panel's frame lines are thinned to at most a quarter of a cell, and the dpi is raised until a
    cell spans ``_MIN_CELL_PX`` pixels more than a frame line: the pixel under any cell's centre
    then lies wholly inside that cell, clear of the lines, and shows exactly its colour. Returns
    ``None`` when that is done (``fig.dpi`` is raised only when needed). When the neediest panel
    would take more than ``_MAX_FIGURE_PX`` pixels on the figure's long side, returns its index
    in ``panels`` and leaves the dpi as it was: the caller draws that panel alone by block and
    tries again, so a panel that fits is never drawn by block for another's sake.
    """
    cells = [i for i, (_, pic, _) in enumerate(panels) if pic.cell == (1, 1)]
    if not cells:
        return None

    def dpi_needed() -> dict[int, float]:
        need = {}
        for i in cells:
            ax, pic, lines = panels[i]
            box = ax.get_window_extent()
            cell_in = min(box.width / pic.kv_len, box.height / pic.q_len) / fig.dpi
            line_pt = 0.0
            if lines is not None:  # unsnapped: a line covers exactly its width about the edge
                line_pt = min(_FRAME_LINE_PT, 72 * cell_in / 4)
                lines.set_linewidth(line_pt)
                lines.set_snap(False)
            need[i] = _MIN_CELL_PX / (cell_in - line_pt / 72)  # pixels = inches * dpi
        return need

    fig.draw_without_rendering()
    if max(dpi_needed().values()) <= 0.85 * fig.dpi:  # ample: later passes move the axes a bit
        return None
    dpi = fig.dpi
    cap = _MAX_FIGURE_PX / max(fig.get_size_inches())
    for _ in range(6):  # the layout barely moves with the dpi: this settles in a round or two
        _settle(fig, [panels[i][0] for i in cells])
        needs = dpi_needed()
        need = max(needs.values())
        if need <= fig.dpi:
            return None
        need *= 1.01  # a margin for pixel rounding of the axes
        if need > cap:
            break
        fig.set_dpi(need)
    fig.set_dpi(dpi)
    return max(needs, key=needs.__getitem__)


def _new_figure(figsize: tuple[float, float], dpi: float) -> Figure:
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, path: str | os.PathLike | None, freeze: bool = False) -> Figure:
    """Settle the layout, fix it if ``freeze``, then save to ``path`` if given.

    ``freeze`` is for a figure whose dpi was raised to give each cell whole pixels: one layout
    pass here, then no layout engine, makes the saved file and every later draw identical to the
    pixel (cells drawn two pixels wide must not shift between the file and a later ``savefig``).
    Any other figure keeps its constrained layout, so that what a user adds or changes after the
    call (a suptitle, a colorbar, a new size) is laid out again; it is settled first, so that a
    later draw of the unchanged figure matches the saved file.
    """
    if freeze:
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
    else:
        _settle(fig)
    if path is not None:
        fig.savefig(Path(path), dpi=fig.dpi)
    return fig


def visualize_mask(
    mask: AnyMask,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    *,
    save: bool = True,
    num_patches_per_frame: int | None = None,
    max_elements: int = 512,
    block_size: BlockSize = 128,
    samples_per_block: int = 8,
    figsize: tuple[float, float] = (7.0, 5.0),
    dpi: float = 100,
) -> Figure:
    """Draw a mask (attend vs masked cells, frame lines) and save it as a PNG.

    Rows are queries (top to bottom), columns are keys (left to right), both in token units.
    Masks up to ``max_elements`` tokens a side show every cell, each at least two whole pixels a
    side: the dpi is raised when the axes would give a cell less (the figure keeps its size in
    inches). Longer ones are drawn one cell per block without building the ``[q_len, kv_len]``
    mask (see the module docstring for the rule, how each input is read and how partial blocks
    are shaded).

    Args:
        mask: a ``MaskSpec``, a ``BlockMask`` or a ``[q_len, kv_len]`` bool tensor (True = attend).
        title: the figure title; defaults to the mask's name and parameters.
        path: where to save; defaults to ``filename_for_title(title)`` in the working directory
            (``"My Frame Mask"`` -> ``my_frame_mask.png``).
        save: ``False`` only returns the figure.
        num_patches_per_frame: frame size for the frame lines; a spec's own by default.
        max_elements: the longest side drawn cell by cell (block level beyond; also block level
            when two pixels a cell would need more than 8192 pixels on the figure's long side).
        block_size: tokens per cell a side when drawing blocks (a BlockMask uses its own); raised
            by a whole factor if the grid would exceed 1024 cells a side.
        samples_per_block: cells sampled per block side to shade partial blocks.
        figsize: figure size in inches.
        dpi: dots per inch of the figure and of the saved PNG; a cell-by-cell picture raises it
            (``fig.dpi``) until every cell spans two pixels.

    Returns:
        The matplotlib ``Figure`` (Agg canvas; no pyplot state), with constrained layout: a
        suptitle, colorbar or new size added afterwards is laid out again. When the dpi was
        raised (``fig.dpi > dpi``) the layout is fixed instead (no layout engine), so that the
        cells keep their pixels between the saved file and later draws; call
        ``fig.set_layout_engine("constrained")`` before adding to such a figure.

    Example:
        >>> from pathlib import Path
        >>> from flexframe import get_mask
        >>> spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=3)
        >>> fig = visualize_mask(spec, title="My Frame Mask")
        >>> Path("my_frame_mask.png").exists(), fig.axes[0].get_ylabel()
        (True, 'query token (top to bottom)')
    """
    src = _as_source(mask, num_patches_per_frame)
    max_elements = check_int("max_elements", max_elements, minimum=0)
    samples = check_int("samples_per_block", samples_per_block, minimum=1)
    block = _block_size(block_size)
    title = _default_title(src) if title is None else title
    target = None
    if save:
        target = Path(path) if path is not None else Path.cwd() / filename_for_title(title)

    def draw(pic: _Picture) -> tuple[Figure, list[_Panel]]:
        fig = _new_figure(figsize, dpi)
        ax = fig.add_subplot()
        handles, lines = _draw_mask(ax, pic)
        ax.set_title(textwrap.fill(title, 60), fontsize=10)
        ax.legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False
        )
        return fig, [(ax, pic, lines)]

    fig, panels = draw(_mask_picture(src, max_elements, block, samples))
    if _fit_cells(fig, panels) is not None:
        fig, _ = draw(_too_many_cells(src, block, samples))
    return _finish(fig, target, freeze=fig.dpi != dpi)


def mask_to_png(
    mask: AnyMask,
    title: str | None = None,
    *,
    num_patches_per_frame: int | None = None,
    figsize: tuple[float, float] = (5.5, 4.0),
    dpi: float = 80,
) -> bytes:
    """The picture of :func:`visualize_mask` as PNG bytes, saving nothing.

    The PNG has the figure's pixels: at a raised dpi for a mask drawn cell by cell that needs it
    (a 512-token mask is about 1700 x 1240 pixels). For Jupyter, :func:`mask_to_png_with_size`
    also gives the size to show it at.

    Example:
        >>> from flexframe import get_mask
        >>> png = mask_to_png(get_mask("token-causal", seq_len=8))
        >>> png[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    return mask_to_png_with_size(
        mask, title, num_patches_per_frame=num_patches_per_frame, figsize=figsize, dpi=dpi
    )[0]


def mask_to_png_with_size(
    mask: AnyMask,
    title: str | None = None,
    *,
    num_patches_per_frame: int | None = None,
    figsize: tuple[float, float] = (5.5, 4.0),
    dpi: float = 80,
) -> tuple[bytes, dict[str, int]]:
    """:func:`mask_to_png`'s bytes and ``{"width": w, "height": h}``, for ``_repr_png_``.

    ``w`` and ``h`` are the figure's size in pixels at ``dpi`` (``figsize * dpi``, what
    matplotlib gives at that dpi), whatever dpi the PNG was drawn at: IPython takes this
    ``(data, metadata)`` pair from ``_repr_png_`` and Jupyter shows the picture at that size,
    its extra pixels (each cell of a long mask gets two whole ones) kept for zooming in.

    Example:
        >>> from flexframe import get_mask
        >>> png, size = mask_to_png_with_size(get_mask("token-causal", seq_len=8))
        >>> png[:8], size
        (b'\\x89PNG\\r\\n\\x1a\\n', {'width': 440, 'height': 320})
    """
    fig = visualize_mask(
        mask,
        title,
        save=False,
        num_patches_per_frame=num_patches_per_frame,
        figsize=figsize,
        dpi=dpi,
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)  # raised for a long mask drawn cell by cell
    width, height = fig.get_size_inches() * dpi  # matplotlib's canvas truncates the same way
    return buffer.getvalue(), {"width": int(width), "height": int(height)}


def plot_block_sparsity(
    mask: AnyMask,
    block_size: BlockSize | None = None,
    *,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    num_patches_per_frame: int | None = None,
    figsize: tuple[float, float] = (7.0, 5.0),
    dpi: float = 100,
) -> Figure:
    """Draw the block grid FlexAttention runs: full, partial and skipped blocks in three colours.

    Full blocks (``FULL_BLOCK_COLOR``) are computed without evaluating the mask_mod, partial
    blocks (``PARTIAL_BLOCK_COLOR``) with it, skipped blocks (``SKIPPED_BLOCK_COLOR``) not at all.
    Axes are in token units (queries top to bottom, keys left to right); the whole padded grid is
    shown, with a black dashed line where the real sequence ends inside the last block. The
    title gives the share of blocks skipped and the share of dense attention FLOPs computed (see
    :attr:`BlockSparsity.computed_share`); the legend gives the counts.

    Args:
        mask: a ``MaskSpec``, ``BlockMask`` or ``[q_len, kv_len]`` bool tensor (as
            :func:`block_sparsity` reads it).
        block_size: an int or ``(BLOCK_Q, BLOCK_KV)``; ``None`` means 128, or a BlockMask's own.
        title: first title line; defaults to the mask's name and parameters.
        path: save the figure there when given (nothing is saved otherwise).
        num_patches_per_frame: frame size for the frame lines; a spec's own by default.
        figsize: figure size in inches.
        dpi: dots per inch.

    Returns:
        The matplotlib ``Figure``, with constrained layout: a suptitle, colorbar or new size
        added afterwards is laid out again (its dpi is never raised).

    Example:
        >>> from flexframe import get_mask
        >>> spec = get_mask("causal-frame", num_frames=4, num_patches_per_frame=2)
        >>> fig = plot_block_sparsity(spec, block_size=2)
        >>> print(fig.axes[0].get_title())
        causal-frame (num_frames=4, num_patches_per_frame=2)
        37.5% of blocks skipped; 62.5% of dense attention FLOPs computed
    """
    src = _as_source(mask, num_patches_per_frame)
    block = None if block_size is None else _block_size(block_size)
    partial, full, (bq, bkv) = _classify(src, block)
    nq, nk = full.shape
    stats = _stats(src, partial, full, (bq, bkv))
    classes = partial.numpy().astype(np.int8) + 2 * full.numpy().astype(np.int8)
    palette = np.stack(
        [_rgb(c) for c in (SKIPPED_BLOCK_COLOR, PARTIAL_BLOCK_COLOR, FULL_BLOCK_COLOR)]
    )
    fig = _new_figure(figsize, dpi)
    ax = fig.add_subplot()
    ax.imshow(palette[classes], extent=(0, nk * bkv, nq * bq, 0), interpolation="antialiased")
    if max(nq, nk) <= 64:  # block edges, while they stay visible
        segs = [((j * bkv, 0), (j * bkv, nq * bq)) for j in range(1, nk)]
        segs += [((0, i * bq), (nk * bkv, i * bq)) for i in range(1, nq)]
        ax.add_collection(LineCollection(segs, colors="#ffffff", linewidths=0.6))
    lines, why_not = _frame_lines(ax, src.q_len, src.kv_len, src.num_patches_per_frame)
    ends = []
    if src.kv_len < nk * bkv:
        ends.append(((src.kv_len, 0), (src.kv_len, nq * bq)))
    if src.q_len < nq * bq:
        ends.append(((0, src.q_len), (nk * bkv, src.q_len)))
    if ends:
        ax.add_collection(
            LineCollection(ends, colors=SEQUENCE_END_COLOR, linewidths=1.0, linestyles="--")
        )
    _token_axes(ax, nq * bq, nk * bkv, why_not)
    head = _default_title(src) if title is None else title
    ax.set_title(
        f"{textwrap.fill(head, 60)}\n{stats.skipped_share:.1%} of blocks skipped; "
        f"{stats.computed_share:.1%} of dense attention FLOPs computed",
        fontsize=9,
    )
    handles = [
        Patch(facecolor=FULL_BLOCK_COLOR, label=f"full (no mask_mod): {stats.full}"),
        Patch(facecolor=PARTIAL_BLOCK_COLOR, label=f"partial (mask_mod): {stats.partial}"),
        Patch(
            facecolor=SKIPPED_BLOCK_COLOR, edgecolor="#999999", label=f"skipped: {stats.skipped}"
        ),
    ]
    if lines is not None:
        handles.append(
            Line2D([], [], color=FRAME_LINE_COLOR, lw=_FRAME_LINE_PT, label="frame boundary")
        )
    if ends:
        handles.append(
            Line2D([], [], color=SEQUENCE_END_COLOR, lw=1.0, ls="--", label="sequence end")
        )
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=8,
        frameon=False,
        title=f"{stats.total} blocks of {bq}x{bkv}",
        title_fontsize=8,
    )
    return _finish(fig, path)


def compare_masks(
    masks: Sequence[AnyMask] | Mapping[str, AnyMask],
    *,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    ncols: int | None = None,
    max_elements: int = 512,
    block_size: BlockSize = 128,
    samples_per_block: int = 8,
    panel_size: float = 3.2,
    dpi: float = 100,
) -> Figure:
    """Draw several masks side by side, one panel each, with one shared legend.

    Each panel is drawn as :func:`visualize_mask` would draw it: cell by cell up to
    ``max_elements`` tokens a side, one cell per block beyond. The dpi is raised until every
    cell-by-cell panel gives each cell two whole pixels a side; a panel that would need more
    than 8192 pixels on the figure's long side for that is drawn by block, the neediest first,
    and the others keep their cells.

    Args:
        masks: a sequence of masks (panels titled by spec name) or a mapping ``{title: mask}``.
        title: a title over all panels.
        path: save the figure there when given (nothing is saved otherwise).
        ncols: panels per row; up to 4 by default.
        max_elements: the longest side drawn cell by cell.
        block_size: tokens per cell a side when drawing blocks.
        samples_per_block: cells sampled per block side to shade partial blocks.
        panel_size: inches per panel.
        dpi: dots per inch; raised when a cell-by-cell panel needs it.

    Returns:
        The matplotlib ``Figure``, with constrained layout (a suptitle, colorbar or new size
        added afterwards is laid out again), or with its layout fixed when the dpi was raised
        (``fig.dpi > dpi``), so that the cells keep their pixels between the saved file and
        later draws; call ``fig.set_layout_engine("constrained")`` before adding to it.

    Example:
        >>> from flexframe import get_mask
        >>> fig = compare_masks({
        ...     "token-causal": get_mask("token-causal", seq_len=8),
        ...     "causal-frame": get_mask("causal-frame", num_frames=4, num_patches_per_frame=2),
        ... })
        >>> [ax.get_title() for ax in fig.axes]
        ['token-causal', 'causal-frame']
    """
    if isinstance(masks, Mapping):
        items = list(masks.items())
    elif isinstance(masks, Sequence) and not isinstance(masks, (str, bytes)):
        items = [(None, m) for m in masks]
    else:
        raise TypeError(
            f"masks must be a sequence of masks or a mapping of title -> mask, "
            f"got {type(masks).__name__}"
        )
    if not items:
        raise ValueError("masks must not be empty")
    max_elements = check_int("max_elements", max_elements, minimum=0)
    samples = check_int("samples_per_block", samples_per_block, minimum=1)
    block = _block_size(block_size)
    sources = []
    for i, (label, m) in enumerate(items):
        arg = f"masks[{label!r}]" if label is not None else f"masks[{i}]"
        src = _as_source(m, None, arg)
        sources.append((src.name if label is None else str(label), src))
    ncols = min(len(items), 4) if ncols is None else check_int("ncols", ncols, minimum=1)
    nrows = math.ceil(len(items) / ncols)

    def draw(pics: list[_Picture]) -> tuple[Figure, list[_Panel]]:
        fig = _new_figure((panel_size * ncols, panel_size * nrows + 0.8), dpi)
        handles: dict[str, object] = {}
        panels = []
        for i, ((label, _), pic) in enumerate(zip(sources, pics, strict=True)):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            drawn, lines = _draw_mask(ax, pic, wrap=max(20, int(panel_size * 11)))
            for h in drawn:
                handles.setdefault(h.get_label().split(" (")[0], h)
            ax.set_title(textwrap.fill(label, 40), fontsize=9)
            panels.append((ax, pic, lines))
        fig.legend(
            handles=list(handles.values()),
            labels=list(handles),
            loc="outside lower center",
            ncols=len(handles),
            fontsize=8,
            frameon=False,
        )
        if title is not None:
            fig.suptitle(title, fontsize=11)
        return fig, panels

    pics = [_mask_picture(src, max_elements, block, samples) for _, src in sources]
    fig, panels = draw(pics)
    # Panels that cannot get their pixels go to block level one at a time, the neediest first:
    # the others keep their cells (the layout, and so every panel's need, is measured again).
    while (worst := _fit_cells(fig, panels)) is not None:
        pics[worst] = _too_many_cells(sources[worst][1], block, samples)
        fig, panels = draw(pics)
    return _finish(fig, path, freeze=fig.dpi != dpi)


def plot_frame_timeline(
    streams: Mapping[str, torch.Tensor | Sequence[int]],
    num_frames: int,
    *,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
) -> Figure:
    """Draw which frames of a clip each stream takes, one row per stream, time left to right.

    Each stream is a list of original frame indices in its own order (e.g. the fast and slow
    indices of a sampler, or their merged timestamps); each entry is a dot at its frame, labelled
    with its position in the stream (a frame taken twice shows both positions). A stream whose
    dots sit too close for their labels is drawn without labels, and the axis label names it.

    Args:
        streams: ``{name: [n] frame indices}``, each in ``[0, num_frames)``; drawn top to bottom
            in mapping order.
        num_frames: frames in the clip.
        title: the figure title; defaults to ``"frames of a {num_frames}-frame clip"``.
        path: save the figure there when given (nothing is saved otherwise).
        figsize: figure size in inches; by default it grows with the number of streams.
        dpi: dots per inch.

    Returns:
        The matplotlib ``Figure``, with constrained layout: a suptitle, colorbar or new size
        added afterwards is laid out again (its dpi is never raised).

    Example:
        >>> fig = plot_frame_timeline({"fast": [13, 14, 15], "slow": [8, 12]}, num_frames=16)
        >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
        ['fast', 'slow']
    """
    t = check_int("num_frames", num_frames, minimum=1)
    if not isinstance(streams, Mapping) or not streams:
        raise TypeError(
            f"streams must be a non-empty mapping of name -> frame indices, got {streams!r}"
        )
    rows = []
    for name, values in streams.items():
        idx = check_int_sequence(f"streams[{name!r}]", values)
        for i, v in enumerate(idx):
            if not 0 <= v < t:
                raise ValueError(
                    f"streams[{name!r}][{i}] = {v} is outside the clip's frames 0..{t - 1} "
                    f"(num_frames={t})"
                )
        rows.append((str(name), idx))
    figsize = (8.0, 1.0 + 0.6 * len(rows)) if figsize is None else figsize
    fig = _new_figure(figsize, dpi)
    ax = fig.add_subplot()
    colors = [f"C{i % 10}" for i in range(len(rows))]
    px_per_frame = 0.8 * figsize[0] * dpi / t  # the axes take about 80% of the width
    char_px = 6 / 72 * dpi * 0.6  # a 6-point digit
    unlabelled = []
    for y, ((name, idx), color) in enumerate(zip(rows, colors, strict=True)):
        ax.scatter(idx, [y] * len(idx), s=28, color=color, zorder=3)
        positions: dict[int, list[int]] = {}
        for pos, v in enumerate(idx):
            positions.setdefault(v, []).append(pos)
        labels = {v: ",".join(str(p) for p in pos) for v, pos in positions.items()}
        frames = sorted(labels)
        widest = max(len(label) for label in labels.values()) * char_px
        gaps = [b - a for a, b in zip(frames[:-1], frames[1:], strict=True)]
        gap = min(gaps, default=t) * px_per_frame
        if gap < widest + 2:  # labels would overlap
            unlabelled.append(name)
            continue
        for v, label in labels.items():
            ax.annotate(
                label, (v, y), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=6
            )
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.4, -0.6)  # first stream on top
    ax.set_xlim(-0.5, t - 0.5)
    if t <= 200:
        ax.set_xticks(range(t), minor=True)
    ax.grid(axis="x", which="both", color="#eeeeee", lw=0.5)
    ax.set_axisbelow(True)
    note = "labels: position in stream"
    if unlabelled:
        note += f" (left out where dots crowd: {', '.join(unlabelled)})"
    ax.set_xlabel(f"original frame index (time runs left to right)\n{note}", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"frames of a {t}-frame clip" if title is None else title, fontsize=10)
    return _finish(fig, path)


def mask_summary(mask: AnyMask, block_size: BlockSize = 128) -> str:
    """A few lines on a mask: name, description, parameters, lengths, frames and block sparsity.

    Block sparsity is left out, and the line says why, for a spec without a closed form whose
    ``q_len * kv_len`` exceeds 2**26 cells: its blocks are counted by evaluating the mask_mod at
    every cell (see :func:`block_sparsity`, which does it in bounded memory), too slow for a
    summary that Jupyter shows on its own.

    Example:
        >>> from flexframe import get_mask
        >>> print(mask_summary(get_mask("causal-frame", num_frames=3, num_patches_per_frame=3)))
        causal-frame: own frame and all earlier frames
        params: num_frames=3, num_patches_per_frame=3
        q_len=9, kv_len=9; 3 frames of 3 tokens
        blocks: 1 block of 128x128: 0 full, 1 partial, 0 skipped (0.0% skipped); 20227.2% of
        dense attention FLOPs computed
    """
    src = _as_source(mask, None)
    block = _block_size(block_size)
    if src.kind == "spec":
        spec = src.mask
        lines = [f"{spec.name}: {spec.description}" if spec.description else spec.name]
        params = ", ".join(f"{k}={v}" for k, v in spec.params.items())
        lines.append(f"params: {params}" if params else "params: none")
    else:
        lines = [src.name if src.kind == "block_mask" else "dense bool mask"]
    frames = ""
    if src.num_patches_per_frame is not None:
        p = src.num_patches_per_frame
        frames = f"; {-(-src.q_len // p)} frames of {p} tokens"
    lines.append(f"q_len={src.q_len}, kv_len={src.kv_len}{frames}")
    if src.kind == "spec" and src.mask.relation is None and src.q_len * src.kv_len > 1 << 26:
        lines.append(
            f"blocks: not computed (no closed form: all {src.q_len * src.kv_len} cells would be "
            "evaluated; block_sparsity() does it)"
        )
    else:
        lines.append(f"blocks: {block_sparsity(mask, None if src.kind == 'block_mask' else block)}")
    return "\n".join(lines)
