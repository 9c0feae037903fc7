"""Mask pictures, checked by their pixels and arrays against brute-force masks written in tests.

Element pictures: the pixel at every cell's centre (found through the axes' data -> pixel
transform) has the colour of the brute-force mask (``strategies.reference_dense``). Block
pictures: every block's centre has the colour of its class in a brute-force grid
(``strategies.expected_block_grids``). Plus the saving rule, bad inputs, a long mask drawn in
bounded memory, and the summary's figures. About 15 s on a 2-core CPU.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import textwrap

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.colors import to_rgb
from strategies import expected_block_grids, mask_configs, reference_dense

from flexframe import FrameLevelMaskGenerator, get_mask
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
    plot_block_sparsity,
    plot_frame_timeline,
    visualize_mask,
)


# -- pixel helpers ------------------------------------------------------------------------------
def rgb255(color: str) -> np.ndarray:
    return np.round(np.asarray(to_rgb(color)) * 255).astype(int)


def render(fig) -> np.ndarray:
    """``[H, W, 3]`` pixels of the figure as drawn."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def colours_at(fig, ax, xs, ys) -> np.ndarray:
    """``[..., 3]``: the pixels under the data points ``(xs, ys)`` (one draw of the figure)."""
    img = render(fig)
    xs, ys = np.broadcast_arrays(np.asarray(xs, float), np.asarray(ys, float))
    px = ax.transData.transform(np.stack([xs.ravel(), ys.ravel()], axis=1))
    rows = (img.shape[0] - px[:, 1]).astype(int)  # display y runs up from the bottom
    return img[rows, px[:, 0].astype(int)].reshape(*xs.shape, 3)


def cell_colours(fig, q_len: int, kv_len: int, ax=None) -> np.ndarray:
    """``[q_len, kv_len, 3]``: the pixel at the centre of every cell (q, k)."""
    q, k = np.meshgrid(np.arange(q_len) + 0.5, np.arange(kv_len) + 0.5, indexing="ij")
    return colours_at(fig, ax or fig.axes[0], k, q)


def expected_cells(dense: torch.Tensor) -> np.ndarray:
    return np.where(dense.numpy()[..., None], rgb255(ATTEND_COLOR), rgb255(MASKED_COLOR))


def expected_blocks(dense: torch.Tensor, bq: int, bk: int) -> np.ndarray:
    """``[nq, nk, 3]`` class colours of the brute-force block grid."""
    partial, full = (g.numpy()[..., None] for g in expected_block_grids(dense, bq, bk))
    colours = np.where(partial, rgb255(PARTIAL_BLOCK_COLOR), rgb255(SKIPPED_BLOCK_COLOR))
    return np.where(full, rgb255(FULL_BLOCK_COLOR), colours)


def block_colours(fig, nq: int, nk: int, bq: int, bk: int) -> np.ndarray:
    """``[nq, nk, 3]``: the pixel at the centre of every block of the padded grid."""
    q, k = np.meshgrid((np.arange(nq) + 0.5) * bq, (np.arange(nk) + 0.5) * bk, indexing="ij")
    return colours_at(fig, fig.axes[0], k, q)


def spec_and_reference(config):
    name, params = config
    return get_mask(name, **params), reference_dense(name, params)


BIG_DPI = {"dpi": 150}  # enough pixels for cells of the small masks the tests draw


# -- element pictures ---------------------------------------------------------------------------
@settings(max_examples=10)
@given(mask_configs(max_frames=5, max_patches=5))
def test_every_cell_shows_the_brute_force_mask_at_its_centre(config):
    spec, ref = spec_and_reference(config)
    fig = visualize_mask(spec, **BIG_DPI)
    assert np.array_equal(cell_colours(fig, *ref.shape), expected_cells(ref))


