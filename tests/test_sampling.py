"""Tests for flexframe.sampling: fast/slow frame indices, gathering, merging and presets.

The references below are written from the issue's rule, independently of the module, with
exact rational arithmetic (``fractions.Fraction``) so they also check the module's integer maths.
"""

from __future__ import annotations

import dataclasses
import doctest
import math
import re
from fractions import Fraction

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import flexframe.sampling as sampling_module
from flexframe import VideoFrameSampler
from flexframe.sampling import (
    FAST_SLOW_PRESETS,
    MERGE_STRATEGIES,
    FastSlowPreset,
    fast_slow_indices,
    get_fast_slow_preset,
    merge_fast_slow_frames,
    merge_fast_slow_indices,
    merge_order,
    preset_for_num_frames,
    sample_fast_slow_frames,
)

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)
COUNT_ARGS = ("fast_stride", "slow_stride", "num_fast", "num_slow")

# --------------------------------------------------------------------------------------------
# Independent references and helpers
# --------------------------------------------------------------------------------------------


def reference_fast_indices(num_frames: int, fast_stride: int, num_fast: int) -> list[int]:
    t = num_frames
    out = []
    for i in range(num_fast):
        back = num_fast - 1 - i
        if fast_stride * (num_fast - 1) <= t - 1:
            out.append(t - 1 - fast_stride * back)
        else:
            out.append(t - 1 - math.floor(Fraction(back * t, num_fast)))
    return out


def reference_slow_indices(num_frames: int, slow_stride: int, num_slow: int) -> list[int]:
    window = min(num_frames, slow_stride * num_slow)
    return [
        (num_frames - window) + math.floor(Fraction(i * window, num_slow)) for i in range(num_slow)
    ]


def reference_merge(num_fast: int, num_slow: int, strategy: str) -> list[tuple[str, int]]:
    """``(stream, position in stream)`` for each merged frame."""
    if strategy == "concat":
        return [("slow", j) for j in range(num_slow)] + [("fast", j) for j in range(num_fast)]
    out = []
    for k in range(max(num_fast, num_slow)):
        if k < num_slow:
            out.append(("slow", k))
        if k < num_fast:
            out.append(("fast", k))
    return out


def frame_numbered_clip(batch: int, num_frames: int, dtype=torch.float32, device="cpu"):
    """A ``[B, T, 2, 3, 2]`` clip whose every pixel of frame ``(b, t)`` equals ``t + 1000 * b``."""
    t = torch.arange(num_frames, dtype=torch.float64).view(1, num_frames, 1, 1, 1)
    b = torch.arange(batch, dtype=torch.float64).view(batch, 1, 1, 1, 1)
    return (t + 1000 * b).expand(batch, num_frames, 2, 3, 2).to(dtype=dtype, device=device)


def frame_values(frames: torch.Tensor) -> list[list[int]]:
    """Decode ``[B, N, ...]`` frames whose pixels are constant per frame into ``[B][N]`` ints."""
    flat = frames.reshape(frames.shape[0], frames.shape[1], -1).to(torch.float64)
    assert torch.equal(flat.amin(dim=2), flat.amax(dim=2)), "a frame's pixels were mixed"
    return [[int(v) for v in row] for row in flat[:, :, 0].tolist()]


# Pixel codes for merge tests: stream (slow=1, fast=2) * 1000 + position, plus 10000 * batch.
STREAM_CODE = {"slow": 1, "fast": 2}


def stream_coded_frames(stream: str, batch: int, count: int, dtype=torch.float32):
    pos = torch.arange(count, dtype=torch.float64).view(1, count, 1, 1, 1)
    b = torch.arange(batch, dtype=torch.float64).view(batch, 1, 1, 1, 1)
    values = STREAM_CODE[stream] * 1000 + pos + 10000 * b
    return values.expand(batch, count, 1, 2, 2).to(dtype)


