"""Mask pictures, checked by their pixels against brute-force masks written in the tests."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from unittest import mock

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.backend_bases import RendererBase
from matplotlib.colors import to_rgb
from matplotlib.layout_engine import ConstrainedLayoutEngine
from strategies import block_mask_grids, expected_block_grids, mask_configs, reference_dense

import flexframe.viz as viz_module
from flexframe import MaskSpec, get_mask
from flexframe.viz import (
    ATTEND_COLOR,
    FRAME_LINE_COLOR,
    FULL_BLOCK_COLOR,
    MASKED_COLOR,
    PARTIAL_BLOCK_COLOR,
    SKIPPED_BLOCK_COLOR,
    block_sparsity,
    compare_masks,
    filename_for_title,
    mask_summary,
    mask_to_png,
    mask_to_png_with_size,
    plot_block_sparsity,
    plot_frame_timeline,
    visualize_mask,
)

ROOT = Path(__file__).resolve().parents[1]
FIG = {"figsize": (7.0, 6.0), "dpi": 100}


# -- pixel helpers ------------------------------------------------------------------------------
def rgb255(color) -> np.ndarray:
    return np.round(np.asarray(to_rgb(color)) * 255).astype(int)


def render(fig) -> np.ndarray:
    """``[H, W, 3]`` uint8 pixels of the figure as drawn."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def pixel(img: np.ndarray, ax, x: float, y: float) -> np.ndarray:
    """The pixel under data point ``(x, y)`` (display origin is the bottom left)."""
    px, py = ax.transData.transform((x, y))
    return img[int(img.shape[0] - py), int(px)]


def same(a, b, tol: int = 1) -> bool:
    return bool(np.abs(np.asarray(a) - np.asarray(b)).max() <= tol)


def cell_colors(fig, q_len: int, kv_len: int) -> np.ndarray:
    """``[q_len, kv_len, 3]``: the pixel at the centre of every cell (q, k)."""
    ax = fig.axes[0]
    img = render(fig)
    return np.array(
        [[pixel(img, ax, k + 0.5, q + 0.5) for k in range(kv_len)] for q in range(q_len)]
    )


def expected_cells(dense: torch.Tensor) -> np.ndarray:
    attend, masked = rgb255(ATTEND_COLOR), rgb255(MASKED_COLOR)
    return np.where(dense.numpy()[..., None], attend, masked)


def block_color(img, ax, q0, q1, k0, k1) -> np.ndarray:
    """The most common colour at the token centres of a block.

    Frame lines, block edges and the sequence end all sit at whole token positions, so a token
    centre is half a token away from any of them.
    """
    pts = [tuple(pixel(img, ax, k + 0.5, q + 0.5)) for q in range(q0, q1) for k in range(k0, k1)]
    return np.array(Counter(pts).most_common(1)[0][0])


