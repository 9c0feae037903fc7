"""Pictures of attention masks: every cell, the block grid, side by side, and frame timelines.

**Saving**: every picture function returns its matplotlib ``Figure`` and saves a PNG only when
``path`` is given. **Reading**: queries run top to bottom, keys left to right, axes in tokens;
colours are the ``*_COLOR`` constants below. Up to ``max_elements`` tokens a side every cell is
drawn, with frame lines on frame boundaries (up to 64 frames, at most a quarter cell wide).
Beyond, and in :func:`plot_block_sparsity`, one cell per block, full / partial / skipped, from the
package's one block classification (:func:`flexframe.masks.blocks.block_grids`), never from the
``[q_len, kv_len]`` mask: the whole padded grid, frame ticks and sequence-end markers outside the
cells; past 1024 blocks a side, one cell per square group of blocks (full if all are, skipped if
all are, else partial). Cells of a pixel or more are drawn "nearest" (exact colours), smaller ones
averaged. **Inputs**: a ``MaskSpec``, a ``BlockMask`` (batch 0, head 0) or a ``[q_len, kv_len]``
bool tensor (True = may attend), a prompt mask of one prompt (``prompt-*``, B = 1; one of B:
``spec.to_dense()[b]``); a spec without a closed form (``a & b``) gets its blocks from
torch's ``create_block_mask``, which evaluates every cell at once on the CPU, so pictures refuse
it above 2**28 cells. matplotlib's object API only (``Figure`` + Agg canvas, never ``pyplot``).
"""

from __future__ import annotations

import io
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import offset_copy
from torch.nn.attention.flex_attention import BlockMask

from flexframe._checks import check_int, check_int_sequence, normalize_block_size
from flexframe.masks.blocks import BlockSparsity, block_grids, dense_from_block_mask
from flexframe.masks.prompt import PromptMaskSpec
from flexframe.masks.spec import MaskSpec

__all__ = [
    "ATTEND_COLOR", "FRAME_LINE_COLOR", "FULL_BLOCK_COLOR", "MASKED_COLOR", "PARTIAL_BLOCK_COLOR",
    "SEQUENCE_END_COLOR", "SKIPPED_BLOCK_COLOR", "BlockSparsity", "block_sparsity",
    "compare_masks", "filename_for_title", "mask_summary", "mask_to_png", "plot_block_sparsity",
    "plot_frame_timeline", "visualize_mask",
]  # fmt: skip

ATTEND_COLOR = "#1f4e8c"  # a cell where the query may attend (dark blue)
MASKED_COLOR = "#e6e6e6"  # a cell where the query may not attend (light grey)
FULL_BLOCK_COLOR = "#1f4e8c"  # a full block: computed without evaluating the mask_mod
PARTIAL_BLOCK_COLOR = "#f5a623"  # a partial block: computed, the mask_mod evaluated inside
SKIPPED_BLOCK_COLOR = "#e6e6e6"  # a skipped block: never computed
FRAME_LINE_COLOR = "#d1495b"  # frame boundaries: lines between cells, ticks beside a block grid
SEQUENCE_END_COLOR = "#000000"  # where the real sequence ends in a padded block grid (outside)

AnyMask = MaskSpec | BlockMask | torch.Tensor
BlockSize = int | tuple[int, int]
PathLike = str | os.PathLike
Grids = tuple[torch.Tensor, torch.Tensor, tuple[int, int], int]  # partial, full, block, group

_MAX_GRID = 1024  # block cells a side at most; square groups of blocks per cell beyond
_MAX_FRAME_LINES, _MAX_FRAME_TICKS = 64, 256  # more would bury the cells / the axis
_FRAME_LINE_PT = (0.3, 0.8)  # frame-line width in points: a quarter cell, within these bounds
_COUNT_CELLS = 1 << 22  # mask_summary counts attending pairs up to this many cells
_SCAN_CELLS = 1 << 26  # ... and the blocks of a spec without closed form up to this many
_DRAW_CELLS = 1 << 28  # pictures of a spec without closed form: 16K tokens a side, ~3 GB
_LEGEND: dict = {"fontsize": 8, "frameon": False}
_SIDE_LEGEND: dict = {"loc": "upper left", "bbox_to_anchor": (1.02, 1), **_LEGEND}