def decode_stream(code: int) -> tuple[int, str, int]:
    batch, rest = divmod(code, 10000)
    stream = {v: k for k, v in STREAM_CODE.items()}[rest // 1000]
    return batch, stream, rest % 1000


@st.composite
def sampling_configs(draw) -> dict[str, int]:
    """A valid ``fast_slow_indices`` config; T spans both regimes of each rule about equally."""
    fast_stride = draw(st.integers(1, 8))
    slow_stride = draw(st.integers(1, 8))
    num_fast = draw(st.integers(1, 24))
    num_slow = draw(st.integers(1, 24))
    exact_from = max(fast_stride * (num_fast - 1) + 1, slow_stride * num_slow)
    num_frames = draw(st.integers(1, 2 * exact_from))
    return {
        "num_frames": num_frames,
        "fast_stride": fast_stride,
        "slow_stride": slow_stride,
        "num_fast": num_fast,
        "num_slow": num_slow,
    }


def without_num_frames(config: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in config.items() if k != "num_frames"}


merge_counts = st.integers(1, 20)
merge_strategies = st.sampled_from(["concat", "interleave"])


# --------------------------------------------------------------------------------------------
# fast_slow_indices
# --------------------------------------------------------------------------------------------


def test_seed_example_holds_exactly():
    fast_idx, slow_idx = fast_slow_indices(16, fast_stride=1, slow_stride=4, num_fast=8, num_slow=8)
    assert fast_idx.tolist() == [8, 9, 10, 11, 12, 13, 14, 15]
    assert slow_idx.tolist() == [0, 2, 4, 6, 8, 10, 12, 14]


def test_defaults_are_the_seed_configuration():
    fast_idx, slow_idx = fast_slow_indices(16)
    assert fast_idx.tolist() == [8, 9, 10, 11, 12, 13, 14, 15]
    assert slow_idx.tolist() == [0, 2, 4, 6, 8, 10, 12, 14]


@PROPERTY_SETTINGS
@given(sampling_configs())
def test_indices_follow_the_rule_exactly(config):
    fast_idx, slow_idx = fast_slow_indices(**config)
    t = config["num_frames"]
    assert fast_idx.tolist() == reference_fast_indices(t, config["fast_stride"], config["num_fast"])
    assert slow_idx.tolist() == reference_slow_indices(t, config["slow_stride"], config["num_slow"])


@PROPERTY_SETTINGS
@given(sampling_configs())
def test_indices_are_int64_with_the_requested_lengths(config):
    fast_idx, slow_idx = fast_slow_indices(**config)
    assert fast_idx.dtype == torch.int64 and slow_idx.dtype == torch.int64
    assert fast_idx.shape == (config["num_fast"],)
    assert slow_idx.shape == (config["num_slow"],)


@PROPERTY_SETTINGS
@given(sampling_configs())
def test_indices_lie_inside_the_clip_and_never_decrease(config):
    t = config["num_frames"]
    for idx in fast_slow_indices(**config):
        assert 0 <= int(idx.min()) and int(idx.max()) < t
        assert bool((idx[1:] >= idx[:-1]).all())


@PROPERTY_SETTINGS
@given(sampling_configs())
def test_fast_frames_end_at_the_current_frame(config):
    fast_idx, _ = fast_slow_indices(**config)
    assert int(fast_idx[-1]) == config["num_frames"] - 1


@PROPERTY_SETTINGS
@given(sampling_configs())
def test_fast_frames_are_exactly_fast_stride_apart_when_they_fit(config):
    assume(config["fast_stride"] * (config["num_fast"] - 1) <= config["num_frames"] - 1)
    fast_idx, _ = fast_slow_indices(**config)
    assert set(torch.diff(fast_idx).tolist()) <= {config["fast_stride"]}


@PROPERTY_SETTINGS
@given(sampling_configs())
def test_slow_frames_are_exactly_slow_stride_apart_and_end_the_clip_when_the_window_fits(config):
    assume(config["slow_stride"] * config["num_slow"] <= config["num_frames"])
    _, slow_idx = fast_slow_indices(**config)
    assert set(torch.diff(slow_idx).tolist()) <= {config["slow_stride"]}
    # The window's last slot is one stride before the end, so the window ends at the clip's end.
    assert int(slow_idx[-1]) == config["num_frames"] - config["slow_stride"]


@PROPERTY_SETTINGS
@given(sampling_configs())
def test_fast_frames_spread_over_the_whole_clip_when_they_do_not_fit(config):
    t, num_fast = config["num_frames"], config["num_fast"]
    assume(config["fast_stride"] * (num_fast - 1) > t - 1)
    fast_idx = fast_slow_indices(**config)[0].tolist()
    if t >= num_fast:
        assert len(set(fast_idx)) == num_fast, "a clip with enough frames must not repeat any"
    else:
        assert set(fast_idx) == set(range(t)), "a clip shorter than num_fast must be covered whole"


@PROPERTY_SETTINGS
@given(sampling_configs())
def test_slow_frames_cover_a_clip_shorter_than_the_window_from_its_first_frame(config):
    t, num_slow = config["num_frames"], config["num_slow"]
    assume(config["slow_stride"] * num_slow >= t)
    slow_idx = fast_slow_indices(**config)[1].tolist()
    assert slow_idx[0] == 0
    if t <= num_slow:
        assert set(slow_idx) == set(range(t))


def test_fast_rule_switches_exactly_at_the_fit_boundary():
    # fast_stride * (num_fast - 1) = 6: T = 7 fits exactly, T = 6 spreads (worked by hand).
    assert fast_slow_indices(7, fast_stride=2, num_fast=4)[0].tolist() == [0, 2, 4, 6]
    assert fast_slow_indices(6, fast_stride=2, num_fast=4)[0].tolist() == [1, 2, 4, 5]


def test_a_single_frame_clip_repeats_its_only_frame():
    fast_idx, slow_idx = fast_slow_indices(1, fast_stride=3, slow_stride=5, num_fast=4, num_slow=2)
    assert fast_idx.tolist() == [0, 0, 0, 0]
    assert slow_idx.tolist() == [0, 0]


@pytest.mark.parametrize(
    "config",
    [
        # i * W and (num_fast - 1 - i) * T overflow int64 here; float64 floor would be off too.
        dict(num_frames=2**62 + 3, fast_stride=2**61, slow_stride=2**60, num_fast=7, num_slow=7),
        dict(num_frames=2**62 - 1, fast_stride=1, slow_stride=3, num_fast=5, num_slow=2**20 + 1),
        dict(
            num_frames=10**18 + 7, fast_stride=10**18, slow_stride=10**17, num_fast=9, num_slow=11
        ),
    ],
)
def test_indices_are_exact_for_huge_clips(config):
    fast_idx, slow_idx = fast_slow_indices(**config)
    t = config["num_frames"]
    assert fast_idx.tolist() == reference_fast_indices(t, config["fast_stride"], config["num_fast"])
    expected_slow = reference_slow_indices(t, config["slow_stride"], config["num_slow"])
    assert slow_idx.tolist() == expected_slow


def test_indices_are_built_on_the_requested_device():
    fast_idx, slow_idx = fast_slow_indices(16, device="meta")
    assert fast_idx.device.type == "meta" and slow_idx.device.type == "meta"


# --------------------------------------------------------------------------------------------
# sample_fast_slow_frames
# --------------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(sampling_configs(), st.integers(1, 3))
def test_sampled_frames_are_the_clip_frames_at_the_returned_indices(config, batch):
    t = config["num_frames"]
    video = frame_numbered_clip(batch, t)
    fast, slow, fast_idx, slow_idx = sample_fast_slow_frames(
        video, **without_num_frames(config), return_indices=True
    )
    assert fast.shape == (batch, config["num_fast"], *video.shape[2:])
    assert slow.shape == (batch, config["num_slow"], *video.shape[2:])
    assert fast_idx.tolist() == reference_fast_indices(t, config["fast_stride"], config["num_fast"])
    assert slow_idx.tolist() == reference_slow_indices(t, config["slow_stride"], config["num_slow"])
    for frames, idx in ((fast, fast_idx), (slow, slow_idx)):
        expected = [[i + 1000 * b for i in idx.tolist()] for b in range(batch)]
        assert frame_values(frames) == expected


def test_sampling_without_indices_returns_the_same_frames():
    video = frame_numbered_clip(2, 40)
    fast, slow = sample_fast_slow_frames(video, 2, 3, 5, 6)
    fast_i, slow_i, _, _ = sample_fast_slow_frames(video, 2, 3, 5, 6, return_indices=True)
    assert torch.equal(fast, fast_i) and torch.equal(slow, slow_i)


def test_sampling_a_non_contiguous_clip_gathers_the_right_frames():
    # Time-major storage, viewed as [B, T, ...]: dim 1 is not the innermost-but-one stride.
    video = frame_numbered_clip(2, 20).transpose(0, 1).contiguous().transpose(0, 1)
    assert not video.is_contiguous()
    fast, slow, fast_idx, slow_idx = sample_fast_slow_frames(video, return_indices=True)
    assert frame_values(fast) == [[i + 1000 * b for i in fast_idx.tolist()] for b in range(2)]
    assert frame_values(slow) == [[i + 1000 * b for i in slow_idx.tolist()] for b in range(2)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.uint8, torch.float32])