def test_a_prompt_mask_of_one_prompt_draws_its_cells_and_one_of_several_is_refused():
    # text | 3 frames of 2 tokens | text: text is token-causal, a frame sees itself whole, the
    # text before it and the earlier frames; the text after sees everything before it
    ids = [-1, -1, 0, 0, 1, 1, 2, 2, -1]
    frame_of = lambda i: ids[i] if ids[i] >= 0 else None  # noqa: E731
    ref = torch.zeros(9, 9, dtype=torch.bool)
    for q in range(9):
        for k in range(9):
            fq, fk = frame_of(q), frame_of(k)
            ref[q, k] = k <= q or (fq is not None and fk is not None and fk <= fq)
    spec = get_mask("prompt-causal-frame", frame_ids=torch.tensor([ids]))
    fig = visualize_mask(spec, **BIG_DPI)
    assert np.array_equal(cell_colours(fig, 9, 9), expected_cells(ref))
    two = get_mask("prompt-causal-frame", frame_ids=torch.tensor([ids, ids]))
    with pytest.raises(ValueError, match=r"over 2 prompts.*to_dense\(\)\[b\]"):
        visualize_mask(two)


@pytest.mark.parametrize(
    "form", ["spec", "block_mask", "dense", "rectangular", "long_rectangle", "a_and_b"]
)
def test_every_input_form_draws_the_cells_of_its_mask(form):
    params = {"num_frames": 5, "num_patches_per_frame": 3}
    spec, ref = get_mask("causal-frame", **params), reference_dense("causal-frame", params)
    mask = {"spec": spec, "block_mask": spec.block_mask("cpu", block_size=4), "dense": ref}.get(
        form
    )
    if form == "rectangular":  # cross-attention to a shorter memory: attends everywhere
        mask, ref = get_mask("full", seq_len=8, kv_len=4), torch.ones(8, 4, dtype=torch.bool)
    if form == "long_rectangle":  # 3 queries, 40 keys: drawn without equal aspect
        mask = ref = torch.rand(3, 40, generator=torch.Generator().manual_seed(0)) > 0.5
    if form == "a_and_b":  # no closed form
        mask = spec & get_mask("token-causal", seq_len=15)
        ref = ref & reference_dense("token-causal", {"seq_len": 15})
    fig = visualize_mask(mask, **BIG_DPI)
    assert np.array_equal(cell_colours(fig, *ref.shape), expected_cells(ref))


def test_queries_run_top_to_bottom_and_keys_left_to_right_in_token_units():
    fig = visualize_mask(get_mask("token-causal", seq_len=6), **BIG_DPI)
    ax = fig.axes[0]
    assert ax.get_xlim() == (0, 6) and ax.get_ylim() == (6, 0)
    assert "query" in ax.get_ylabel() and "key" in ax.get_xlabel()
    img = render(fig)
    box = ax.get_window_extent()  # corners in pixels, independent of the data transform
    corner = {}
    for name, x, y in [("top_left", box.x0 + 5, box.y1 - 5), ("top_right", box.x1 - 5, box.y1 - 5),
                       ("bottom_left", box.x0 + 5, box.y0 + 5)]:  # fmt: skip
        corner[name] = img[int(img.shape[0] - y), int(x)]
    # token-causal: query 0 sees key 0 only, so only the top-right corner (q=0, k=5) is masked
    assert np.array_equal(corner["top_left"], rgb255(ATTEND_COLOR))
    assert np.array_equal(corner["top_right"], rgb255(MASKED_COLOR))
    assert np.array_equal(corner["bottom_left"], rgb255(ATTEND_COLOR))


def test_frame_lines_lie_on_frame_boundaries_only_when_the_frame_size_is_known():
    ref = reference_dense("causal-frame", {"num_frames": 4, "num_patches_per_frame": 3})

    def boundary_redness(fig) -> np.ndarray:
        pts = np.array([3.0, 6.0, 9.0])  # frame boundaries, half a cell from any cell centre
        c = colours_at(fig, fig.axes[0], pts, np.full(3, 10.5))  # down the last query row
        return c[:, 0] - c[:, 1]

    without = visualize_mask(ref, **BIG_DPI)  # a bare tensor: no frame size
    with_frames = visualize_mask(ref, num_patches_per_frame=3, **BIG_DPI)
    assert (boundary_redness(without) <= 0).all()  # grey or blue: R <= G
    assert (boundary_redness(with_frames) > 60).all()  # FRAME_LINE_COLOR is red
    assert np.array_equal(cell_colours(with_frames, 12, 12), expected_cells(ref))
    spec = get_mask("causal-frame", num_frames=4, num_patches_per_frame=3)  # a spec's own size
    assert (boundary_redness(visualize_mask(spec, **BIG_DPI)) > 60).all()
    assert rgb255(FRAME_LINE_COLOR)[0] - rgb255(FRAME_LINE_COLOR)[1] > 60


