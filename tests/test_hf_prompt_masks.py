"""Prompt masks (text, several videos, padding, a KV-cache offset) against written definitions.

The reference below reads the rules of ``flexframe.masks.prompt`` as its docstring states them
and loops over (query, key) pairs in plain Python; it shares no code with the library.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import BLOCK_MASK_TENSORS, expected_block_grids
from torch.nn.attention.flex_attention import create_block_mask

from flexframe import get_mask
from flexframe.masks.block_kernel import grids_from_tables
from flexframe.masks.prompt import PAD, TEXT

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest.py)


# -- prompts --------------------------------------------------------------------------------------
@st.composite
def prompt_rows(draw, inner_text: bool = True, scale: int = 1, outer_padding: bool = False):
    """One row: text, videos of 1-4 frames of 1-5 tokens (up to ``5 * scale``; text between
    videos, and between frames when ``inner_text``), text. With ``outer_padding``, padding may also sit
    between videos and text (anywhere outside a video)."""
    ids = [TEXT] * (draw(st.integers(0, 3)) * scale)
    num_videos = draw(st.integers(0, 3 if scale == 1 else 2))
    for v in range(num_videos):
        for k in range(draw(st.integers(1, 4))):
            if k and inner_text and draw(st.booleans()):
                ids += [TEXT] * draw(st.integers(1, 2))
            ids += [k] * draw(st.integers(1, 5 * scale))
        if v + 1 < num_videos:
            gap = [TEXT] * draw(st.integers(1, 2))
            if outer_padding and draw(st.booleans()):
                gap.insert(draw(st.integers(0, len(gap))), PAD)
            ids += gap
    ids += [TEXT] * (draw(st.integers(0, 3)) * scale)
    return ids or [TEXT]


@st.composite
def prompt_batches(draw, inner_text: bool = True, outer_padding: bool = False, scale: int = 1):
    """``[B, L]`` frame ids of 1-3 rows, each padded on the left or on the right, and sometimes
    followed by generated text (as ``generate`` appends it after a right padding)."""
    rows = draw(st.lists(prompt_rows(inner_text, scale, outer_padding), min_size=1, max_size=3))
    length = max(len(r) for r in rows) + draw(st.integers(0, 2))
    out = []
    for r in rows:
        pad = [PAD] * (length - len(r))
        out.append(pad + r if draw(st.booleans()) else r + pad)
    extra = draw(st.integers(0, 3))
    out = [row + [TEXT] * extra for row in out]
    return torch.tensor(out)


def frames_of(row: list[int]) -> list[tuple[int, int, int, int]]:
    """``(video, frame, first, last)`` of every frame run, in sequence order."""
    runs, video = [], -1
    for t, i in enumerate(row):
        if i < 0:
            continue
        if runs and runs[-1][3] == t - 1 and runs[-1][1] == i:
            v, f, first, _ = runs[-1]
            runs[-1] = (v, f, first, t)
            continue
        if i == 0:
            video += 1
        runs.append((video, i, t, t))
    return runs


def reference(
    ids: torch.Tensor, family: str, q_len: int | None = None, q_start: int | None = None,
    queries: list[int] | None = None, **params,
) -> torch.Tensor:  # fmt: skip
    """``[B, q_len, L]`` bool from the written rules (``queries``: only those query indices)."""
    b, n = ids.shape
    q_len = n if q_len is None else q_len
    q_start = n - q_len if q_start is None else q_start
    queries = list(range(q_len)) if queries is None else queries
    out = torch.zeros(b, len(queries), n, dtype=torch.bool)
    for r in range(b):
        row = ids[r].tolist()
        runs = frames_of(row)
        run_at = {t: run for run in runs for t in range(run[2], run[3] + 1)}
        for i, qi in enumerate(queries):
            for k in range(n):
                out[r, i, k] = visible(row, runs, run_at, q_start + qi, k, family, params)
    return out


def counts_as(runs, run_at, t):
    """For timestamp-causal: the frame run a token counts as (text between two frames of a video
    counts as the frame after it), or None outside videos."""
    if t in run_at:
        return run_at[t]
    before = [run for run in runs if run[3] < t]
    after = [run for run in runs if run[2] > t]
    if before and after and before[-1][0] == after[0][0]:
        return after[0]
    return None


def visible(row, runs, run_at, q, k, family, params) -> bool:
    if row[k] == PAD:
        return False
    own = counts_as(runs, run_at, q) if family == "prompt-timestamp-causal" else run_at.get(q)
    if row[q] == PAD or own is None:  # text, and a padded query (it sees what text would)
        return k <= q
    video, frame, first, last = own
    video_runs = [run for run in runs if run[0] == video]
    video_start = video_runs[0][2]
    if family == "prompt-causal-frame":
        return k <= last
    if family == "prompt-sliding-window":
        w, s = params["window_size"], params.get("sink_frames", 0)
        if k > last:
            return False
        window_start = video_runs[max(frame - w, 0)][2]
        before = video_runs[min(s, frame + 1) - 1][3] if s else video_start - 1
        return k >= window_start or k <= before
    # timestamp-causal: the video's frames shown no later; what precedes the video; nothing after
    ts = params["timestamps"]
    if k < video_start:
        return True
    if k > video_runs[-1][3]:
        return False
    kv_time, q_time = ts[counts_as(runs, run_at, k)[1]], ts[frame]
    if params.get("within_frame", "full") == "full":
        return kv_time <= q_time
    return kv_time < q_time or (kv_time == q_time and k <= q)


FAMILIES = st.sampled_from(
    ["prompt-causal-frame", "prompt-sliding-window", "prompt-timestamp-causal"]
)


@st.composite
def prompt_masks(draw, scale: int = 1):
    """A prompt mask with its parameters, frame ids and queries (a cache offset, or a static
    cache's: queries before empty slots)."""
    family = draw(FAMILIES)
    ids = draw(prompt_batches(outer_padding=family != "prompt-sliding-window", scale=scale))
    params: dict = {}
    if family == "prompt-sliding-window":
        params["window_size"] = draw(st.integers(0, 4))
        if draw(st.booleans()):
            params["sink_frames"] = draw(st.integers(1, 3))
    if family == "prompt-timestamp-causal":
        params["timestamps"] = draw(st.lists(st.integers(0, 5), min_size=4, max_size=4))
        params["within_frame"] = draw(st.sampled_from(["full", "causal"]))
    n = ids.shape[1]
    q_len = draw(st.one_of(st.none(), st.integers(1, n)))
    if q_len is not None and draw(st.booleans()):
        params["q_start"] = draw(st.integers(0, n - q_len))
    return family, ids, params, q_len


block_sizes = st.one_of(st.integers(1, 9), st.tuples(st.integers(1, 9), st.integers(1, 9)))


# -- the mask ------------------------------------------------------------------------------------
@given(prompt_masks())
def test_the_prompt_mask_is_its_written_definition(case):
    family, ids, params, q_len = case
    spec = get_mask(family, frame_ids=ids, q_len=q_len, **params)
    want = reference(ids, family, q_len, **params)
    assert spec.to_dense().shape == want.shape
    assert torch.equal(spec.to_dense(), want)


def assert_closed_form_is_torchs(spec, block_size):
    """The closed-form BlockMask, after checking it against torch's ``create_block_mask`` on the
    same mask_mod, tensor for tensor."""
    closed = spec.block_mask("cpu", block_size)
    generic = create_block_mask(spec.mask_mod, spec.batch_size, 1, spec.q_len, spec.kv_len,
                                device="cpu", BLOCK_SIZE=block_size)  # fmt: skip
    for attr in BLOCK_MASK_TENSORS:
        assert torch.equal(getattr(closed, attr), getattr(generic, attr)), attr
    return closed


@given(prompt_masks(), block_sizes)
def test_the_closed_form_block_mask_is_torchs_create_block_mask(case, block_size):
    family, ids, params, q_len = case
    spec = get_mask(family, frame_ids=ids, q_len=q_len, **params)
    closed = assert_closed_form_is_torchs(spec, block_size)
    assert closed.seq_lengths == (spec.q_len, spec.kv_len)
    # The kernel's view of the mask (blocks expanded, mask_mod inside partial ones) is the rule.
    want = reference(ids, family, q_len, **params)
    q_bs, kv_bs = closed.BLOCK_SIZE
    blocks = closed.to_dense()[:, 0].repeat_interleave(q_bs, 1).repeat_interleave(kv_bs, 2)
    assert torch.equal(blocks[:, : spec.q_len, : spec.kv_len] & spec.to_dense(), want)


def test_a_prompts_text_is_one_piece_of_the_block_tables_not_one_a_token():
    # Text under a sliding window sees [the row's first token, itself]: intervals that only
    # grow, so a block of text is one piece of the tables the CUDA kernel reads (a piece a token
    # made them too large for it), and the tables still classify every block as the rule does.
    ids = torch.tensor([[TEXT] * 300 + [0] * 70 + [1] * 70 + [2] * 70 + [TEXT] * 100])
    spec = get_mask("prompt-sliding-window", frame_ids=ids, window_size=1, sink_frames=1)
    rows, cols = spec.relations[0].block_table(64, 64)
    assert rows.shape[1] <= 2  # pieces a block: text, or a boundary between two runs (frames
    # of 70 tokens: at most one boundary in a block of 64)
    partial, full = grids_from_tables(torch.from_numpy(rows), torch.from_numpy(cols))
    want_partial, want_full = expected_block_grids(
        reference(ids, spec.name, window_size=1, sink_frames=1)[0], 64, 64
    )
    assert torch.equal(partial, want_partial) and torch.equal(full, want_full)


@pytest.mark.parametrize(
    ("family", "params"),
    [("prompt-causal-frame", {}), ("prompt-sliding-window", {"window_size": 2, "sink_frames": 1}),
     ("prompt-timestamp-causal", {"timestamps": [(7 * k) % 80 for k in range(80)]})],
)  # fmt: skip
def test_a_prompt_with_text_between_every_frame_is_its_written_definition(family, params):
    # Qwen3-VL's layout: a timestamp before each of 80 frames, so 80 stretches of text whose
    # bounds rise with the position (the many-run case of writing the keys out token by token).
    row = [TEXT] * 3
    for k in range(80):
        row += [TEXT] * (1 + k % 2) + [k] * (2 + k % 3)
    ids = torch.tensor([row + [TEXT] * 4, [PAD] * 9 + row[:-5]])  # a left-padded second row
    spec = get_mask(family, frame_ids=ids, **params)
    assert torch.equal(spec.to_dense(), reference(ids, family, **params))
    assert_closed_form_is_torchs(spec, (32, 16))


@pytest.mark.parametrize(
    ("family", "params"),
    [("prompt-causal-frame", {}), ("prompt-sliding-window", {"window_size": 1, "sink_frames": 1}),
     ("prompt-timestamp-causal", {"timestamps": [2, 0, 1], "within_frame": "full"}),
     ("prompt-timestamp-causal", {"timestamps": [2, 0, 1], "within_frame": "causal"})],
)  # fmt: skip
def test_a_prompts_relations_hold_a_segment_a_run_not_a_token(family, params):
    # 600 text tokens, 3 frames (a timestamp text between two of them), 200 text, right padding:
    # 8 runs of equal ids. The relations' keys and bounds are stated run by run (the closed
    # form's work grows with the runs, not the tokens), and still give torch's blocks.
    row = [TEXT] * 600 + [0] * 50 + [TEXT] * 3 + [1] * 50 + [2] * 50 + [TEXT] * 200 + [PAD] * 7
    ids = torch.tensor([row])
    spec = get_mask(family, frame_ids=ids, q_len=900, **params)  # the last 900 positions
    relation = spec.relations[0]
    keys = [relation.kv_key] + [b for iv in relation.intervals for b in (iv.lo, iv.hi) if b]
    assert max(key.starts.numel() for key in keys) <= 8
    assert_closed_form_is_torchs(spec, (64, 64))


@pytest.mark.parametrize("block_size", [2, 4, (4, 2), 3])
@pytest.mark.parametrize(
    "family, params",
    [
        ("prompt-causal-frame", {}),
        ("prompt-sliding-window", {"window_size": 0}),
        ("prompt-sliding-window", {"window_size": 1, "sink_frames": 1}),
        ("prompt-timestamp-causal", {"timestamps": [2, 0, 1]}),
    ],
)
def test_padding_next_to_a_video_gives_torchs_blocks(family, params, block_size):
    # A block column holding padding and the frames a later window no longer sees: the keys of
    # such a column skip a range, and no query's interval may fall into it.
    ids = torch.tensor([[PAD, PAD, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2],
                        [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, PAD, PAD]])  # fmt: skip
    spec = get_mask(family, frame_ids=ids, **params)
    assert_closed_form_is_torchs(spec, block_size)
    assert torch.equal(spec.to_dense(), reference(ids, family, **params))


def test_one_code_object_serves_every_prompt_of_a_family():
    a = get_mask("prompt-causal-frame", frame_ids=torch.tensor([[TEXT, 0, 0]])).mask_mod
    b = get_mask("prompt-timestamp-causal", frame_ids=torch.tensor([[0, 1, TEXT, TEXT]]),
                 timestamps=[1, 0], q_len=1).mask_mod  # fmt: skip
    c = get_mask("prompt-sliding-window", frame_ids=torch.tensor([[0]]), window_size=1).mask_mod
    d = get_mask("prompt-sliding-window", frame_ids=torch.tensor([[TEXT, 0, 1]]), window_size=3)
    assert a.__code__ is b.__code__  # both "key <= bound": one compiled kernel
    assert c.__code__ is d.mask_mod.__code__ and c.__code__ is not a.__code__


@pytest.mark.parametrize(
    "ids, params, match",
    [
        ([[0, 0, 2, 2]], {}, "frame 2 at position 2 follows frame 0"),
        ([[1, 1]], {}, "the first frame at position 0 is numbered 1"),
        ([[0, -3]], {}, "holds -3 at position 1"),
        ([[0, 0, PAD, 0, 1]], {}, r"padding \(PAD=-2\) at position 2 inside frame 0"),
        ([[TEXT, 0, PAD, 1]], {}, "padding .* at position 2 inside the video at positions 1..3"),
        ([[0, TEXT, PAD, 1]], {"timestamps": [0, 1]}, "position 2 inside the video"),
        ([[0, PAD, 1]], {"window_size": 1}, "position 1 inside the video at positions 0..2"),
        ([[TEXT, PAD, TEXT, 0]], {"window_size": 1}, "before the row's last video token at 3"),
        ([[0, 1, 2]], {"timestamps": [0, 1]}, "timestamps give 2 frame.s. but row 0 has frame 2"),
    ],
)
def test_frame_ids_that_break_the_rules_are_named(ids, params, match):
    family = {"window_size": "prompt-sliding-window", "timestamps": "prompt-timestamp-causal"}
    name = next((family[k] for k in params), "prompt-causal-frame")
    with pytest.raises(ValueError, match=match):
        get_mask(name, frame_ids=torch.tensor(ids), **params)


def test_query_counts_and_offsets_out_of_range_are_named():
    ids = torch.tensor([[0, 0, 0]])
    with pytest.raises(ValueError, match="q_len must be <= the sequence length 3"):
        get_mask("prompt-causal-frame", frame_ids=ids, q_len=4)
    with pytest.raises(ValueError, match="q_start . q_len must be <= the sequence length 3"):
        get_mask("prompt-causal-frame", frame_ids=ids, q_len=2, q_start=2)
    with pytest.raises(ValueError, match="q_start must be >= 0"):
        get_mask("prompt-causal-frame", frame_ids=ids, q_len=1, q_start=-1)
    with pytest.raises(TypeError, match="prompt masks do not combine"):
        get_mask("prompt-causal-frame", frame_ids=torch.tensor([[0]])) & get_mask(
            "token-causal", seq_len=1
        )


def test_padding_after_the_videos_lets_a_sliding_window_generate():
    # generate appends tokens after a right padding: the window takes padding there.
    ids = torch.tensor([[TEXT, 0, 0, 1, 1, TEXT, PAD, PAD, TEXT],
                        [TEXT, TEXT, 0, 0, 1, 1, TEXT, TEXT, TEXT]])  # fmt: skip
    spec = get_mask("prompt-sliding-window", frame_ids=ids, window_size=0, q_len=1)
    assert spec.to_dense()[0, 0].int().tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 1]
    assert torch.equal(spec.to_dense(), reference(ids, spec.name, q_len=1, window_size=0))


# -- prompts of several blocks at the default block size -------------------------------------------
@settings(max_examples=12)
@given(prompt_masks(scale=40), st.sampled_from([128, (128, 64)]), st.data())
def test_multi_block_prompts_at_the_default_block_size_give_torchs_blocks(case, block_size, data):
    # Frames of up to 200 tokens: a few hundred tokens, several 128-blocks, partial and full.
    family, ids, params, q_len = case
    spec = get_mask(family, frame_ids=ids, q_len=q_len, **params)
    assert_closed_form_is_torchs(spec, block_size)
    # The rule itself at a sample of queries (block edges among them): the loop is O(L) a query.
    edges = [i for i in range(0, spec.q_len, 64)] + [spec.q_len - 1]
    picked = data.draw(st.lists(st.integers(0, spec.q_len - 1), max_size=6), label="queries")
    queries = sorted(set(edges + picked))
    want = reference(ids, family, q_len, queries=queries, **params)
    assert torch.equal(spec.to_dense()[:, queries], want)