def test_sampling_keeps_dtype(dtype):
    video = frame_numbered_clip(1, 50, dtype=dtype)  # uint8 holds frame numbers < 256 exactly
    fast, slow, fast_idx, slow_idx = sample_fast_slow_frames(video, return_indices=True)
    assert fast.dtype == dtype and slow.dtype == dtype
    assert frame_values(fast) == [fast_idx.tolist()]
    assert frame_values(slow) == [slow_idx.tolist()]


def test_sampling_keeps_device_and_builds_indices_on_it():
    video = torch.empty(2, 30, 3, 4, 4, dtype=torch.float16, device="meta")
    outputs = sample_fast_slow_frames(video, return_indices=True)
    assert [o.device.type for o in outputs] == ["meta"] * 4
    assert outputs[0].dtype == torch.float16 and outputs[0].shape == (2, 8, 3, 4, 4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sampling_on_cuda_keeps_device_and_values():
    video = frame_numbered_clip(2, 70, dtype=torch.float16, device="cuda")
    fast, slow, fast_idx, slow_idx = sample_fast_slow_frames(video, return_indices=True)
    assert fast.is_cuda and slow.is_cuda and fast_idx.is_cuda and slow_idx.is_cuda
    assert frame_values(fast.cpu()) == [[i + 1000 * b for i in fast_idx.tolist()] for b in (0, 1)]
    merged = merge_fast_slow_frames(fast, slow, "interleave")
    stamps = merge_fast_slow_indices(fast_idx, slow_idx, "interleave")
    assert merged.is_cuda and stamps.is_cuda
    assert frame_values(merged.cpu()) == [[i + 1000 * b for i in stamps.tolist()] for b in (0, 1)]


# --------------------------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(merge_counts, merge_counts, merge_strategies)
def test_merge_order_matches_the_documented_layout(num_fast, num_slow, strategy):
    is_fast, pos = merge_order(num_fast, num_slow, strategy)
    assert is_fast.dtype == torch.bool and pos.dtype == torch.int64
    got = [
        ("fast" if f else "slow", p) for f, p in zip(is_fast.tolist(), pos.tolist(), strict=True)
    ]
    assert got == reference_merge(num_fast, num_slow, strategy)


@PROPERTY_SETTINGS
@given(merge_counts, merge_counts, merge_strategies, st.integers(1, 3))
def test_merge_keeps_every_frame_exactly_once_in_the_documented_order(
    num_fast, num_slow, strategy, batch
):
    fast = stream_coded_frames("fast", batch, num_fast)
    slow = stream_coded_frames("slow", batch, num_slow)
    merged = merge_fast_slow_frames(fast, slow, strategy)
    assert merged.shape == (batch, num_fast + num_slow, 1, 2, 2)
    expected_order = reference_merge(num_fast, num_slow, strategy)
    for b, row in enumerate(frame_values(merged)):
        decoded = [decode_stream(code) for code in row]
        assert all(frame_batch == b for frame_batch, _, _ in decoded), "frames crossed batches"
        assert [(s, p) for _, s, p in decoded] == expected_order
    # Exactly-once, stated without the reference: every (stream, position) pair, no repeats.
    expected_set = {("fast", j) for j in range(num_fast)} | {("slow", j) for j in range(num_slow)}
    first_row = [decode_stream(code)[1:] for code in frame_values(merged)[0]]
    assert len(first_row) == len(set(first_row)) and set(first_row) == expected_set


@PROPERTY_SETTINGS
@given(merge_counts, merge_counts, merge_strategies)
def test_merge_order_describes_which_stream_each_merged_frame_came_from(
    num_fast, num_slow, strategy
):
    merged = merge_fast_slow_frames(
        stream_coded_frames("fast", 1, num_fast), stream_coded_frames("slow", 1, num_slow), strategy
    )
    is_fast, pos = merge_order(num_fast, num_slow, strategy)
    decoded = [decode_stream(code) for code in frame_values(merged)[0]]
    assert [s == "fast" for _, s, _ in decoded] == is_fast.tolist()
    assert [p for _, _, p in decoded] == pos.tolist()


def test_concat_puts_all_slow_frames_before_all_fast_frames():
    fast = stream_coded_frames("fast", 1, 3)
    slow = stream_coded_frames("slow", 1, 2)
    assert frame_values(merge_fast_slow_frames(fast, slow)) == [[1000, 1001, 2000, 2001, 2002]]


@pytest.mark.parametrize(
    ("num_fast", "num_slow", "expected"),
    [
        (3, 3, [1000, 2000, 1001, 2001, 1002, 2002]),
        (4, 2, [1000, 2000, 1001, 2001, 2002, 2003]),  # more fast: the rest of fast follows
        (2, 4, [1000, 2000, 1001, 2001, 1002, 1003]),  # more slow: the rest of slow follows
        (1, 1, [1000, 2000]),
    ],
)
def test_interleave_alternates_starting_with_slow_and_appends_the_longer_rest(
    num_fast, num_slow, expected
):
    fast = stream_coded_frames("fast", 1, num_fast)
    slow = stream_coded_frames("slow", 1, num_slow)
    assert frame_values(merge_fast_slow_frames(fast, slow, "interleave")) == [expected]


@PROPERTY_SETTINGS
@given(sampling_configs(), merge_strategies)
def test_merged_timestamps_are_the_frame_numbers_of_the_merged_frames(config, strategy):
    video = frame_numbered_clip(2, config["num_frames"])
    sampler = VideoFrameSampler()
    fast, slow, fast_idx, slow_idx = sampler.sample_fast_slow_frames(
        video, **without_num_frames(config), return_indices=True
    )
    merged = sampler.merge_fast_slow_frames(fast, slow, strategy)
    stamps = sampler.merge_fast_slow_timestamps(fast_idx, slow_idx, strategy)
    assert stamps.dtype == torch.int64 and stamps.shape == (merged.shape[1],)
    assert frame_values(merged) == [[i + 1000 * b for i in stamps.tolist()] for b in range(2)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.uint8])