# -- block pictures -----------------------------------------------------------------------------
block_sizes = st.one_of(st.integers(1, 6), st.tuples(st.integers(1, 6), st.integers(1, 6)))


def pair(block_size) -> tuple[int, int]:
    return block_size if isinstance(block_size, tuple) else (block_size, block_size)


@settings(max_examples=10)
@given(mask_configs(max_frames=5, max_patches=5), block_sizes)
def test_every_block_shows_its_brute_force_class_at_its_centre(config, block_size):
    spec, ref = spec_and_reference(config)
    bq, bk = pair(block_size)
    want = expected_blocks(ref, bq, bk)
    fig = plot_block_sparsity(spec, block_size, **BIG_DPI)
    assert np.array_equal(block_colours(fig, *want.shape[:2], bq, bk), want)
    partial, full = expected_block_grids(ref, bq, bk)
    skipped = int((~partial & ~full).sum())
    assert f"{skipped:,} skipped" in fig.axes[0].get_title()
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[:3] == [f"full block (no mask_mod): {int(full.sum())}",
                          f"partial block (mask_mod): {int(partial.sum())}",
                          f"skipped block: {skipped}"]  # fmt: skip


@pytest.mark.parametrize("form", ["spec", "block_mask", "dense", "a_and_b"])
def test_a_mask_longer_than_max_elements_is_drawn_one_cell_per_block(form):
    params = {"num_frames": 6, "num_patches_per_frame": 3}  # 18 tokens, blocks of 4: padded
    spec, ref = get_mask("sliding-window", window_size=1, sink_frames=1, **params), None
    ref = reference_dense("sliding-window", {"window_size": 1, "sink_frames": 1, **params})
    mask = {"spec": spec, "block_mask": spec.block_mask("cpu", block_size=4), "dense": ref}.get(
        form
    )
    if form == "a_and_b":
        mask = spec & get_mask("token-causal", seq_len=18)
        ref = ref & reference_dense("token-causal", {"seq_len": 18})
    fig = visualize_mask(mask, max_elements=17, block_size=None if form == "block_mask" else 4)
    want = expected_blocks(ref, 4, 4)
    assert np.array_equal(block_colours(fig, 5, 5, 4, 4), want)
    assert (want == rgb255(PARTIAL_BLOCK_COLOR)).all(-1).any()  # all three classes are shown
    assert "drawn by block" in fig.axes[0].get_xlabel()
    assert fig.axes[0].get_xlim() == (0, 20)  # the padded grid, in tokens
    # The sequence ends at token 18 of 20: a marker just above the top edge and one just left of
    # the left edge, outside the cells (4 points off the edge).
    img, ax = render(fig), fig.axes[0]
    (x, top), (left, y) = ax.transData.transform([(18, 0), (0, 18)])
    off = 4 * fig.dpi / 72
    assert (img[int(img.shape[0] - top - off), int(x)] < 60).all()  # SEQUENCE_END_COLOR: black
    assert (img[int(img.shape[0] - y), int(left - off)] < 60).all()


@settings(max_examples=30)
@given(mask_configs(max_frames=5, max_patches=5), block_sizes, st.sampled_from(["spec", "bm", "dense"]))  # fmt: skip
def test_block_counts_equal_a_brute_force_grid_for_every_input_form(config, block_size, form):
    spec, ref = spec_and_reference(config)
    mask = (
        spec if form == "spec" else ref if form == "dense" else spec.block_mask("cpu", block_size)
    )
    stats = block_sparsity(mask, None if form == "bm" else block_size)
    partial, full = expected_block_grids(ref, *pair(block_size))
    assert (stats.full, stats.partial) == (int(full.sum()), int(partial.sum()))
    assert stats.skipped == full.numel() - stats.full - stats.partial
    assert stats.total == full.numel() and 0 <= stats.computed_share <= 1