# -- element level ------------------------------------------------------------------------------
def test_three_frame_causal_mask_is_drawn_cell_by_cell_with_future_frames_masked():
    spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=3)
    fig = visualize_mask(spec, save=False, **FIG)
    cells = cell_colors(fig, 9, 9)
    attend, masked = rgb255(ATTEND_COLOR), rgb255(MASKED_COLOR)
    assert same(cells[1, 7], masked)  # frame 0 query, frame 2 key: the future
    assert same(cells[4, 8], masked)  # frame 1 query, frame 2 key
    for f in range(3):  # diagonal frame blocks: a frame sees itself
        for q in range(3 * f, 3 * f + 3):
            for k in range(3 * f, 3 * f + 3):
                assert same(cells[q, k], attend), (q, k)
    want = expected_cells(torch.tensor([[k // 3 <= q // 3 for k in range(9)] for q in range(9)]))
    assert np.abs(cells - want).max() <= 1
    assert not same(attend, masked, tol=60)  # clearly different colours


def test_axes_say_queries_run_down_and_keys_run_right():
    fig = visualize_mask(get_mask("token-causal", seq_len=6), save=False, **FIG)
    ax = fig.axes[0]
    assert "query" in ax.get_ylabel() and "top to bottom" in ax.get_ylabel()
    assert "key" in ax.get_xlabel() and "left to right" in ax.get_xlabel()
    cells = cell_colors(fig, 6, 6)
    assert same(cells[0, 5], rgb255(MASKED_COLOR))  # first query, last key
    assert same(cells[5, 0], rgb255(ATTEND_COLOR))  # last query, first key
    # ... and on the screen the first query is the top row, the first key the left column
    img = render(fig)
    (x0, y0), (x1, y1) = ax.get_window_extent().get_points()  # display pixels, origin bottom left
    h, cell = img.shape[0], (x1 - x0) / 6
    assert same(img[int(h - y1 + cell / 2), int(x1 - cell / 2)], rgb255(MASKED_COLOR))
    assert same(img[int(h - y0 - cell / 2), int(x0 + cell / 2)], rgb255(ATTEND_COLOR))
    top_row = ax.transData.transform((0.5, 0.5))[1]
    assert top_row > ax.transData.transform((0.5, 5.5))[1]  # query 0 above query 5
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["attend", "masked"]


@settings(max_examples=12)
@given(mask_configs(max_frames=5, max_patches=5))
def test_every_cell_has_the_colour_of_the_brute_force_mask(config):
    name, params = config
    expected = reference_dense(name, params)
    fig = visualize_mask(get_mask(name, **params), save=False, **FIG)
    cells = cell_colors(fig, *expected.shape)
    assert np.abs(cells - expected_cells(expected)).max() <= 1


def test_dense_tensor_and_block_mask_inputs_draw_the_same_cells_as_the_spec():
    params = {"timestamps": [0, 3, 1, 3, 2], "num_patches_per_frame": 3}
    spec = get_mask("timestamp-causal", **params)
    want = expected_cells(reference_dense("timestamp-causal", params))
    for form in (spec.to_dense(), spec.block_mask("cpu", block_size=4)):
        fig = visualize_mask(form, save=False, num_patches_per_frame=3, **FIG)
        assert np.abs(cell_colors(fig, 15, 15) - want).max() <= 1


def test_frame_lines_are_drawn_only_when_the_frame_size_is_known():
    def red_pixels(fig):
        img = render(fig)
        ax = fig.axes[0]
        (x0, y0), (x1, y1) = ax.get_window_extent().get_points()
        h = img.shape[0]
        inside = img[int(h - y1) + 2 : int(h - y0) - 2, int(x0) + 2 : int(x1) - 2]
        return int((np.abs(inside - rgb255(FRAME_LINE_COLOR)).max(-1) < 40).sum())

    frames = get_mask("causal-frame", num_frames=4, num_patches_per_frame=4)
    tokens = get_mask("token-causal", seq_len=16)
    assert red_pixels(visualize_mask(frames, save=False, **FIG)) > 200
    assert red_pixels(visualize_mask(tokens, save=False, **FIG)) == 0
    given_size = visualize_mask(tokens.to_dense(), save=False, num_patches_per_frame=4, **FIG)
    assert red_pixels(given_size) > 200


# -- element level at a few hundred tokens ------------------------------------------------------
def png_cells(img: np.ndarray, ax, q_len: int, kv_len: int) -> np.ndarray:
    """``[q_len, kv_len, 3]``: the pixel under every cell's centre, the cells laid out evenly over
    the axes box (``img`` is the whole figure, row 0 at the top; the box has origin bottom left).
    """
    (x0, y0), (x1, y1) = ax.get_window_extent().get_points()
    rows = np.floor(img.shape[0] - y1 + (np.arange(q_len) + 0.5) * (y1 - y0) / q_len)
    cols = np.floor(x0 + (np.arange(kv_len) + 0.5) * (x1 - x0) / kv_len)
    return img[rows.astype(int)[:, None], cols.astype(int)[None, :]]


def read_png(source) -> np.ndarray:
    return (mpimg.imread(source)[..., :3] * 255).round().astype(int)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        # the diagonal alone: one attend cell per row, the easiest to lose between pixels
        ("sliding-window", {"num_frames": 512, "num_patches_per_frame": 1, "window_size": 0}),
        ("token-causal", {"seq_len": 300}),
        # frame lines drawn across a 512-token picture: they must not hide a cell
        ("causal-frame", {"num_frames": 8, "num_patches_per_frame": 64}),
        ("sliding-window", {"num_frames": 37, "num_patches_per_frame": 13, "window_size": 2}),
    ],
    ids=["diagonal-512", "token-causal-300", "causal-frame-8x64", "sliding-window-37x13"],
)
def test_a_few_hundred_tokens_at_default_settings_show_every_cell_in_the_png(
    name, params, tmp_path
):
    spec = get_mask(name, **params)
    fig = visualize_mask(spec, path=tmp_path / "mask.png")  # every default: max_elements=512
    img = read_png(tmp_path / "mask.png")
    assert img.shape == render(fig).shape  # the PNG holds the figure as laid out
    want = expected_cells(reference_dense(name, params))
    got = png_cells(img, fig.axes[0], *want.shape[:2])
    wrong = np.abs(got - want).max(-1) > 1
    assert not wrong.any(), (
        f"{wrong.sum()} of {wrong.size} cells off, e.g. {np.argwhere(wrong)[:5]}"
    )
    box = fig.axes[0].get_window_extent()  # ... and each cell spans the documented two pixels
    assert min(box.width / want.shape[1], box.height / want.shape[0]) >= 2


def test_a_random_non_square_mask_keeps_every_cell_in_each_kind_of_picture():
    # Every cell is independent of its neighbours: a cell lost between pixels shows at once.
    g = torch.Generator().manual_seed(0)
    wide, tall = torch.rand(400, 512, generator=g) < 0.5, torch.rand(512, 90, generator=g) < 0.5
    fig = visualize_mask(wide, save=False, figsize=(4.0, 3.0), dpi=72)
    assert np.abs(png_cells(render(fig), fig.axes[0], 400, 512) - expected_cells(wide)).max() <= 1
    # Jupyter's picture: PNG bytes of a 5.5 x 4 inch figure at 80 dpi, raised for 512 rows
    png = read_png(io.BytesIO(mask_to_png(tall)))
    fig = visualize_mask(tall, save=False, figsize=(5.5, 4.0), dpi=80)
    assert png.shape == render(fig).shape and fig.dpi > 80
    assert np.abs(png_cells(png, fig.axes[0], 512, 90) - expected_cells(tall)).max() <= 1
    fig = compare_masks({"wide": wide, "tall": tall}, dpi=100)
    img = render(fig)
    for ax, mask in zip(fig.axes, (wide, tall), strict=True):
        got = png_cells(img, ax, *mask.shape)
        assert np.abs(got - expected_cells(mask)).max() <= 1, ax.get_title()


def test_small_masks_keep_the_given_dpi():
    fig = visualize_mask(get_mask("token-causal", seq_len=64), save=False, **FIG)
    assert fig.dpi == 100


def test_cells_that_cannot_get_two_pixels_in_the_figure_are_drawn_by_block_and_it_says_so():
    # 1000 query rows in a 3-inch-high figure: two pixels a row would need about 1000 dpi, so
    # some 20000 pixels across 20 inches, over the 8192-pixel limit.
    spec = get_mask("token-causal", seq_len=1000)
    fig = visualize_mask(spec, save=False, max_elements=1000, figsize=(20.0, 3.0), dpi=100)
    ax = fig.axes[0]
    assert fig.dpi == 100
    label = " ".join(ax.get_xlabel().split())
    assert "1000 tokens a side need more than 8192 pixels" in label
    assert "one cell per 128x128-token block" in label
    img = render(fig)
    assert same(pixel(img, ax, 64, 832), rgb255(ATTEND_COLOR))  # block (6, 0): the past
    assert same(pixel(img, ax, 832, 64), rgb255(MASKED_COLOR))  # block (0, 6): the future


def test_compare_masks_draws_by_block_only_the_panels_that_cannot_get_their_pixels():
    # Three 3.2-inch panels: 9.6 inches, so at most 8192 / 9.6 = 853 dpi. 2000 tokens a side
    # need about 1700 dpi: that panel alone goes to block level. The 600-token panel needs some
    # 500 dpi (raised, and within the limit) and the 64-token one under 100: both keep every cell.
    g = torch.Generator().manual_seed(1)
    mid = torch.rand(600, 600, generator=g) < 0.5  # every cell independent of its neighbours
    small = get_mask("causal-frame", num_frames=4, num_patches_per_frame=16)
    masks = {"big": get_mask("token-causal", seq_len=2000), "mid": mid, "small": small}
    fig = compare_masks(masks, max_elements=2000)
    big_ax, mid_ax, small_ax = fig.axes
    assert big_ax.images[0].get_array().shape[:2] == (16, 16)  # one cell per 128-token block
    label = " ".join(big_ax.get_xlabel().split())
    assert "2000 tokens a side need more than 8192 pixels" in label, label
    assert mid_ax.images[0].get_array().shape[:2] == (600, 600)
    assert small_ax.images[0].get_array().shape[:2] == (64, 64)
    for ax in (mid_ax, small_ax):
        assert "need more than" not in ax.get_xlabel()
    assert 100 < fig.dpi and max(fig.get_size_inches()) * fig.dpi <= 8192
    img = render(fig)
    want_small = expected_cells(reference_dense("causal-frame", dict(small.params)))
    for ax, want in ((mid_ax, expected_cells(mid)), (small_ax, want_small)):
        box = ax.get_window_extent()
        assert min(box.width / want.shape[1], box.height / want.shape[0]) >= 2
        assert np.abs(png_cells(img, ax, *want.shape[:2]) - want).max() <= 1, ax.get_title()
    assert same(pixel(img, big_ax, 64, 832), rgb255(ATTEND_COLOR))  # block (6, 0): the past
    assert same(pixel(img, big_ax, 832, 64), rgb255(MASKED_COLOR))  # block (0, 6): the future
    # The reviewer's case: nothing raised, the small panel drawn cell by cell at 100 dpi.
    fig = compare_masks({"big": masks["big"], "small": small}, max_elements=2000)
    assert [ax.images[0].get_array().shape[:2] for ax in fig.axes] == [(16, 16), (64, 64)]
    assert fig.dpi == 100
    assert "need more than" not in fig.axes[1].get_xlabel()
    assert np.abs(png_cells(render(fig), fig.axes[1], 64, 64) - want_small).max() <= 1


# -- what users add after the call --------------------------------------------------------------
def save_and_get_renderer(fig) -> RendererBase:
    """Save ``fig`` as a PNG (as a user would) and return the renderer it was drawn with."""
    fig.savefig(io.BytesIO(), format="png", dpi=fig.dpi)
    return fig.canvas.get_renderer()


SMALL_PICTURES = {
    "visualize_mask": lambda: visualize_mask(get_mask("token-causal", seq_len=16), save=False),
    "compare_masks": lambda: compare_masks(
        [get_mask("token-causal", seq_len=8), get_mask("full", seq_len=8)]
    ),
    "plot_block_sparsity": lambda: plot_block_sparsity(
        get_mask("causal-frame", num_frames=4, num_patches_per_frame=4), block_size=4
    ),
    "plot_frame_timeline": lambda: plot_frame_timeline({"fast": [5, 6], "slow": [0]}, 8),
}


@pytest.mark.parametrize("make", SMALL_PICTURES.values(), ids=SMALL_PICTURES.keys())
def test_a_suptitle_added_after_the_call_is_laid_out_clear_of_the_axes_titles(make):
    fig = make()
    assert fig.dpi == 100  # nothing raised: matplotlib's layout stays on
    fig.suptitle("added by the user afterwards", fontsize=16)
    renderer = save_and_get_renderer(fig)
    top = fig.get_suptitle()
    box = fig._suptitle.get_window_extent(renderer)
    assert top and box.y1 <= fig.bbox.y1 + 0.5  # on the figure
    for ax in fig.axes:
        title = ax.title.get_window_extent(renderer)
        assert not box.overlaps(title), (ax.get_title(), box, title)
        assert ax.get_window_extent(renderer).y1 < box.y0


def test_a_colorbar_or_a_new_size_after_the_call_keeps_the_legend_clear_and_on_the_figure():
    from matplotlib.cm import ScalarMappable

    spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=3)
    fig = visualize_mask(spec, save=False)
    bar = fig.colorbar(ScalarMappable(), ax=fig.axes[0])
    renderer = save_and_get_renderer(fig)
    legend = fig.axes[0].get_legend().get_window_extent(renderer)
    assert not legend.overlaps(bar.ax.get_tightbbox(renderer)), legend

    fig = visualize_mask(spec, save=False)
    fig.set_size_inches(4, 3)
    renderer = save_and_get_renderer(fig)
    legend = fig.axes[0].get_legend().get_window_extent(renderer)
    assert fig.bbox.x0 <= legend.x0 and legend.x1 <= fig.bbox.x1 + 0.5, (legend, fig.bbox)


def test_a_figure_with_raised_dpi_keeps_its_layout_until_the_user_turns_it_back_on():
    fig = visualize_mask(torch.ones(512, 512, dtype=torch.bool).tril(), save=False)
    assert fig.dpi > 100
    assert not isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)  # as documented
    before = fig.axes[0].get_position().bounds
    fig.suptitle("added afterwards")
    save_and_get_renderer(fig)
    assert fig.axes[0].get_position().bounds == before  # the cells keep their pixels
    fig.set_layout_engine("constrained")  # the documented way back
    renderer = save_and_get_renderer(fig)
    box = fig._suptitle.get_window_extent(renderer)
    assert not box.overlaps(fig.axes[0].title.get_window_extent(renderer))
    for function in (visualize_mask, compare_masks):  # the way back is documented
        assert 'fig.set_layout_engine("constrained")' in function.__doc__, function.__name__
    for function in (plot_block_sparsity, plot_frame_timeline):
        assert "constrained layout" in function.__doc__, function.__name__