@pytest.mark.parametrize("strategy", MERGE_STRATEGIES)
def test_merge_keeps_dtype(dtype, strategy):
    fast = stream_coded_frames("fast", 1, 3).sub(1900).to(dtype)  # 100..102 fits in uint8
    slow = stream_coded_frames("slow", 1, 2).sub(1000).to(dtype)  # 0..1
    merged = merge_fast_slow_frames(fast, slow, strategy)
    assert merged.dtype == dtype
    expected = {"concat": [0, 1, 100, 101, 102], "interleave": [0, 100, 1, 101, 102]}[strategy]
    assert frame_values(merged) == [expected]


def test_merge_keeps_device():
    fast = torch.empty(2, 3, 1, 2, 2, dtype=torch.float16, device="meta")
    slow = torch.empty(2, 5, 1, 2, 2, dtype=torch.float16, device="meta")
    merged = merge_fast_slow_frames(fast, slow, "interleave")
    assert merged.device.type == "meta" and merged.dtype == torch.float16
    assert merged.shape == (2, 8, 1, 2, 2)
    stamps = merge_fast_slow_indices(torch.arange(3, device="meta"), torch.arange(5, device="meta"))
    assert stamps.device.type == "meta" and stamps.shape == (8,)


def test_merge_passes_gradients_to_every_input_frame():
    fast = torch.randn(2, 3, 1, 2, 2, requires_grad=True)
    slow = torch.randn(2, 2, 1, 2, 2, requires_grad=True)
    weights = torch.arange(1.0, 6.0).view(1, 5, 1, 1, 1)
    (merge_fast_slow_frames(fast, slow, "interleave") * weights).sum().backward()
    # Interleave order s0 f0 s1 f1 f2 gets weights 1..5.
    assert slow.grad[0, :, 0, 0, 0].tolist() == [1.0, 3.0]
    assert fast.grad[0, :, 0, 0, 0].tolist() == [2.0, 4.0, 5.0]