def test_blocks_of_a_mask_without_closed_form_are_counted_exactly():
    a = get_mask("causal-frame", num_frames=7, num_patches_per_frame=5)
    b = get_mask("sliding-window", num_frames=7, num_patches_per_frame=5, window_size=2)
    ref = reference_dense("causal-frame", dict(a.params)) & reference_dense(
        "sliding-window", dict(b.params)
    )
    stats = block_sparsity(a & b, block_size=(4, 8))
    partial, full = expected_block_grids(ref, 4, 8)
    assert (stats.full, stats.partial) == (int(full.sum()), int(partial.sum()))


def test_compare_masks_draws_each_mask_in_its_own_panel():
    masks = {
        "token-causal": get_mask("token-causal", seq_len=9),
        "causal-frame by block": get_mask("causal-frame", num_frames=3, num_patches_per_frame=3),
    }
    refs = [reference_dense("token-causal", {"seq_len": 9}),
            reference_dense("causal-frame", {"num_frames": 3, "num_patches_per_frame": 3})]  # fmt: skip
    fig = compare_masks(masks, max_elements=9, dpi=150)
    assert [ax.get_title() for ax in fig.axes] == list(masks)
    assert np.array_equal(cell_colours(fig, 9, 9, fig.axes[0]), expected_cells(refs[0]))
    fig = compare_masks(list(masks.values()), max_elements=8, block_size=2, dpi=150)
    assert [ax.get_title() for ax in fig.axes] == ["token-causal", "causal-frame"]
    q, k = np.meshgrid(np.arange(5) + 0.5, np.arange(5) + 0.5, indexing="ij")
    for ax, ref in zip(fig.axes, refs, strict=True):  # both beyond max_elements: by block
        assert np.array_equal(colours_at(fig, ax, 2 * k, 2 * q), expected_blocks(ref, 2, 2))


def test_frame_timeline_puts_each_index_at_its_frame():
    streams = {"fast": [12, 13, 14, 15], "slow": torch.tensor([0, 4, 8, 12])}
    fig = plot_frame_timeline(streams, num_frames=16)
    ax = fig.axes[0]
    dots = [c.get_offsets() for c in ax.collections]
    assert [list(d[:, 0]) for d in dots] == [[12, 13, 14, 15], [0, 4, 8, 12]]
    assert [list(d[:, 1]) for d in dots] == [[0] * 4, [1] * 4]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["fast", "slow"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["0", "1", "2", "3"] * 2)


# -- saving -------------------------------------------------------------------------------------
SPEC = get_mask("causal-frame", num_frames=3, num_patches_per_frame=2)
PICTURES = {
    "visualize_mask": lambda **kw: visualize_mask(SPEC, "My Frame Mask", **kw),
    "visualize_mask_by_block": lambda **kw: visualize_mask(SPEC, max_elements=2, **kw),
    "plot_block_sparsity": lambda **kw: plot_block_sparsity(SPEC, 2, title="t", **kw),
    "compare_masks": lambda **kw: compare_masks([SPEC, SPEC], title="My Frame Mask", **kw),
    "plot_frame_timeline": lambda **kw: plot_frame_timeline({"a": [1]}, 3, title="t", **kw),
}