def _rgb(*colors: str) -> np.ndarray:  # [len(colors), 3] uint8
    return np.array([[round(255 * c) for c in to_rgb(color)] for color in colors], np.uint8)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _params(params: Mapping) -> str:
    return ", ".join(f"{k}=({_params(v)})" if isinstance(v, Mapping) else f"{k}={v}"
                     for k, v in params.items())  # fmt: skip


# -- inputs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Mask:
    mask: AnyMask
    q_len: int
    kv_len: int
    frame: int | None  # tokens per frame, when known
    label: str  # the default title


def _read(mask: object, num_patches_per_frame: object = None, arg: str = "mask") -> _Mask:
    """One mask in any accepted form, or an error that says what to pass instead."""
    p = None
    if num_patches_per_frame is not None:
        p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)
    if isinstance(mask, PromptMaskSpec):  # one mask per prompt: a picture shows one
        if mask.batch_size != 1:
            raise ValueError(f"{arg} is {mask.name!r} over {mask.batch_size} prompts; a picture "
                             f"shows one: pass {arg}.to_dense()[b] for prompt b")  # fmt: skip
        label = f"{mask.name} (one prompt)"
        return _Mask(mask.to_dense("cpu")[0], mask.q_len, mask.kv_len, p, label)
    if isinstance(mask, MaskSpec):
        label = f"{mask.name} ({_params(mask.params)})" if mask.params else mask.name
        return _Mask(mask, mask.q_len, mask.kv_len, p or mask.num_patches_per_frame, label)
    if isinstance(mask, BlockMask):
        q_len, kv_len = (int(n) for n in mask.seq_lengths)
        return _Mask(mask, q_len, kv_len, p, f"BlockMask [{q_len} x {kv_len}]")
    if isinstance(mask, torch.Tensor):
        shape = tuple(mask.shape)
        if mask.dim() != 2:
            take = {4: "[0, 0] for a [B, H, q_len, kv_len]", 3: "[0] for a [B, q_len, kv_len]"}
            fix = f"; pass {arg}{take[mask.dim()]} mask" if mask.dim() in take else ""
            raise ValueError(f"{arg} must be a [q_len, kv_len] bool tensor, got shape {shape}{fix}")
        if mask.dtype != torch.bool:
            fix = f"for a 0/1 mask pass `{arg}.bool()`"
            if mask.is_floating_point():
                fix = f"for an additive float mask (0 = attend, -inf = masked) pass `{arg} == 0`"
            raise TypeError(
                f"{arg} must be a bool tensor (True = may attend), got dtype {mask.dtype}; {fix}"
            )
        if 0 in shape:
            raise ValueError(f"{arg} must not be empty, got shape {shape}")
        q_len, kv_len = shape
        return _Mask(mask.detach().cpu(), q_len, kv_len, p, f"mask [{q_len} x {kv_len}]")
    hint = f"; pass torch.from_numpy({arg})" if isinstance(mask, np.ndarray) else ""
    raise TypeError(
        f"{arg} must be a MaskSpec, a BlockMask or a [q_len, kv_len] bool tensor, got "
        f"{type(mask).__name__}{hint}"
    )


def _dense(m: _Mask) -> torch.Tensor:
    """``[q_len, kv_len]`` bool on the CPU (of a BlockMask: what the kernel computes)."""
    if isinstance(m.mask, MaskSpec):
        return m.mask.to_dense("cpu")
    return dense_from_block_mask(m.mask).cpu() if isinstance(m.mask, BlockMask) else m.mask