def test_merge_timestamps_accept_float_seconds():
    stamps = merge_fast_slow_indices(
        torch.tensor([1.5, 2.0]), torch.tensor([0.0, 1.0, 1.25]), "interleave"
    )
    assert stamps.tolist() == [0.0, 1.5, 1.0, 2.0, 1.25]


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------


def test_presets_match_the_tuning_table():
    table = {
        "short": (False, None, None, None, None),
        "medium": (True, 8, 8, 1, 4),
        "long": (True, 16, 8, 2, 8),
    }
    assert set(FAST_SLOW_PRESETS) == set(table)
    for name, (use, num_fast, num_slow, fast_stride, slow_stride) in table.items():
        preset = get_fast_slow_preset(name)
        assert preset is FAST_SLOW_PRESETS[name] and preset.name == name
        got = (preset.use_fast_slow_frames, preset.num_fast, preset.num_slow)
        assert got + (preset.fast_stride, preset.slow_stride) == (
            use,
            num_fast,
            num_slow,
            fast_stride,
            slow_stride,
        )


@pytest.mark.parametrize(
    ("num_frames", "name"),
    [(1, "short"), (29, "short"), (30, "medium"), (45, "medium"), (60, "medium"), (61, "long")],
)
def test_preset_for_num_frames_picks_by_clip_length(num_frames, name):
    assert preset_for_num_frames(num_frames).name == name