# -- Jupyter ------------------------------------------------------------------------------------
def png_size(png: bytes) -> tuple[int, int]:
    """``(width, height)`` from a PNG's header."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_jupyter_shows_a_raised_dpi_picture_at_the_figure_size_it_was_asked_for():
    from IPython.core.formatters import DisplayFormatter

    long_mask = torch.ones(512, 512, dtype=torch.bool).tril()
    png, size = mask_to_png_with_size(long_mask)
    assert size == {"width": 440, "height": 320}  # 5.5 x 4 inches at 80 dpi
    width, height = png_size(png)
    assert width > 3 * 440 and height > 3 * 320  # the pixels that give each cell two
    assert abs(width / height - 440 / 320) < 0.01
    assert png == mask_to_png(long_mask)
    # Nothing raised: the PNG is already that size.
    png, size = mask_to_png_with_size(get_mask("token-causal", seq_len=8), figsize=(3.0, 2.5))
    assert png_size(png) == (size["width"], size["height"]) == (240, 200)

    spec = get_mask("token-causal", seq_len=512)
    data, metadata = DisplayFormatter().format(spec)  # a MaskSpec, as Jupyter shows it
    assert png_size(data["image/png"])[0] > 3 * 440
    assert metadata["image/png"] == {"width": 440, "height": 320}


# -- saving -------------------------------------------------------------------------------------
def test_default_file_is_named_after_the_title_and_holds_the_picture(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=3)
    fig = visualize_mask(spec, title="My Frame Mask", **FIG)
    assert sorted(os.listdir(tmp_path)) == ["my_frame_mask.png"]
    saved = (mpimg.imread(tmp_path / "my_frame_mask.png")[..., :3] * 255).round().astype(int)
    assert saved.shape == render(fig).shape
    assert np.abs(saved - render(fig)).max() <= 1


@pytest.mark.parametrize(
    ("title", "filename"),
    [
        ("My Frame Mask", "my_frame_mask.png"),
        ("Causal-Frame: 3 frames, 3 patches!", "causal_frame_3_frames_3_patches.png"),
        ("  a__b  ", "a_b.png"),
        ("Früh (t<=3)", "früh_t_3.png"),
    ],
)
def test_filename_rule(title, filename):
    assert filename_for_title(title) == filename


def test_path_overrides_the_name_and_save_false_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = get_mask("token-causal", seq_len=4)
    visualize_mask(spec, title="ignored for the name", path=tmp_path / "sub.png")
    visualize_mask(spec, title="not saved", save=False)
    assert sorted(os.listdir(tmp_path)) == ["sub.png"]
    png = mask_to_png(spec)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert mpimg.imread(io.BytesIO(png)).shape[:2] == (320, 440)  # 5.5 x 4 in at 80 dpi
    assert sorted(os.listdir(tmp_path)) == ["sub.png"]


def test_untitlable_names_and_bad_inputs_are_refused_with_the_value():
    spec = get_mask("token-causal", seq_len=4)
    with pytest.raises(ValueError, match=r"title '\?!' leaves no file name"):
        visualize_mask(spec, title="?!")
    with pytest.raises(TypeError, match="bool tensor.*float32.*mask == 0"):
        visualize_mask(torch.zeros(3, 3), save=False)
    with pytest.raises(ValueError, match=r"shape \(1, 1, 3, 3\).*mask\[0, 0\]"):
        visualize_mask(torch.ones(1, 1, 3, 3, dtype=torch.bool), save=False)
    with pytest.raises(TypeError, match="MaskSpec, a BlockMask.*got list"):
        visualize_mask([[True]], save=False)
    with pytest.raises(ValueError, match="block_size must be >= 1, got 0"):
        visualize_mask(spec, save=False, block_size=0, max_elements=0)
    with pytest.raises(ValueError, match="num_patches_per_frame must be >= 1, got 0"):
        visualize_mask(spec, save=False, num_patches_per_frame=0)
    with pytest.raises(ValueError, match=r"block_size=\(4, 4\) differs.*BLOCK_SIZE=\(2, 2\)"):
        plot_block_sparsity(spec.block_mask("cpu", 2), block_size=4)


# -- block level --------------------------------------------------------------------------------
def shade(share: float) -> np.ndarray:
    """The documented colour of a block: partial shares 10%-90% of the way masked -> attend."""
    t = share if share in (0.0, 1.0) else 0.1 + 0.8 * share
    masked, attend = np.asarray(to_rgb(MASKED_COLOR)), np.asarray(to_rgb(ATTEND_COLOR))
    return np.round((masked + t * (attend - masked)) * 255).astype(int)


@settings(max_examples=12)
@given(
    mask_configs(max_frames=5, max_patches=5), st.integers(1, 4), st.sampled_from(["spec", "bm"])
)
def test_block_level_colour_is_the_share_of_cells_that_attend(config, block, form):
    name, params = config
    dense = reference_dense(name, params)
    spec = get_mask(name, **params)
    mask = spec if form == "spec" else spec.block_mask("cpu", block)
    # samples_per_block >= block: every cell of a partial block is evaluated, so shares are exact
    fig = visualize_mask(mask, save=False, max_elements=0, block_size=block, **FIG)
    img, ax = render(fig), fig.axes[0]
    n = dense.shape[0]
    for i in range(-(-n // block)):
        for j in range(-(-n // block)):
            q0, k0 = i * block, j * block
            q1, k1 = min(q0 + block, n), min(k0 + block, n)
            share = dense[q0:q1, k0:k1].double().mean().item()
            got = block_color(img, ax, q0, q1, k0, k1)  # frame lines may cross the centre
            assert same(got, shade(share), tol=2), (i, j, share, got)


def test_sampled_partial_blocks_never_look_full_or_skipped():
    # token-causal in blocks of 64, sampled at 2 x 2 cells: each diagonal block's samples are
    # (lower-left attends, upper-right masked, ...) and a block of 64 x 64 has 2080 / 4096 attend.
    spec = get_mask("token-causal", seq_len=256)
    fig = visualize_mask(spec, save=False, max_elements=0, block_size=64, samples_per_block=2)
    img, ax = render(fig), fig.axes[0]
    for i in range(4):
        got = pixel(img, ax, 64 * i + 32, 64 * i + 32)
        assert not same(got, rgb255(ATTEND_COLOR), 10) and not same(got, rgb255(MASKED_COLOR), 10)
        assert same(pixel(img, ax, 64 * i + 32 - 64, 64 * i + 32), rgb255(ATTEND_COLOR)) or i == 0
        assert same(pixel(img, ax, 64 * i + 32 + 64, 64 * i + 32), rgb255(MASKED_COLOR)) or i == 3


def test_a_mask_without_closed_form_is_sampled_in_every_block_and_says_so():
    a = get_mask("token-causal", seq_len=1024)
    b = get_mask("causal-frame", num_frames=8, num_patches_per_frame=128)
    combined = a & b  # no closed form: equals token-causal here
    assert combined.relation is None
    fig = visualize_mask(combined, save=False, max_elements=0, block_size=128, **FIG)
    img, ax = render(fig), fig.axes[0]
    assert "sampled" in ax.get_xlabel()
    for i in range(8):
        for j in range(8):
            got = pixel(img, ax, 128 * j + 64, 128 * i + 64)
            if j < i:
                assert same(got, rgb255(ATTEND_COLOR)), (i, j)
            elif j > i:
                assert same(got, rgb255(MASKED_COLOR)), (i, j)
            else:  # 8 x 8 samples at odd offsets 8, 24, ...: 36 of 64 attend
                assert same(got, shade(36 / 64), tol=2), (i, j, got)


BLOCK_COLORS = {
    "skipped": rgb255(SKIPPED_BLOCK_COLOR),
    "partial": rgb255(PARTIAL_BLOCK_COLOR),
    "full": rgb255(FULL_BLOCK_COLOR),
}


def classify_plot(fig, nq, nk, bq, bkv) -> np.ndarray:
    """``[nq, nk]`` of 0 skipped / 1 partial / 2 full, read from the block-sparsity plot."""
    img, ax = render(fig), fig.axes[0]
    out = np.full((nq, nk), -1)
    for i in range(nq):
        for j in range(nk):
            got = block_color(img, ax, i * bq, (i + 1) * bq, j * bkv, (j + 1) * bkv)
            for code, color in enumerate(BLOCK_COLORS.values()):
                if same(got, color):
                    out[i, j] = code
            assert out[i, j] >= 0, (i, j, got)
    return out


block_sizes = st.one_of(st.integers(1, 6), st.tuples(st.integers(1, 6), st.integers(1, 6)))


@settings(max_examples=12)
@given(mask_configs(max_frames=5, max_patches=5), block_sizes)
def test_block_sparsity_plot_counts_equal_the_block_mask_and_brute_force(config, block_size):
    name, params = config
    spec = get_mask(name, **params)
    bq, bkv = block_size if isinstance(block_size, tuple) else (block_size, block_size)
    bm = spec.block_mask("cpu", (bq, bkv))
    fig = plot_block_sparsity(spec, block_size=(bq, bkv), **FIG)
    want_partial, want_full = expected_block_grids(reference_dense(name, params), bq, bkv)
    nq, nk = want_full.shape
    drawn = classify_plot(fig, nq, nk, bq, bkv)
    assert np.array_equal(drawn == 2, want_full.numpy())
    assert np.array_equal(drawn == 1, want_partial.numpy())
    # ... and the counts are the BlockMask's own statistics
    n_partial, n_full = int(bm.kv_num_blocks.sum()), int(bm.full_kv_num_blocks.sum())
    assert ((drawn == 1).sum(), (drawn == 2).sum()) == (n_partial, n_full)
    stats = block_sparsity(spec, (bq, bkv))
    assert (stats.partial, stats.full, stats.skipped) == (
        n_partial,
        n_full,
        nq * nk - n_partial - n_full,
    )
    assert stats.computed_share == pytest.approx(1 - bm.sparsity() / 100)
    title = fig.axes[0].get_title().splitlines()[-1]
    # The computed share from the BlockMask's counts (torch's sparsity() reaches the same number
    # by another float route, which can round the other way at a tie such as 38.25 %).
    share = (n_full + n_partial) * bq * bkv / (spec.q_len * spec.kv_len)
    assert title == (
        f"{stats.skipped / (nq * nk):.1%} of blocks skipped; "
        f"{share:.1%} of dense attention FLOPs computed"
    )
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[:3] == [
        f"full (no mask_mod): {n_full}",
        f"partial (mask_mod): {n_partial}",
        f"skipped: {nq * nk - n_partial - n_full}",
    ]


def hashed_spec(q_len: int, kv_len: int, modulus: int) -> tuple[MaskSpec, torch.Tensor]:
    """A hand-made spec without a closed form (an irregular pattern), and its brute-force mask."""

    def mod(b, h, q_idx, kv_idx):
        return (q_idx * 7 + kv_idx * 3) % modulus < 2

    spec = MaskSpec(name="hashed", params={}, q_len=q_len, kv_len=kv_len, mod_factory=lambda d: mod)
    dense = torch.tensor(
        [[(q * 7 + k * 3) % modulus < 2 for k in range(kv_len)] for q in range(q_len)]
    )
    return spec, dense


@settings(max_examples=25)
@given(
    mask_configs(max_frames=5, max_patches=5),
    st.sampled_from(["&", "|", "hashed"]),
    block_sizes,
    st.sampled_from([1, 2, 3, "bq", "2bq+1", 1 << 20]),
    st.integers(2, 5),
)
def test_blocks_of_a_mask_without_closed_form_are_counted_exactly_and_never_densely(
    config, how, block_size, rows_per_call, modulus
):
    name, params = config
    ref = reference_dense(name, params)
    n = ref.shape[0]
    if how == "hashed":  # not square: q and kv blocks pad differently
        spec, want = hashed_spec(n, n + 3, modulus)
    else:
        other, other_ref = hashed_spec(n, n, modulus)
        spec = get_mask(name, **params) & other if how == "&" else get_mask(name, **params) | other
        want = ref & other_ref if how == "&" else ref | other_ref
    assert spec.relation is None
    bq, bkv = block_size if isinstance(block_size, tuple) else (block_size, block_size)
    rows = {"bq": bq, "2bq+1": 2 * bq + 1}.get(rows_per_call, rows_per_call)
    want_partial, want_full = expected_block_grids(want, bq, bkv)
    nq, nk = want_full.shape

    def refuse(*args, **kwargs):
        raise AssertionError("the dense mask was built")

    with (
        mock.patch.object(viz_module, "_EVAL_CHUNK", rows * spec.kv_len),  # rows per evaluation
        mock.patch.object(MaskSpec, "to_dense", refuse),
        mock.patch.object(MaskSpec, "block_mask", refuse),
    ):
        stats = block_sparsity(spec, (bq, bkv))
        fig = plot_block_sparsity(spec, (bq, bkv), **FIG)
    drawn = classify_plot(fig, nq, nk, bq, bkv)
    assert np.array_equal(drawn == 2, want_full.numpy())
    assert np.array_equal(drawn == 1, want_partial.numpy())
    n_full, n_partial = int(want_full.sum()), int(want_partial.sum())
    assert (stats.full, stats.partial, stats.skipped) == (
        n_full,
        n_partial,
        nq * nk - n_full - n_partial,
    )
    # ... the counts torch's own create_block_mask gives
    torch_stats = block_sparsity(spec.block_mask("cpu", (bq, bkv)))
    assert (torch_stats.full, torch_stats.partial) == (n_full, n_partial)


def squeezed_spec(n: int) -> MaskSpec:
    """token-causal written with ``squeeze()``: right for flex_attention's 0-d indices and for
    ``to_dense`` (vmap), but ``[R]`` rather than ``[R, K]`` on an ``[R, 1]`` x ``[1, K]`` call."""

    def mod(b, h, q_idx, kv_idx):
        return q_idx.squeeze() >= kv_idx.squeeze()

    return MaskSpec(name="squeezed", params={}, q_len=n, kv_len=n, mod_factory=lambda d: mod)


@pytest.mark.parametrize(
    ("n", "block", "rows"),
    # rows per call == kv_len is where [R] broadcasts silently; the others are controls
    [(1024, 128, None), (12, 4, 12), (20, 5, 20), (12, 4, 1), (12, 5, 5)],
    ids=["1024-default", "12-rows=kv_len", "20-rows=kv_len", "12-one-row", "12-block5"],
)
def test_blocks_of_a_mask_mod_that_squeezes_its_indices_are_counted_right(n, block, rows):
    spec = squeezed_spec(n)
    assert spec.relation is None
    dense = torch.ones(n, n, dtype=torch.bool).tril()
    assert torch.equal(spec.to_dense(), dense)  # torch's own route gets it right
    want_partial, want_full = expected_block_grids(dense, block, block)
    chunk = viz_module._EVAL_CHUNK if rows is None else rows * n  # query rows per evaluation
    with mock.patch.object(viz_module, "_EVAL_CHUNK", chunk):
        stats = block_sparsity(spec, block)
        fig = plot_block_sparsity(spec, block, **FIG)
    n_full, n_partial = int(want_full.sum()), int(want_partial.sum())
    assert (stats.full, stats.partial) == (n_full, n_partial)
    torch_stats = block_sparsity(spec.block_mask("cpu", block))  # torch's create_block_mask
    assert (torch_stats.full, torch_stats.partial) == (n_full, n_partial)
    if n <= 64:
        nq = -(-n // block)
        drawn = classify_plot(fig, nq, nq, block, block)
        assert np.array_equal(drawn == 2, want_full.numpy())
        assert np.array_equal(drawn == 1, want_partial.numpy())


def test_block_sparsity_plot_reads_block_masks_and_dense_tensors_alike():
    spec = get_mask("sliding-window", num_frames=6, num_patches_per_frame=5, window_size=1)
    partial, full = block_mask_grids(spec.block_mask("cpu", 4))
    want = partial.numpy().astype(int) + 2 * full.numpy().astype(int)
    for form in (spec.block_mask("cpu", 4), spec.to_dense()):
        fig = plot_block_sparsity(form, 4 if form.__class__ is torch.Tensor else None, **FIG)
        assert np.array_equal(classify_plot(fig, 8, 8, 4, 4), want)


def test_flops_share_counts_padding_and_matches_torch_sparsity():
    spec = get_mask("full", seq_len=130)  # 2 x 2 blocks of 128, three of them padded
    stats = block_sparsity(spec)
    assert (stats.full, stats.partial, stats.skipped) == (1, 3, 0)
    assert stats.computed_share == pytest.approx(4 * 128 * 128 / (130 * 130))
    assert stats.computed_share == pytest.approx(1 - spec.block_mask("cpu").sparsity() / 100)


# -- many masks, timelines, summaries ------------------------------------------------------------
def test_compare_masks_draws_each_mask_in_its_own_panel():
    masks = {
        "token-causal": get_mask("token-causal", seq_len=8),
        "causal-frame": get_mask("causal-frame", num_frames=4, num_patches_per_frame=2),
        "fast-slow": get_mask(
            "fast-slow", num_fast_frames=2, num_slow_frames=2, num_patches_per_frame=2
        ),
    }
    fig = compare_masks(masks, title="ablation", panel_size=3.0, dpi=100)
    assert [ax.get_title() for ax in fig.axes] == list(masks)
    img = render(fig)
    for ax, (name, spec) in zip(fig.axes, masks.items(), strict=True):
        want = expected_cells(reference_dense(name, dict(spec.params)))
        got = np.array([[pixel(img, ax, k + 0.5, q + 0.5) for k in range(8)] for q in range(8)])
        assert np.abs(got - want).max() <= 1, name
    fig = compare_masks(list(masks.values()))
    assert [ax.get_title() for ax in fig.axes] == ["token-causal", "causal-frame", "fast-slow"]
    with pytest.raises(ValueError, match="masks must not be empty"):
        compare_masks([])
    with pytest.raises(TypeError, match=r"masks\['x'\] must be a MaskSpec"):
        compare_masks({"x": "causal-frame"})


def test_frame_timeline_puts_each_index_at_its_frame():
    fig = plot_frame_timeline({"fast": [5, 6, 7], "slow": [0, 4]}, num_frames=8, dpi=100)
    img, ax = render(fig), fig.axes[0]
    c0, c1 = rgb255("C0"), rgb255("C1")
    for x in (5, 6, 7):
        assert same(pixel(img, ax, x, 0), c0)
    for x in (0, 4):
        assert same(pixel(img, ax, x, 1), c1)
    for x in (0, 1, 2, 3, 4):
        assert not same(pixel(img, ax, x, 0), c0, tol=40)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["fast", "slow"]
    with pytest.raises(ValueError, match=r"streams\['slow'\]\[1\] = 8 is outside .*0\.\.7"):
        plot_frame_timeline({"fast": [5], "slow": [0, 8]}, num_frames=8)
    with pytest.raises(TypeError, match="non-empty mapping"):
        plot_frame_timeline({}, num_frames=8)


def test_summary_gives_name_params_lengths_and_the_block_mask_counts():
    spec = get_mask("causal-frame", num_frames=8, num_patches_per_frame=16)
    bm = spec.block_mask("cpu", 32)
    n_full, n_partial = int(bm.full_kv_num_blocks.sum()), int(bm.kv_num_blocks.sum())
    text = mask_summary(spec, block_size=32)
    assert text.splitlines()[:3] == [
        "causal-frame: own frame and all earlier frames",
        "params: num_frames=8, num_patches_per_frame=16",
        "q_len=128, kv_len=128; 8 frames of 16 tokens",
    ]
    assert f"{n_full} full, {n_partial} partial, {16 - n_full - n_partial} skipped" in text
    assert f"{bm.sparsity():.1f}% skipped" in text


# -- long masks ---------------------------------------------------------------------------------
def test_a_64k_token_mask_is_drawn_at_block_level_without_the_dense_mask(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the dense mask was built")

    monkeypatch.setattr(MaskSpec, "to_dense", refuse)
    monkeypatch.setattr("torch.nn.attention.flex_attention.create_mask", refuse)
    spec = get_mask("causal-frame", num_frames=256, num_patches_per_frame=256)
    fig = visualize_mask(spec, save=False, **FIG)
    img, ax = render(fig), fig.axes[0]
    n = 65536
    assert same(pixel(img, ax, 0.2 * n, 0.8 * n), rgb255(ATTEND_COLOR))  # the past
    assert same(pixel(img, ax, 0.8 * n, 0.2 * n), rgb255(MASKED_COLOR))  # the future
    assert "frame lines omitted: 256 frames" in " ".join(ax.get_xlabel().split())
    fig = plot_block_sparsity(spec, **FIG)
    # Frames are 2 blocks of 128: query block i sees key blocks 0 .. 2 * (i // 2) + 1 in full.
    full = sum(2 * (i // 2) + 2 for i in range(512))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][:3] == [
        f"full (no mask_mod): {full}",
        "partial (mask_mod): 0",
        f"skipped: {512 * 512 - full}",
    ]


_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, resource, time
    import matplotlib
    matplotlib.use("Agg")
    from flexframe import get_mask
    from flexframe.viz import plot_block_sparsity, visualize_mask

    small = get_mask("causal-frame", num_frames=2, num_patches_per_frame=2)
    visualize_mask(small, save=False).canvas.draw()  # warm up fonts and caches
    plot_block_sparsity(small).canvas.draw()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    spec = get_mask("causal-frame", num_frames=256, num_patches_per_frame=256)
    visualize_mask(spec, path="big.png")
    plot_block_sparsity(spec, path="big_blocks.png")
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_growth_mib": (after - before) / 1024}))
    """
)