@pytest.mark.parametrize("name", PICTURES)
def test_a_png_is_saved_only_when_a_path_is_given(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fig = PICTURES[name]()
    assert list(tmp_path.iterdir()) == []
    target = tmp_path / "sub" / "picture.png"
    target.parent.mkdir()
    fig = PICTURES[name](path=str(target))
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["picture.png"]
    img = mpimg.imread(target)
    width, height = fig.get_size_inches() * fig.dpi
    assert img.shape[:2] == (round(height), round(width))
    assert np.array_equal(render(fig).shape[:2], img.shape[:2])


def test_mask_to_png_saves_nothing_and_the_seed_class_saves_under_the_title(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    png = mask_to_png(SPEC)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and list(tmp_path.iterdir()) == []
    assert mpimg.imread(io.BytesIO(png)).shape[:2] == (320, 440)  # (5.5, 4) inches at 80 dpi
    FrameLevelMaskGenerator().visualize_mask(SPEC.to_dense(), title="My Frame Mask")
    assert [p.name for p in tmp_path.iterdir()] == ["my_frame_mask.png"]


@pytest.mark.parametrize(
    "title, filename",
    [("My Frame Mask", "my_frame_mask.png"), ("causal-frame (num_frames=3)", "causal_frame_num_frames_3.png"),
     ("  __A__b  ", "a_b.png"), ("Ünïcode 1x2", "ünïcode_1x2.png")],
)  # fmt: skip
def test_filename_rule(title, filename):
    assert filename_for_title(title) == filename


# -- bad input ----------------------------------------------------------------------------------
MASK_FUNCTIONS = {
    "visualize_mask": visualize_mask,
    "plot_block_sparsity": plot_block_sparsity,
    "compare_masks": lambda m: compare_masks([m]),
    "mask_summary": mask_summary,
    "mask_to_png": mask_to_png,
    "block_sparsity": block_sparsity,
}
BAD_MASKS = [
    (torch.ones(1, 1, 4, 4, dtype=torch.bool), ValueError, ["shape (1, 1, 4, 4)", "[0, 0]"]),
    (torch.ones(2, 4, 4, dtype=torch.bool), ValueError, ["shape (2, 4, 4)", "[0]"]),
    (torch.ones(4, dtype=torch.bool), ValueError, ["shape (4,)", "[q_len, kv_len]"]),
    (torch.zeros(4, 4), TypeError, ["torch.float32", "== 0"]),
    (torch.zeros(4, 4, dtype=torch.int64), TypeError, ["torch.int64", ".bool()"]),
    (torch.ones(0, 4, dtype=torch.bool), ValueError, ["empty", "(0, 4)"]),
    (np.ones((4, 4), dtype=bool), TypeError, ["ndarray", "torch.from_numpy"]),
    ("causal-frame", TypeError, ["MaskSpec", "got str"]),
    ([[True]], TypeError, ["MaskSpec", "got list"]),
]


@pytest.mark.parametrize("function", MASK_FUNCTIONS)
@pytest.mark.parametrize("mask, error, needles", BAD_MASKS, ids=lambda v: None)
def test_every_function_refuses_a_mask_it_cannot_read_and_says_what_to_pass(
    function, mask, error, needles
):
    with pytest.raises(error) as info:
        MASK_FUNCTIONS[function](mask)
    for needle in needles:
        assert needle in str(info.value)


LONG_A_AND_B = get_mask("causal-frame", num_frames=128, num_patches_per_frame=256) & get_mask(
    "token-causal", seq_len=32768
)  # 32K tokens without closed form: torch's eager create_block_mask would take ~11 GB


@pytest.mark.parametrize(
    "call, error, needles",
    [
        (lambda: visualize_mask(SPEC, num_patches_per_frame=0), ValueError, ["num_patches_per_frame", "0"]),
        (lambda: visualize_mask(SPEC, max_elements=-1), ValueError, ["max_elements", "-1"]),
        (lambda: visualize_mask(SPEC, max_elements=1.5), TypeError, ["max_elements", "1.5"]),
        (lambda: visualize_mask(SPEC, max_elements=0, block_size=0), ValueError, ["block_size", "0"]),
        (lambda: plot_block_sparsity(SPEC, (2, 2, 2)), ValueError, ["block_size", "(2, 2, 2)"]),
        (lambda: plot_block_sparsity(SPEC.block_mask("cpu", 2), 4), ValueError, ["BLOCK_SIZE=(2, 2)", "None"]),
        (lambda: compare_masks([]), ValueError, ["masks", "empty"]),
        (lambda: visualize_mask(LONG_A_AND_B), ValueError, ["no closed form", "block_mask('cuda')"]),
        (lambda: plot_block_sparsity(LONG_A_AND_B), ValueError, ["1,073,741,824 cells"]),
        (lambda: compare_masks(SPEC), TypeError, ["MaskSpec", "visualize_mask"]),
        (lambda: compare_masks({"mine": torch.zeros(2, 2)}), TypeError, ["masks['mine']", "== 0"]),
        (lambda: compare_masks([SPEC], ncols=0), ValueError, ["ncols", "0"]),
        (lambda: plot_frame_timeline({"fast": [0, 16]}, 16), ValueError, ["streams['fast'][1] = 16", "0..15"]),
        (lambda: plot_frame_timeline({"fast": [0.5]}, 16), TypeError, ["streams['fast']", "0.5"]),
        (lambda: plot_frame_timeline({}, 16), TypeError, ["streams", "{}"]),
        (lambda: plot_frame_timeline({"a": [0]}, 0), ValueError, ["num_frames", "0"]),
        (lambda: filename_for_title("!!!"), ValueError, ["'!!!'", "path="]),
        (lambda: filename_for_title(3), TypeError, ["title", "3"]),
    ],
)  # fmt: skip
def test_bad_arguments_name_the_argument_and_the_value(call, error, needles):
    with pytest.raises(error) as info:
        call()
    for needle in needles:
        assert needle in str(info.value)


# -- long masks ---------------------------------------------------------------------------------
LONG_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from flexframe import get_mask
    from matplotlib.colors import to_rgb
    from flexframe.viz import plot_block_sparsity, visualize_mask

    def classes(fig):  # 0 skipped, 1 partial, 2 full (-1: none), from the picture's array
        rgb = np.asarray(fig.axes[0].images[0].get_array())[..., :3]
        out = np.full(rgb.shape[:2], -1)
        for i, colour in enumerate(("#e6e6e6", "#f5a623", "#1f4e8c")):
            out[(rgb == np.round(np.array(to_rgb(colour)) * 255)).all(-1)] = i
        return out

    out, start = {}, time.perf_counter()
    # 128K tokens, 256-token frames, 128-token blocks: block (i, j) is full iff frame j <= i
    spec = get_mask("causal-frame", num_frames=512, num_patches_per_frame=256)
    i, j = np.meshgrid(np.arange(1024), np.arange(1024), indexing="ij")
    want = np.where(j // 2 <= i // 2, 2, 0)
    out["visualize"] = bool((classes(visualize_mask(spec)) == want).all())
    out["plot"] = bool((classes(plot_block_sparsity(spec)) == want).all())
    # 1M tokens: one cell per 8 x 8 blocks (1024 tokens, 4 frames): the diagonal is partial
    long = get_mask("causal-frame", num_frames=4096, num_patches_per_frame=256)
    want = np.where(j < i, 2, np.where(j == i, 1, 0))
    out["million"] = bool((classes(visualize_mask(long)) == want).all())
    out["seconds"] = time.perf_counter() - start
    # VmHWM: this process's peak since exec (ru_maxrss would carry pytest's peak over the fork)
    status = open("/proc/self/status").read()
    out["rss_mib"] = int(status.split("VmHWM:")[1].split()[0]) / 1024
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="reads its peak memory from /proc")
def test_a_long_mask_is_drawn_by_block_without_its_dense_mask():
    """128K tokens: the dense mask would hold 16 GiB (and MaskSpec refuses it), at 1M 1 TiB."""
    result = subprocess.run(
        [sys.executable, "-c", LONG_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["visualize"] and out["plot"] and out["million"]
    assert out["rss_mib"] < 1500, out  # torch + matplotlib take about 500 MiB


# -- summary ------------------------------------------------------------------------------------
def percentages(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"(\d+(?:\.\d+)?)%", text)]


SUMMARY_CASES = {
    "tiny": ("causal-frame", {"num_frames": 4, "num_patches_per_frame": 3}),
    "one_token": ("causal-frame", {"num_frames": 1, "num_patches_per_frame": 1}),
    "full": ("full", {"seq_len": 256}),
    "token_causal": ("token-causal", {"seq_len": 300}),
    "teacher_forcing": ("teacher-forcing", {"num_frames": 6, "num_patches_per_frame": 30,
                                            "frames_per_chunk": 2}),
}  # fmt: skip


@pytest.mark.parametrize("case", SUMMARY_CASES)
def test_summary_figures_equal_brute_force_and_never_exceed_100_percent(case):
    name, params = SUMMARY_CASES[case]
    spec, ref = get_mask(name, **params), reference_dense(name, params)
    text = mask_summary(spec, block_size=128)
    partial, full = expected_block_grids(ref, 128, 128)
    n_full, n_partial = int(full.sum()), int(partial.sum())
    total = full.numel()
    skipped = total - n_full - n_partial
    assert f"attends: {int(ref.sum()):,} of {ref.numel():,} query-key pairs" in text
    assert f": {n_full} full, {n_partial} partial, {skipped} skipped" in text
    assert f"computes {n_full + n_partial} of {total} block" in text
    assert all(p <= 100 for p in percentages(text)), text
    assert not re.search(r"\b1 blocks\b|\bof 1 blocks\b|\b1 frames\b|\b1 tokens\b", text), text
    padded = ref.shape[0] % 128 or ref.shape[1] % 128
    assert ("padding:" in text) == bool(padded)
    if padded:  # why a mask that attends everywhere still has a partial block
        assert "padded cells count as masked" in text
    assert ("one block holds the whole mask" in text) == (total == 1)


def test_summary_of_a_rectangular_full_mask_explains_its_partial_block():
    text = mask_summary(get_mask("full", seq_len=8, kv_len=4))
    assert "attends: 32 of 32 query-key pairs (100.0%)" in text
    assert "1 block of 128x128: 0 full, 1 partial, 0 skipped" in text
    assert "pads 8x4 tokens to 128x128" in text and "no block holding padding is full" in text
    assert "the 1 computed block scores 16,384 pairs, 32 of them between real tokens" in text


def test_summary_of_a_large_mask_counts_blocks_from_the_closed_form():
    spec = get_mask("causal-frame", num_frames=64, num_patches_per_frame=256)  # 16K tokens
    text = mask_summary(spec)
    # 128 block rows; block row i (frame i // 2) has 2 * (i // 2 + 1) full blocks
    full = sum(2 * (i // 2 + 1) for i in range(128))
    assert f"16,384 blocks of 128x128 (128 x 128): {full:,} full, 0 partial" in text
    assert "attends" not in text and "padding" not in text
    assert f"skips {16384 - full:,} ({(16384 - full) / 16384:.1%})" in text


def test_summary_of_masks_without_closed_form_and_of_other_inputs():
    a = get_mask("causal-frame", num_frames=4, num_patches_per_frame=3)
    ref = reference_dense("causal-frame", {"num_frames": 4, "num_patches_per_frame": 3}) & (
        reference_dense("token-causal", {"seq_len": 12})
    )
    text = mask_summary(a & get_mask("token-causal", seq_len=12), block_size=4)
    partial, full = expected_block_grids(ref, 4, 4)
    assert text.splitlines()[0] == "(causal-frame & token-causal): causal-frame and token-causal"
    assert "left=(num_frames=4, num_patches_per_frame=3), right=(seq_len=12)" in text
    assert "4 frames of 3 tokens" in text  # token-causal has no frames: causal-frame's stay
    assert f"{int(full.sum())} full, {int(partial.sum())} partial" in text
    assert f"attends: {int(ref.sum())} of 144" in text
    assert mask_summary(ref, block_size=4).startswith("bool mask\nq_len=12, kv_len=12\n")
    bm_text = mask_summary(a.block_mask("cpu", block_size=4))
    assert "blocks: 9 blocks of 4x4" in bm_text and "attends: 90 of 144" in bm_text
    long = get_mask("causal-frame", num_frames=64, num_patches_per_frame=256)
    text = mask_summary(long & get_mask("token-causal", seq_len=16384))
    assert "blocks: not counted here" in text and "block_sparsity(mask)" in text