def test_short_preset_has_no_sampler_kwargs_so_it_cannot_fall_back_to_defaults():
    assert get_fast_slow_preset("short").sampler_kwargs() is None


@pytest.mark.parametrize("name", ["medium", "long"])
def test_preset_sampler_kwargs_drive_the_sampler(name):
    preset = get_fast_slow_preset(name)
    kwargs = preset.sampler_kwargs()
    assert kwargs == {
        "fast_stride": preset.fast_stride,
        "slow_stride": preset.slow_stride,
        "num_fast": preset.num_fast,
        "num_slow": preset.num_slow,
    }
    fast_idx, slow_idx = fast_slow_indices(200, **kwargs)
    assert fast_idx.tolist() == reference_fast_indices(200, preset.fast_stride, preset.num_fast)
    assert slow_idx.tolist() == reference_slow_indices(200, preset.slow_stride, preset.num_slow)


def test_presets_are_read_only():
    with pytest.raises(TypeError):
        FAST_SLOW_PRESETS["huge"] = FAST_SLOW_PRESETS["long"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        FAST_SLOW_PRESETS["medium"].num_fast = 4


def test_preset_that_uses_all_frames_refuses_sampler_settings():
    with pytest.raises(ValueError, match=r"preset 'x' uses all frames.*'num_fast': 3"):
        FastSlowPreset("x", use_fast_slow_frames=False, num_fast=3)


def test_preset_that_splits_frames_requires_every_setting():
    with pytest.raises(TypeError, match=r"FastSlowPreset\.num_slow must be an int, got None"):
        FastSlowPreset("x", use_fast_slow_frames=True, num_fast=3, fast_stride=1, slow_stride=2)


def test_unknown_preset_name_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"'short', 'medium', 'long', got 'meduim'.*'medium'\?"):
        get_fast_slow_preset("meduim")