_SCAN_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, resource, time
    import matplotlib
    matplotlib.use("Agg")
    from flexframe import get_mask
    from flexframe.viz import block_sparsity, plot_block_sparsity

    def combined(frames, p):
        return (
            get_mask("causal-frame", num_frames=frames, num_patches_per_frame=p)
            & get_mask("sliding-window", num_frames=frames, num_patches_per_frame=p, window_size=4)
        )

    small = combined(4, 4)
    plot_block_sparsity(small, 4).canvas.draw()  # warm up fonts, caches and the scan itself
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    spec = combined(128, 64)  # 8192 tokens, no closed form
    plot_block_sparsity(spec, path="blocks.png")
    stats = block_sparsity(spec)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "seconds": seconds,
        "peak_growth_mib": (after - before) / 1024,
        "counts": [stats.full, stats.partial, stats.skipped],
    }))
    """
)


def run_in_fresh_process(script: str, cwd, timeout: int) -> dict:
    """Run ``script`` in a new Python process (its peak memory is then the script's alone) and
    return the JSON report it prints last."""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# The memory tests read the peak resident size from ru_maxrss, whose unit is the platform's
# (KiB on Linux, bytes on macOS): they run where CI runs, on Linux.
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_blocks_of_an_8k_token_mask_without_closed_form_are_counted_in_bounded_memory(tmp_path):
    # The [8192, 8192] mask alone is 64 MiB of bools, and torch's eager create_block_mask holds
    # several copies of it (0.5 GiB measured here, 2.9 GiB at 16K); the scan needs a few MiB.
    report = run_in_fresh_process(_SCAN_PEAK_SCRIPT, tmp_path, timeout=300)
    assert report["peak_growth_mib"] < 64, report
    # causal-frame & sliding-window is the sliding window: its closed-form BlockMask's counts
    reference = get_mask("sliding-window", num_frames=128, num_patches_per_frame=64, window_size=4)
    bm = reference.block_mask("cpu", 128)
    n_full, n_partial = int(bm.full_kv_num_blocks.sum()), int(bm.kv_num_blocks.sum())
    assert report["counts"] == [n_full, n_partial, 64 * 64 - n_full - n_partial], report
    assert sorted(os.listdir(tmp_path)) == ["blocks.png"]


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_a_64k_token_mask_renders_in_seconds_with_bounded_memory(tmp_path):
    # A fresh process, so that its peak resident memory is this job's alone. The dense mask
    # would be 65536^2 bools = 4 GiB; the block picture needs a few MiB.
    report = run_in_fresh_process(_PEAK_SCRIPT, tmp_path, timeout=120)
    assert report["seconds"] < 10, report
    assert report["peak_growth_mib"] < 512, report
    assert sorted(os.listdir(tmp_path)) == ["big.png", "big_blocks.png"]