def _grids(m: _Mask, block_size: BlockSize | None, cap: bool) -> Grids:
    """Block grids; with ``cap``, ``g`` blocks a side per cell to stay within ``_MAX_GRID``."""
    if not isinstance(m.mask, BlockMask):
        bq, bk = normalize_block_size(block_size)
        g = max(1, -(-m.q_len // (bq * _MAX_GRID)), -(-m.kv_len // (bk * _MAX_GRID))) if cap else 1
        cells = -(-m.q_len // (bq * g)) * bq * g * (-(-m.kv_len // (bk * g)) * bk * g)
        if isinstance(m.mask, MaskSpec) and m.mask.relation is None and cells > _DRAW_CELLS:
            why = f"torch's create_block_mask evaluates all {cells:,} cells at once on the CPU"
            raise ValueError(
                f"mask {m.mask.name!r} has no closed form: {why} (pictures stop at "
                f"{_DRAW_CELLS:,}); draw its BlockMask built on a GPU (spec.block_mask('cuda'))"
            )
        partial, full, _, _ = block_grids(m.mask, (bq * g, bk * g))
        return partial, full, (bq, bk), g
    partial, full, bs, _ = block_grids(m.mask, block_size)
    g = max(1, -(-max(full.shape) // _MAX_GRID)) if cap else 1
    if g > 1:  # a group is full if all its blocks are, skipped if all are, else partial

        def grouped(grid: torch.Tensor) -> torch.Tensor:
            pad = (0, -grid.shape[1] % g, 0, -grid.shape[0] % g)
            grid = torch.nn.functional.pad(grid.to(torch.uint8), pad)
            return grid.view(grid.shape[0] // g, g, grid.shape[1] // g, g)

        computed = grouped(partial | full).amax(dim=(1, 3)).bool()
        full = grouped(full).amin(dim=(1, 3)).bool()
        partial = computed & ~full
    return partial, full, bs, g


def _stats(m: _Mask, grids: Grids) -> BlockSparsity:
    partial, full, bs, _ = grids
    (nq, nk), n_full, n_partial = full.shape, int(full.sum()), int(partial.sum())
    skipped = nq * nk - n_full - n_partial
    return BlockSparsity(m.q_len, m.kv_len, bs, nq, nk, n_full, n_partial, skipped)


# -- drawing ------------------------------------------------------------------------------------
@dataclass
class _Panel:
    ax: Axes
    image: AxesImage
    cells: tuple[int, int]  # image cells (rows, cols)
    lines: LineCollection | None  # frame lines, thinned to the cell size once laid out
    handles: list


def _figure(figsize: tuple[float, float], dpi: float) -> Figure:
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _draw(ax: Axes, rgb: np.ndarray, width: int, height: int, note: str, wrap: int) -> AxesImage:
    """``rgb`` over ``[0, width) x [0, height)`` tokens, query 0 on top."""
    square = max(width, height) <= 4 * min(width, height)  # else fill the axes (a long memory)
    aspect: Literal["equal", "auto"] = "equal" if square else "auto"
    image = ax.imshow(rgb, extent=(0, width, height, 0), aspect=aspect, interpolation="nearest")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    note = f"\n{textwrap.fill(note, wrap)}" if note else ""
    ax.set_xlabel(f"key token (left to right){note}", fontsize=8)
    ax.set_ylabel("query token (top to bottom)", fontsize=8)
    ax.tick_params(labelsize=7)
    return image


def _cells(ax: Axes, m: _Mask, wrap: int) -> _Panel:
    """Every cell of ``m``, with frame lines on the cell boundaries."""
    handles: list = [
        Patch(facecolor=ATTEND_COLOR, label="attend"),
        Patch(facecolor=MASKED_COLOR, edgecolor="#999999", label="masked"),
    ]
    lines, notes, p = None, [], m.frame
    if isinstance(m.mask, BlockMask):
        notes.append("as the kernel computes it (batch 0, head 0)")
    if p is not None and max(m.q_len, m.kv_len) > _MAX_FRAME_LINES * p:
        notes.append(f"frame lines left out: over {_MAX_FRAME_LINES} frames of {p} tokens")
    elif p is not None and max(m.q_len, m.kv_len) > p:
        segs = [((x, 0), (x, m.q_len)) for x in range(p, m.kv_len, p)]
        segs += [((0, y), (m.kv_len, y)) for y in range(p, m.q_len, p)]
        lines = LineCollection(segs, colors=FRAME_LINE_COLOR, linewidths=_FRAME_LINE_PT[1])
        ax.add_collection(lines)
        handles.append(
            Line2D([], [], color=FRAME_LINE_COLOR, label=f"frame ({_count(p, 'token')})")
        )
    rgb = _rgb(MASKED_COLOR, ATTEND_COLOR)[_dense(m).numpy().astype(np.uint8)]
    image = _draw(ax, rgb, m.kv_len, m.q_len, "; ".join(notes), wrap)
    return _Panel(ax, image, (m.q_len, m.kv_len), lines, handles)


def _blocks(ax: Axes, m: _Mask, grids: Grids, note: str, wrap: int) -> _Panel:
    """One cell per block (or square group of blocks): full / partial / skipped colours."""
    partial, full, (bq, bk), g = grids
    (nq, nk), fig = full.shape, cast(Figure, ax.figure)
    classes = partial.numpy().astype(np.uint8) + 2 * full.numpy().astype(np.uint8)
    rgb = _rgb(SKIPPED_BLOCK_COLOR, PARTIAL_BLOCK_COLOR, FULL_BLOCK_COLOR)[classes]
    width, height = nk * bk * g, nq * bq * g
    cell = f"one cell per {bq}x{bk}-token block"
    if g > 1:
        cell = f"one cell per {g}x{g} blocks of {bq}x{bk} tokens (full if all are, skipped if all)"
    image = _draw(ax, rgb, width, height, "; ".join(filter(None, [note, cell])), wrap)
    handles: list = [
        Patch(facecolor=FULL_BLOCK_COLOR, label="full block (no mask_mod)"),
        Patch(facecolor=PARTIAL_BLOCK_COLOR, label="partial block (mask_mod)"),
        Patch(facecolor=SKIPPED_BLOCK_COLOR, edgecolor="#999999", label="skipped block"),
    ]
    if max(nq, nk) <= 64:  # white block edges, while they stay visible
        segs = [((j * bk * g, 0), (j * bk * g, height)) for j in range(1, nk)]
        segs += [((0, i * bq * g), (width, i * bq * g)) for i in range(1, nq)]
        ax.add_collection(LineCollection(segs, colors="white", linewidths=0.5))
    end = {"color": SEQUENCE_END_COLOR, "ms": 5, "ls": "", "clip_on": False}
    ends = [(m.kv_len, 0, 0, 4, "v")] if m.kv_len < width else []  # 4 pt outside the cells
    ends += [(0, m.q_len, -4, 0, ">")] if m.q_len < height else []
    for x, y, dx, dy, marker in ends:
        shift = offset_copy(ax.transData, fig, x=dx, y=dy, units="points")
        line = Line2D([x], [y], marker=marker, transform=shift, **end)  # type: ignore[arg-type]
        ax.add_line(line).set_in_layout(False)  # a marker past the axes must not shrink them
    if ends:
        handles.append(Line2D([], [], marker="v", label="sequence end", **end))  # type: ignore[arg-type]
    p = m.frame
    if p is not None and p < max(m.q_len, m.kv_len) <= _MAX_FRAME_TICKS * p:
        ax.set_xticks(range(p, m.kv_len, p), minor=True)
        ax.set_yticks(range(p, m.q_len, p), minor=True)
        ax.tick_params(which="minor", color=FRAME_LINE_COLOR, length=4, width=1)
        label = f"frame ({_count(p, 'token')})"
        handles.append(Line2D([], [], color=FRAME_LINE_COLOR, marker="|", ls="", label=label))
    return _Panel(ax, image, (nq, nk), None, handles)


def _panel(ax: Axes, m: _Mask, max_elements: int, block_size: BlockSize | None) -> _Panel:
    wrap = max(20, int(ax.get_position().width * cast(Figure, ax.figure).get_figwidth() * 14))
    if max(m.q_len, m.kv_len) <= max_elements:
        return _cells(ax, m, wrap)
    note = f"drawn by block: {max(m.q_len, m.kv_len)} tokens > max_elements={max_elements}"
    return _blocks(ax, m, _grids(m, block_size, cap=True), note, wrap)


def _finish(fig: Figure, panels: Sequence[_Panel], path: PathLike | None) -> Figure:
    """Fit the cells to the laid-out axes; save to ``path`` only when it is given."""
    if panels and not fig.legends:  # one picture: its legend on the right
        panels[0].ax.legend(handles=panels[0].handles, **_SIDE_LEGEND)
    fig.draw_without_rendering()
    for panel in panels:
        box = panel.ax.get_window_extent()
        cell_px = min(box.height / panel.cells[0], box.width / panel.cells[1])
        # Exact colours from a pixel a cell up; averaged below, so a thin diagonal stays visible.
        panel.image.set_interpolation("nearest" if cell_px >= 1 else "antialiased")
        if panel.lines is not None:
            panel.lines.set_linewidth(float(np.clip(cell_px * 18 / fig.dpi, *_FRAME_LINE_PT)))
    if path is not None:
        fig.savefig(Path(path))
    return fig


# -- public functions ---------------------------------------------------------------------------
def filename_for_title(title: str) -> str:
    """The PNG file name for a picture titled ``title`` (what the seed design saved under).

    Lower case; each run of spaces, punctuation and underscores becomes one ``_``, none at ends.

    Example:
        >>> filename_for_title("My Frame Mask"), filename_for_title("causal-frame (num_frames=3)")
        ('my_frame_mask.png', 'causal_frame_num_frames_3.png')
    """
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, got {title!r} ({type(title).__name__})")
    stem = re.sub(r"[\W_]+", "_", title.lower()).strip("_")
    if not stem:
        raise ValueError(f"title {title!r} leaves no file name; give a path= instead")
    return stem + ".png"


def block_sparsity(mask: AnyMask, block_size: BlockSize | None = None) -> BlockSparsity:
    """Full, partial and skipped blocks of a mask as FlexAttention runs it.

    :meth:`BlockSparsity.of <flexframe.masks.blocks.BlockSparsity.of>` behind this module's
    input checks; ``block_size=None`` means 128, or a BlockMask's own.

    Example:
        >>> from flexframe import get_mask
        >>> stats = block_sparsity(get_mask("token-causal", seq_len=4), block_size=2)
        >>> stats.full, stats.partial, stats.skipped, stats.skipped_share
        (1, 2, 1, 0.25)
    """
    return BlockSparsity.of(_read(mask).mask, block_size)


def visualize_mask(
    mask: AnyMask,
    title: str | None = None,
    path: PathLike | None = None,
    *,
    num_patches_per_frame: int | None = None,
    max_elements: int = 512,
    block_size: BlockSize | None = None,
    figsize: tuple[float, float] = (7.0, 5.0),
    dpi: float = 100,
) -> Figure:
    """Draw a mask: every cell up to ``max_elements`` tokens a side, one cell per block beyond.

    Returns the figure, and saves it as a PNG only when ``path`` is given. ``mask``: a
    ``MaskSpec``, a ``BlockMask`` or a ``[q_len, kv_len]`` bool tensor; ``title`` defaults to
    the mask's name and parameters; ``num_patches_per_frame`` (frame lines) to a spec's own;
    ``block_size`` (an int or ``(q, kv)``, for the block picture) to 128 or a BlockMask's own.

    Example:
        >>> from flexframe import get_mask
        >>> spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=3)
        >>> fig = visualize_mask(spec, title="My Frame Mask")  # no path: nothing saved
        >>> fig.axes[0].get_title(), fig.axes[0].get_ylabel()
        ('My Frame Mask', 'query token (top to bottom)')
    """
    m = _read(mask, num_patches_per_frame)
    max_elements = check_int("max_elements", max_elements, minimum=0)
    fig = _figure(figsize, dpi)
    ax = fig.add_subplot()
    ax.set_title(textwrap.fill(m.label if title is None else title, 60), fontsize=10)
    return _finish(fig, [_panel(ax, m, max_elements, block_size)], path)


def mask_to_png(mask: AnyMask, title: str | None = None, **kwargs: Any) -> bytes:
    """:func:`visualize_mask`'s picture as PNG bytes, saving nothing (Jupyter shows specs so).

    ``kwargs`` go to :func:`visualize_mask`; ``figsize`` defaults to (5.5, 4) and ``dpi`` to 80.

    Example:
        >>> from flexframe import get_mask
        >>> mask_to_png(get_mask("token-causal", seq_len=8))[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    buffer = io.BytesIO()
    kwargs = {"figsize": (5.5, 4.0), "dpi": 80, **kwargs}
    visualize_mask(mask, title, **kwargs).savefig(buffer, format="png")
    return buffer.getvalue()


def plot_block_sparsity(
    mask: AnyMask,
    block_size: BlockSize | None = None,
    *,
    title: str | None = None,
    path: PathLike | None = None,
    num_patches_per_frame: int | None = None,
    figsize: tuple[float, float] = (7.0, 5.0),
    dpi: float = 100,
) -> Figure:
    """Draw the block grid FlexAttention runs: full, partial and skipped blocks, at any length.

    Returns the figure, and saves it as a PNG only when ``path`` is given. The title gives the
    skipped and computed shares of the grid, the legend the counts; padded cells count as
    masked, so a block holding padding is never full. Arguments as in :func:`visualize_mask`.

    Example:
        >>> from flexframe import get_mask
        >>> spec = get_mask("causal-frame", num_frames=4, num_patches_per_frame=2)
        >>> print(plot_block_sparsity(spec, block_size=2).axes[0].get_title())
        causal-frame (num_frames=4, num_patches_per_frame=2)
        16 blocks of 2x2: 6 skipped (37.5%), 10 computed (62.5% of the grid)
    """
    m = _read(mask, num_patches_per_frame)
    grids = _grids(m, block_size, cap=False)
    s, (bq, bk) = _stats(m, grids), grids[2]
    if max(s.num_q_blocks, s.num_kv_blocks) > _MAX_GRID:  # counted per block, drawn per group
        grids = _grids(m, block_size, cap=True)
    skipped = f"{s.skipped:,} skipped ({s.skipped_share:.1%})"
    computed = f"{s.computed:,} computed ({s.computed_share:.1%} of the grid)"
    counts = f"{_count(s.total, 'block')} of {bq}x{bk}: {skipped}, {computed}"
    head = textwrap.fill(m.label if title is None else title, 60)
    fig = _figure(figsize, dpi)
    ax = fig.add_subplot()
    ax.set_title(f"{head}\n{textwrap.fill(counts, 70)}", fontsize=9)
    panel = _blocks(ax, m, grids, "", wrap=70)
    for handle, n in zip(panel.handles, (s.full, s.partial, s.skipped), strict=False):
        handle.set_label(f"{handle.get_label()}: {n:,}")
    return _finish(fig, [panel], path)


def compare_masks(
    masks: Sequence[AnyMask] | Mapping[str, AnyMask],
    *,
    title: str | None = None,
    path: PathLike | None = None,
    ncols: int | None = None,
    max_elements: int = 512,
    block_size: BlockSize | None = None,
    panel_size: float = 3.2,
    dpi: float = 100,
) -> Figure:
    """Draw several masks side by side, one panel each, as :func:`visualize_mask` draws them.

    Returns the figure, and saves it as a PNG only when ``path`` is given. ``masks``: a
    sequence (panels titled by name) or a mapping ``{title: mask}``; ``ncols`` panels a row (up
    to 4 by default) of ``panel_size`` inches.

    Example:
        >>> from flexframe import get_mask
        >>> fig = compare_masks([get_mask("token-causal", seq_len=8), get_mask("full", seq_len=8)])
        >>> [ax.get_title() for ax in fig.axes]
        ['token-causal', 'full']
    """
    if isinstance(masks, Mapping):
        items = [(str(k), _read(v, arg=f"masks[{k!r}]")) for k, v in masks.items()]
    elif isinstance(masks, Sequence) and not isinstance(masks, str):
        read = [_read(v, arg=f"masks[{i}]") for i, v in enumerate(masks)]
        items = [(m.mask.name if isinstance(m.mask, MaskSpec) else m.label, m) for m in read]
    else:
        raise TypeError(
            "masks must be a sequence of masks or a mapping of title -> mask, got "
            f"{type(masks).__name__} (for one mask, use visualize_mask)"
        )
    if not items:
        raise ValueError("masks must not be empty")
    max_elements = check_int("max_elements", max_elements, minimum=0)
    ncols = min(len(items), 4) if ncols is None else check_int("ncols", ncols, minimum=1)
    nrows = -(-len(items) // ncols)
    fig = _figure((panel_size * ncols, panel_size * nrows + 0.8), dpi)
    panels: list[_Panel] = []
    handles: dict[str, Artist] = {}  # one legend entry per kind, in order of appearance
    for i, (label, m) in enumerate(items):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        panels.append(_panel(ax, m, max_elements, block_size))
        ax.set_title(textwrap.fill(label, 40), fontsize=9)
        handles.update((h.get_label(), h) for h in panels[-1].handles)
    fig.legend(handles=list(handles.values()), loc="outside lower center", ncols=4, **_LEGEND)
    if title is not None:
        fig.suptitle(title, fontsize=11)
    return _finish(fig, panels, path)


def plot_frame_timeline(
    streams: Mapping[str, torch.Tensor | Sequence[int]],
    num_frames: int,
    *,
    title: str | None = None,
    path: PathLike | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
) -> Figure:
    """Draw which frames of a clip each stream takes: one row per stream, time left to right.

    Returns the figure, and saves it as a PNG only when ``path`` is given. ``streams``: name ->
    original frame indices in ``[0, num_frames)``; each a dot at its frame, labelled with its
    position in the stream unless the stream's dots crowd (the axis label then names it).

    Example:
        >>> fig = plot_frame_timeline({"fast": [13, 14, 15], "slow": [8, 12]}, num_frames=16)
        >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
        ['fast', 'slow']
    """
    t = check_int("num_frames", num_frames, minimum=1)
    if not isinstance(streams, Mapping) or not streams:
        raise TypeError(f"streams must be a non-empty mapping of name -> indices, got {streams!r}")
    rows = [(str(k), check_int_sequence(f"streams[{k!r}]", v)) for k, v in streams.items()]
    if bad := [(n, i, v) for n, idx in rows for i, v in enumerate(idx) if not 0 <= v < t]:
        name, i, v = bad[0]
        raise ValueError(f"streams[{name!r}][{i}] = {v} is outside the clip's frames 0..{t - 1}")
    figsize = (8.0, 1.0 + 0.6 * len(rows)) if figsize is None else figsize
    fig = _figure(figsize, dpi)
    ax = fig.add_subplot()
    px_per_frame = 0.8 * figsize[0] * dpi / t  # the axes take about 80% of the width
    crowded = []
    for y, (name, idx) in enumerate(rows):
        ax.scatter(idx, [y] * len(idx), s=28, color=f"C{y % 10}", zorder=3)
        labels: dict[int, str] = {}
        for pos, v in enumerate(idx):
            labels[v] = f"{labels[v]},{pos}" if v in labels else str(pos)
        frames = sorted(labels)
        gap = min((b - a for a, b in zip(frames, frames[1:], strict=False)), default=t)
        if gap * px_per_frame < max(map(len, labels.values())) * dpi / 20 + 2:  # 6-pt digits
            crowded.append(name)
            continue
        for v, label in labels.items():
            ax.annotate(label, (v, y), (0, 6), textcoords="offset points", ha="center", fontsize=6)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.4, -0.6)  # the first stream on top
    ax.set_xlim(-0.5, t - 0.5)
    if t <= 200:
        ax.set_xticks(range(t), minor=True)
    ax.grid(axis="x", which="both", color="#eeeeee", lw=0.5)
    ax.set_axisbelow(True)
    note = f" (left out where dots crowd: {', '.join(crowded)})" if crowded else ""
    ax.set_xlabel(f"frame index (time runs right)\nlabels: position in stream{note}", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"frames of a {t}-frame clip" if title is None else title, fontsize=10)
    return _finish(fig, [], path)


def mask_summary(mask: AnyMask, block_size: BlockSize | None = None) -> str:
    """A few lines on a mask: what it is, its lengths, what it attends, and its blocks.

    ``attends``: the query-key pairs the mask allows (up to 2**22 cells). ``blocks``: the
    kernel's blocks (``block_size=None``: 128 or a BlockMask's own), full (computed without the
    mask_mod), partial (with it), skipped; ``kernel``: their shares of the grid (never over 100 %).
    ``padding``: padded cells count as masked, so no block holding padding is full, and computed
    blocks score more pairs than the tokens have. No block counts for a spec without a closed
    form over 2**26 cells (:func:`block_sparsity` counts them).

    Example:
        >>> from flexframe import get_mask
        >>> print(mask_summary(get_mask("token-causal", seq_len=200)))
        token-causal: ordinary token-level causal mask (the baseline)
        params: seq_len=200
        q_len=200, kv_len=200
        attends: 20,100 of 40,000 query-key pairs (50.2%)
        blocks: 4 blocks of 128x128 (2 x 2): 0 full, 3 partial, 1 skipped
        kernel: computes 3 of 4 blocks (75.0% of the grid), skips 1 (25.0%)
        padding: the grid pads 200x200 tokens to 256x256; padded cells count as masked, so no
        block holding padding is full, and the 3 computed blocks score 49,152 pairs, 30,784 of
        them between real tokens
    """
    m, frames = _read(mask), ""
    lines = ["BlockMask (batch 0, head 0)" if isinstance(m.mask, BlockMask) else m.label]
    lines = ["bool mask"] if isinstance(mask, torch.Tensor) else lines
    if isinstance(spec := m.mask, MaskSpec):
        lines = [f"{spec.name}: {spec.description}" if spec.description else spec.name]
        lines.append(f"params: {_params(spec.params) or 'none'}")
    if m.frame is not None:
        frames = f"; {_count(-(-m.q_len // m.frame), 'frame')} of {_count(m.frame, 'token')}"
    lines.append(f"q_len={m.q_len}, kv_len={m.kv_len}{frames}")
    cells = m.q_len * m.kv_len
    if cells <= _COUNT_CELLS or isinstance(m.mask, torch.Tensor):
        seen = int(_dense(m).sum())
        lines.append(f"attends: {seen:,} of {cells:,} query-key pairs ({seen / cells:.1%})")
    if isinstance(m.mask, MaskSpec) and m.mask.relation is None and cells > _SCAN_CELLS:
        why = f"no closed form: torch's create_block_mask evaluates all {cells:,} cells"
        lines.append(f"blocks: not counted here ({why}); block_sparsity(mask) counts them")
        return "\n".join(lines)
    grids = _grids(m, block_size, cap=False)
    s, (bq, bk), computed = _stats(m, grids), grids[2], grids[0] | grids[1]
    shape = f" ({s.num_q_blocks:,} x {s.num_kv_blocks:,})" if s.total > 1 else ""
    lines.append(f"blocks: {_count(s.total, 'block')} of {bq}x{bk}{shape}: {s.full:,} full, "
                 f"{s.partial:,} partial, {s.skipped:,} skipped")  # fmt: skip
    lines.append(f"kernel: computes {s.computed:,} of {_count(s.total, 'block')} "
                 f"({s.computed_share:.1%} of the grid), skips {s.skipped:,} "
                 f"({s.skipped_share:.1%})")  # fmt: skip
    if s.padded:
        rows = (m.q_len - torch.arange(s.num_q_blocks) * bq).clamp(max=bq)
        cols = (m.kv_len - torch.arange(s.num_kv_blocks) * bk).clamp(max=bk)
        real = int((computed.long() * rows[:, None] * cols[None, :]).sum())
        verb = "scores" if s.computed == 1 else "score"
        lines.append(
            f"padding: the grid pads {m.q_len}x{m.kv_len} tokens to {s.num_q_blocks * bq}x"
            f"{s.num_kv_blocks * bk}; padded cells count as masked, so no block holding padding "
            f"is full, and the {_count(s.computed, 'computed block')} {verb} "
            f"{s.computed * bq * bk:,} pairs, {real:,} of them between real tokens"
        )
    if s.total == 1:
        lines.append("note: one block holds the whole mask, so the kernel computes all of it; "
                     "block sparsity shows only at lengths of several blocks")  # fmt: skip
    return "\n".join(lines)