def test_preset_for_zero_frames_is_refused():
    with pytest.raises(ValueError, match=r"num_frames must be >= 1, got 0"):
        preset_for_num_frames(0)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 16, 4, 4), (1, 2, 16, 3, 4, 4), (16,)])
def test_video_that_is_not_5d_is_refused_naming_its_shape(shape):
    pattern = (
        rf"video_frames must be 5-D \[B, T, C, H, W\], got shape {re.escape(str(list(shape)))}"
    )
    with pytest.raises(ValueError, match=pattern):
        sample_fast_slow_frames(torch.zeros(shape))


def test_video_that_is_not_a_tensor_is_refused():
    with pytest.raises(TypeError, match=r"video_frames must be a torch.Tensor.*list"):
        sample_fast_slow_frames([[1.0]])


def test_video_with_no_frames_is_refused():
    with pytest.raises(ValueError, match=r"video_frames must have at least one frame.*\[2, 0, 3"):
        sample_fast_slow_frames(torch.zeros(2, 0, 3, 4, 4))


@pytest.mark.parametrize("num_frames", [0, -5])
def test_num_frames_below_one_is_refused(num_frames):
    with pytest.raises(ValueError, match=rf"num_frames must be >= 1, got {num_frames}"):
        fast_slow_indices(num_frames)


@pytest.mark.parametrize("name", COUNT_ARGS)
@pytest.mark.parametrize("value", [0, -1])
def test_stride_or_count_below_one_is_refused(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be >= 1, got {value}"):
        fast_slow_indices(16, **{name: value})
    with pytest.raises(ValueError, match=rf"{name} must be >= 1, got {value}"):
        sample_fast_slow_frames(torch.zeros(1, 16, 1, 1, 1), **{name: value})


@pytest.mark.parametrize("name", ("num_frames", *COUNT_ARGS))
@pytest.mark.parametrize("value", [2.5, 8.0, True, "8", None])
def test_stride_or_count_that_is_not_an_int_is_refused(name, value):
    kwargs = {"num_frames": 16, name: value}
    with pytest.raises(TypeError, match=rf"{name} must be an int, got {re.escape(repr(value))}"):
        fast_slow_indices(**kwargs)


def test_return_indices_that_is_not_a_bool_is_refused():
    with pytest.raises(TypeError, match=r"return_indices must be a bool, got 'yes'"):
        sample_fast_slow_frames(torch.zeros(1, 16, 1, 1, 1), return_indices="yes")


@pytest.mark.parametrize(
    ("strategy", "suggestion"),
    [("interleaved", "'interleave'"), ("Concat", "'concat'"), ("stack", None), (None, None)],
)
def test_unknown_merge_strategy_is_refused_listing_the_valid_ones(strategy, suggestion):
    pattern = (
        rf"merge_strategy must be one of 'concat', 'interleave', got {re.escape(repr(strategy))}"
    )
    if suggestion:
        pattern += rf"\. Did you mean {suggestion}\?"
    fast = torch.zeros(1, 2, 1, 1, 1)
    calls = [
        lambda: merge_order(2, 2, strategy),
        lambda: merge_fast_slow_frames(fast, fast, strategy),
        lambda: merge_fast_slow_indices(torch.arange(2), torch.arange(2), strategy),
        lambda: VideoFrameSampler().merge_fast_slow_timestamps(
            torch.arange(2), torch.arange(2), strategy
        ),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=pattern) as info:
            call()
        if suggestion is None:
            assert "Did you mean" not in str(info.value)


@pytest.mark.parametrize(
    "slow_shape",
    [(3, 4, 3, 8, 8), (2, 4, 1, 8, 8), (2, 4, 3, 7, 8), (2, 4, 3, 8, 9)],
    ids=["batch", "channels", "height", "width"],
)
def test_fast_and_slow_that_disagree_on_b_c_h_w_are_refused_naming_both_shapes(slow_shape):
    fast = torch.zeros(2, 5, 3, 8, 8)
    pattern = (
        r"must agree on B, C, H and W, got fast shape \[2, 5, 3, 8, 8\] and slow shape "
        + re.escape(str(list(slow_shape)))
    )
    with pytest.raises(ValueError, match=pattern):
        merge_fast_slow_frames(fast, torch.zeros(slow_shape))


@pytest.mark.parametrize("which", ["fast", "slow"])
def test_fast_or_slow_that_is_not_5d_is_refused(which):
    good = torch.zeros(1, 2, 3, 4, 4)
    bad = torch.zeros(2, 3, 4, 4)
    args = (bad, good) if which == "fast" else (good, bad)
    layout = r"\[B, F, C, H, W\]" if which == "fast" else r"\[B, S, C, H, W\]"
    with pytest.raises(
        ValueError, match=rf"{which} must be 5-D {layout}, got shape \[2, 3, 4, 4\]"
    ):
        merge_fast_slow_frames(*args)


@pytest.mark.parametrize("which", ["fast", "slow"])
def test_fast_or_slow_with_no_frames_is_refused(which):
    good = torch.zeros(1, 2, 3, 4, 4)
    empty = torch.zeros(1, 0, 3, 4, 4)
    args = (empty, good) if which == "fast" else (good, empty)
    with pytest.raises(
        ValueError, match=rf"{which} must have at least one frame.*\[1, 0, 3, 4, 4\]"
    ):
        merge_fast_slow_frames(*args)


def test_fast_and_slow_with_different_dtypes_are_refused_instead_of_promoted():
    fast = torch.zeros(1, 2, 3, 4, 4, dtype=torch.float16)
    slow = torch.zeros(1, 2, 3, 4, 4, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"fast.dtype=torch.float16 and slow.dtype=torch.float32"):
        merge_fast_slow_frames(fast, slow)


def test_fast_and_slow_on_different_devices_are_refused():
    fast = torch.zeros(1, 2, 3, 4, 4)
    slow = torch.zeros(1, 2, 3, 4, 4, device="meta")
    with pytest.raises(ValueError, match=r"fast.device=cpu and slow.device=meta"):
        merge_fast_slow_frames(fast, slow)


@pytest.mark.parametrize(
    "bad", [torch.zeros(2, 3, dtype=torch.int64), torch.tensor(4), torch.arange(0)]
)
def test_merge_timestamps_that_are_not_non_empty_1d_are_refused(bad):
    shape = re.escape(str(list(bad.shape)))
    pattern = rf"slow_idx must be a non-empty 1-D tensor \[S\], got shape {shape}"
    with pytest.raises(ValueError, match=pattern):
        merge_fast_slow_indices(torch.arange(3), bad)


def test_merge_timestamps_with_different_dtypes_are_refused():
    with pytest.raises(
        ValueError, match=r"fast_idx.dtype=torch.int32 and slow_idx.dtype=torch.int64"
    ):
        merge_fast_slow_indices(torch.arange(3, dtype=torch.int32), torch.arange(2))


@pytest.mark.parametrize(("name", "value"), [("num_fast", 0), ("num_slow", -2)])
def test_merge_order_with_a_count_below_one_is_refused(name, value):
    kwargs = {"num_fast": 3, "num_slow": 3, name: value}
    with pytest.raises(ValueError, match=rf"{name} must be >= 1, got {value}"):
        merge_order(**kwargs)


# --------------------------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------------------------


def test_docstring_examples_show_real_output():
    result = doctest.testmod(sampling_module, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0
