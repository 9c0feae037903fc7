"""Training data: moving digits against a brute-force simulation, and video files round-tripped.

The digit references simulate each bounce one frame at a time and paste scikit-learn's images
with plain loops; the video tests write frames whose brightness or geometry encodes the frame
number and read them back through a lossy codec, so pixel checks carry a small tolerance.
"""

from __future__ import annotations

import math
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from flexframe.data import (
    VIDEO_EXTENSIONS,
    MovingDigits,
    VideoClips,
    VideoReadError,
    count_video_frames,
    expand_video_paths,
    make_moving_digits,
    read_video_frames,
    write_video,
)
from flexframe.experiment.camera import synthetic_camera_frames

SKLEARN_IMAGES = torch.from_numpy(load_digits().images).float() / 16.0  # [1797, 8, 8]

# --------------------------------------------------------------------------------------------
# Moving digits: brute-force references
# --------------------------------------------------------------------------------------------


def simulate_bounce(start: float, velocity: float, span: float, num_frames: int) -> list[int]:
    """Top-left coordinate per frame: step, reflect off 0 and ``span``, round; one frame a time."""
    p, v, out = start, velocity, []
    for _ in range(num_frames):
        out.append(int(torch.round(torch.tensor(p, dtype=torch.float64))))
        p += v
        while p < 0 or p > span:  # several reflections only if |v| > span
            if p < 0:
                p, v = -p, -v
            if p > span:
                p, v = 2 * span - p, -v
    return out


def reference_digit(image_index: int, digit_size: int) -> torch.Tensor:
    image = SKLEARN_IMAGES[image_index]
    if digit_size == 8:
        return image
    return F.interpolate(
        image[None, None], size=(digit_size, digit_size), mode="bilinear", align_corners=False
    )[0, 0].clamp(0, 1)


def reference_clip(image_indices, positions, num_frames, image_size, digit_size) -> torch.Tensor:
    """``[T, 1, H, W]``: paste each digit at its (x, y) with a pixel-wise max, in plain loops."""
    clip = torch.zeros(num_frames, 1, image_size, image_size)
    for d, image_index in enumerate(image_indices):
        digit = reference_digit(image_index, digit_size)
        for t in range(num_frames):
            x, y = positions[t][d]
            for r in range(digit_size):
                for c in range(digit_size):
                    clip[t, 0, y + r, x + c] = max(clip[t, 0, y + r, x + c], digit[r, c])
    return clip


digit_configs = st.fixed_dictionaries(
    {
        "num_frames": st.integers(2, 12),
        "digit_size": st.sampled_from([8, 5, 12]),
        "extra": st.integers(1, 14),
        "num_digits": st.integers(1, 3),
        "seed": st.integers(0, 2**64),
        "split": st.sampled_from(["train", "test"]),
        "index": st.integers(0, 9),
    }
)


def dataset_for(cfg: dict, **extra) -> MovingDigits:
    """The 10-clip dataset a ``digit_configs`` example describes."""
    return MovingDigits(
        10,
        num_frames=cfg["num_frames"],
        image_size=cfg["digit_size"] + cfg["extra"],
        num_digits=cfg["num_digits"],
        digit_size=cfg["digit_size"],
        seed=cfg["seed"],
        split=cfg["split"],
        **extra,
    )


@given(digit_configs)
@settings(max_examples=25)
def test_clip_equals_brute_force_simulation_and_render(cfg):
    image_size = cfg["digit_size"] + cfg["extra"]
    ds = dataset_for(cfg)
    motion = ds.motion(cfg["index"])
    span = float(cfg["extra"])
    expected_positions = [[None] * cfg["num_digits"] for _ in range(cfg["num_frames"])]
    for d in range(cfg["num_digits"]):
        for axis in range(2):
            track = simulate_bounce(
                float(motion.start[d, axis]),
                float(motion.velocity[d, axis]),
                span,
                cfg["num_frames"],
            )
            for t, value in enumerate(track):
                old = expected_positions[t][d] or (None, None)
                expected_positions[t][d] = (value, old[1]) if axis == 0 else (old[0], value)
    assert motion.positions.tolist() == [[list(p) for p in row] for row in expected_positions]
    expected = reference_clip(
        motion.image_indices.tolist(),
        expected_positions,
        cfg["num_frames"],
        image_size,
        cfg["digit_size"],
    )
    clip = ds[cfg["index"]]
    assert clip.dtype == torch.float32
    assert torch.allclose(clip, expected, atol=1e-6, rtol=0)


@given(digit_configs)
@settings(max_examples=25)
def test_random_draws_respect_their_ranges(cfg):
    ds = dataset_for(cfg, speed=(0.5, 2.5))
    motion = ds.motion(cfg["index"])
    assert motion.start.min() >= 0 and motion.start.max() <= cfg["extra"]
    speed = motion.velocity.norm(dim=-1)
    assert speed.min() >= 0.5 - 1e-9 and speed.max() <= 2.5 + 1e-9
    assert motion.positions.min() >= 0 and motion.positions.max() <= cfg["extra"]
    lo, hi = (0, 1437) if cfg["split"] == "train" else (1437, 1797)
    assert all(lo <= i < hi for i in motion.image_indices.tolist())


@given(
    seed=st.integers(0, 1000),
    order=st.permutations(list(range(6))),
    num_clips=st.integers(6, 50),
)
@settings(max_examples=15)
def test_a_clip_depends_only_on_seed_and_index(seed, order, num_clips):
    in_order = [MovingDigits(6, num_frames=8, seed=seed)[i] for i in range(6)]
    shuffled_ds = MovingDigits(num_clips, num_frames=8, seed=seed)
    torch.manual_seed(seed + 1)  # the global RNG must not matter
    shuffled = {i: shuffled_ds[i] for i in order}
    for i in range(6):
        assert torch.equal(in_order[i], shuffled[i])


def test_different_seeds_and_indices_give_different_clips():
    a = make_moving_digits(8, num_frames=16, seed=0)
    b = make_moving_digits(8, num_frames=16, seed=1)
    for i in range(8):
        assert not torch.equal(a[i], b[i])
        for j in range(i):
            assert not torch.equal(a[i], a[j])


def test_seeds_that_agree_in_their_low_32_bits_still_differ():
    # torch's CPU generator keeps 32 bits of a seed; packing (seed, index) into one would collide.
    a = MovingDigits(2, num_frames=8, seed=5)
    b = MovingDigits(2, num_frames=8, seed=5 + 2**32)
    assert not torch.equal(a[0], b[0])
    assert not torch.equal(a[1], MovingDigits(2, num_frames=8, seed=6)[0])


def test_make_moving_digits_stacks_the_dataset_items():
    clips = make_moving_digits(5, num_frames=10, image_size=24, num_digits=3, seed=7)
    ds = MovingDigits(5, num_frames=10, image_size=24, num_digits=3, seed=7)
    assert clips.shape == (5, 10, 1, 24, 24)
    for i in range(5):
        assert torch.equal(clips[i], ds[i])
    assert torch.equal(ds[-1], ds[4])


def test_dataloader_workers_give_the_same_clips():
    ds = MovingDigits(6, num_frames=8, seed=3)
    direct = torch.stack([ds[i] for i in range(6)])
    loaded = torch.cat(list(DataLoader(ds, batch_size=2, num_workers=2)))
    assert torch.equal(direct, loaded)


@given(
    num_frames=st.integers(2, 64),
    image_size=st.integers(13, 40),
    num_digits=st.integers(1, 4),
    seed=st.integers(0, 10_000),
)
@settings(max_examples=20)
def test_shapes_and_value_range(num_frames, image_size, num_digits, seed):
    clip = MovingDigits(3, num_frames, image_size, num_digits, 12, seed)[2]
    assert clip.shape == (num_frames, 1, image_size, image_size)
    assert clip.dtype == torch.float32
    assert clip.min() >= 0 and clip.max() <= 1
    assert clip.max() > 0.5  # digits are drawn, not a blank canvas


@pytest.mark.parametrize("index", range(6))
def test_a_lone_digit_stays_whole_in_the_frame_and_moves(index):
    # digit_size=8 draws scikit-learn's image unchanged, so every frame must hold all of it.
    ds = MovingDigits(6, num_frames=48, image_size=32, num_digits=1, digit_size=8, seed=11)
    clip = ds[index][:, 0]
    image = SKLEARN_IMAGES[int(ds.motion(index).image_indices[0])]
    assert torch.allclose(clip.sum(dim=(1, 2)), image.sum().expand(48), atol=1e-4)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    mass = clip.sum(dim=(1, 2))
    com = torch.stack([(clip * xs).sum((1, 2)) / mass, (clip * ys).sum((1, 2)) / mass], -1)
    step = (com[1:] - com[:-1]).abs()
    assert step.max() <= 3.0 + 1.0 + 1e-4  # max speed plus one pixel of rounding
    assert (com.max(0).values - com.min(0).values).max() >= 10  # travels, not jitters
    assert (clip[1:] != clip[:-1]).flatten(1).any(1).float().mean() > 0.5


def test_train_and_test_use_disjoint_digit_images():
    train, test = MovingDigits(200, seed=0), MovingDigits(200, seed=0, split="test")
    train_ids, test_ids = set(train.source_indices.tolist()), set(test.source_indices.tolist())
    assert not train_ids & test_ids
    assert train_ids | test_ids == set(range(1797))
    used_train = {i for k in range(200) for i in train.motion(k).image_indices.tolist()}
    used_test = {i for k in range(200) for i in test.motion(k).image_indices.tolist()}
    assert used_train <= train_ids and used_test <= test_ids
    assert len(used_test) > 100  # the split's images are drawn broadly, not a handful


def test_builds_a_batch_quickly():
    import time

    make_moving_digits(2)  # loads scikit-learn once
    start = time.perf_counter()
    make_moving_digits(64, num_frames=48, image_size=32)
    # The target is well under a second; 5 s leaves room for a loaded CI machine.
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"num_clips": 0}, ValueError, ["num_clips", "0"]),
        ({"num_clips": 2.0}, TypeError, ["num_clips", "2.0"]),
        ({"num_frames": 1}, ValueError, ["num_frames", "1"]),
        ({"image_size": 12}, ValueError, ["image_size=12", "digit_size=12"]),
        ({"image_size": 10, "digit_size": 12}, ValueError, ["image_size=10", "digit_size=12"]),
        ({"digit_size": 0}, ValueError, ["digit_size", "0"]),
        ({"num_digits": 0}, ValueError, ["num_digits", "0"]),
        ({"seed": -1}, ValueError, ["seed", "-1"]),
        ({"split": "tset"}, ValueError, ["split", "'tset'", "Did you mean 'test'"]),
        ({"speed": (3.0, 1.0)}, ValueError, ["speed", "(3.0, 1.0)"]),
        ({"speed": (-1.0, 1.0)}, ValueError, ["speed", "(-1.0, 1.0)"]),
        ({"speed": (1.0, math.inf)}, ValueError, ["speed", "inf"]),
        ({"speed": 2.0}, TypeError, ["speed", "2.0"]),
    ],
)
def test_bad_arguments_are_named_with_their_value(kwargs, error, words):
    args = {"num_clips": 4, **kwargs}
    with pytest.raises(error) as info:
        MovingDigits(**args)
    for word in words:
        assert word in str(info.value)


def test_bad_index_is_named():
    ds = MovingDigits(4)
    with pytest.raises(IndexError, match="index 4 is out of range for 4 clips"):
        ds[4]
    with pytest.raises(IndexError, match="index -5"):
        ds[-5]
    with pytest.raises(TypeError, match="index must be an int, got 1.5"):
        ds[1.5]


# --------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------

NUM_RAMP_FRAMES = 20
TOLERANCE = 4 / 255  # yuv420p and a lossy codec move a flat grey by a level or two


def ramp_value(t: int) -> float:
    return (10 + 12 * t) / 255


def ramp_frames(num_frames: int = NUM_RAMP_FRAMES, height: int = 32, width: int = 32):
    """``[T, 3, H, W]`` flat frames; frame t has brightness ``ramp_value(t)``."""
    values = torch.tensor([ramp_value(t) for t in range(num_frames)])
    return values.view(-1, 1, 1, 1).expand(num_frames, 3, height, width).clone()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    ramp = write_video(root / "ramp.mp4", ramp_frames())
    short = write_video(root / "short.mp4", ramp_frames(3))
    broken = root / "broken.mp4"
    broken.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
                       .to(torch.uint8).numpy().tobytes())  # fmt: skip
    (root / "notes.txt").write_text("not a video")
    return {"root": root, "ramp": ramp, "short": short, "broken": broken}


def brightness(clip: torch.Tensor) -> list[float]:
    return clip.mean(dim=(1, 2, 3)).tolist()


def test_written_video_has_its_frames_and_brightness(videos):
    assert count_video_frames(videos["ramp"]) == NUM_RAMP_FRAMES
    assert count_video_frames(videos["ramp"], exact=True) == NUM_RAMP_FRAMES
    clip = read_video_frames(videos["ramp"], size=None)
    assert clip.shape == (NUM_RAMP_FRAMES, 3, 32, 32) and clip.dtype == torch.float32
    for t, value in enumerate(brightness(clip)):
        assert abs(value - ramp_value(t)) <= TOLERANCE, t
    assert clip.min() >= 0 and clip.max() <= 1


@given(st.lists(st.integers(0, NUM_RAMP_FRAMES - 1), min_size=1, max_size=8))
@settings(max_examples=12)
def test_requested_frames_come_back_in_requested_order(videos, indices):
    clip = read_video_frames(videos["ramp"], indices, size=8, grayscale=True)
    assert clip.shape == (len(indices), 1, 8, 8)
    for got, t in zip(brightness(clip), indices, strict=True):
        assert abs(got - ramp_value(t)) <= TOLERANCE, (indices, t)


def test_indices_as_a_tensor(videos):
    clip = read_video_frames(videos["ramp"], torch.tensor([19, 3]), size=4)
    assert [
        abs(g - ramp_value(t)) <= TOLERANCE for g, t in zip(brightness(clip), [19, 3], strict=True)
    ] == [
        True,
        True,
    ]


@pytest.mark.parametrize(
    ("size", "shape"), [(16, (16, 16)), ((8, 12), (8, 12)), (None, (32, 48)), (64, (64, 64))]
)
def test_resize_shapes(tmp_path, size, shape):
    path = write_video(tmp_path / "wide.mp4", ramp_frames(4, height=32, width=48))
    assert read_video_frames(path, [0, 1], size=size).shape == (2, 3, *shape)
    assert read_video_frames(path, [0], size=size, grayscale=True).shape == (1, 1, *shape)


def test_center_crop_keeps_the_middle(tmp_path):
    # 32x48 frames with white 8-column side bands: a square crop keeps only the black middle.
    sides = torch.zeros(3, 3, 32, 48)
    sides[..., :8] = 1.0
    sides[..., 40:] = 1.0
    path = write_video(tmp_path / "sides.mp4", sides)
    assert read_video_frames(path, [1], size=32).max() <= 0.1
    assert read_video_frames(path, [1], size=16).max() <= 0.1
    native = read_video_frames(path, [1], size=None)
    assert abs(native.mean().item() - 1 / 3) < 0.02  # size=None neither crops nor resizes
    assert native[..., :7].min() >= 0.9 and native[..., 41:].min() >= 0.9
    # A 1:3 target from 32x48 keeps rows 8..23: white top and bottom bands vanish.
    bands = torch.zeros(3, 3, 32, 48)
    bands[:, :, :8] = 1.0
    bands[:, :, 24:] = 1.0
    path = write_video(tmp_path / "bands.mp4", bands)
    assert read_video_frames(path, [1], size=(8, 24)).max() <= 0.1
    assert read_video_frames(path, [1], size=(16, 48)).max() <= 0.1
    # A square crop of the same frames keeps the bands, both of them.
    square = read_video_frames(path, [1], size=32)
    assert square[..., :7, :].min() >= 0.9 and square[..., 25:, :].min() >= 0.9


def test_moving_square_lands_where_it_should_after_resize(tmp_path):
    frames = torch.zeros(10, 1, 32, 32)
    for t in range(10):
        frames[t, :, 8:16, 2 * t : 2 * t + 8] = 1.0
    path = write_video(tmp_path / "square.mp4", frames)
    clip = read_video_frames(path, list(range(10)), size=16, grayscale=True)[:, 0]  # [T, 16, 16]
    cols = torch.arange(16.0)
    rows = torch.arange(16.0)
    for t in range(10):
        mass = clip[t].sum()
        col_center = (clip[t].sum(0) * cols).sum() / mass
        row_center = (clip[t].sum(1) * rows).sum() / mass
        # The square spans columns 2t..2t+7 of 32, i.e. t..t+3.5 of 16: center t + 1.5.
        assert abs(col_center.item() - (t + 1.5)) < 0.3, t
        assert abs(row_center.item() - 5.5) < 0.3, t


@pytest.mark.parametrize(("suffix", "codec"), [(".avi", "mpeg4"), (".webm", None), (".mkv", None)])
def test_other_containers_round_trip(tmp_path, suffix, codec):
    path = write_video(tmp_path / f"ramp{suffix}", ramp_frames(6), codec=codec)
    assert count_video_frames(path) == 6
    for got, t in zip(
        brightness(read_video_frames(path, [5, 0, 2], size=8)), [5, 0, 2], strict=True
    ):
        assert abs(got - ramp_value(t)) <= TOLERANCE


def test_frame_past_the_end_raises_naming_the_file(videos):
    with pytest.raises(IndexError, match=r"frame 20.*ramp\.mp4.*only 20 decodable frames"):
        read_video_frames(videos["ramp"], [0, 20])


def test_truncated_file_reads_its_decodable_prefix(tmp_path):
    full = write_video(tmp_path / "full.ts", ramp_frames(16), codec="mpeg4")
    data = full.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: len(data) // 2])
    count = count_video_frames(cut)
    assert 0 < count < 16
    prefix = read_video_frames(cut, size=None)
    assert prefix.shape[0] == count
    for t, got in enumerate(brightness(prefix)):
        assert abs(got - ramp_value(t)) <= TOLERANCE
    with pytest.raises(IndexError, match="cut.ts"):
        read_video_frames(cut, [count])


def test_broken_file_raises_a_read_error_naming_it(videos):
    for call in (read_video_frames, count_video_frames):
        with pytest.raises(VideoReadError, match="broken.mp4") as info:
            call(videos["broken"])
        assert info.value.path == str(videos["broken"])


def test_missing_file_raises_file_not_found_naming_it(tmp_path):
    missing = tmp_path / "nope.mp4"
    for call in (read_video_frames, count_video_frames):
        with pytest.raises(FileNotFoundError, match="nope.mp4"):
            call(missing)
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        VideoClips([missing], num_frames=4)


def test_bad_read_arguments_are_named(videos):
    with pytest.raises(ValueError, match=r"frame_indices\[1\] must be >= 0, got -1"):
        read_video_frames(videos["ramp"], [0, -1])
    with pytest.raises(ValueError, match="frame_indices must not be empty"):
        read_video_frames(videos["ramp"], [])
    with pytest.raises(ValueError, match="size must be >= 1, got 0"):
        read_video_frames(videos["ramp"], [0], size=0)
    with pytest.raises(
        ValueError, match=r"size must be an int or an \(H, W\) pair, got \(1, 2, 3\)"
    ):
        read_video_frames(videos["ramp"], [0], size=(1, 2, 3))


def test_video_clips_skip_broken_and_short_files_by_name(videos):
    with pytest.warns(UserWarning) as caught:
        clips = VideoClips(videos["root"], num_frames=8, size=16)
    messages = [str(w.message) for w in caught]
    assert any("broken.mp4" in m and "unreadable" in m for m in messages), messages
    assert any("short.mp4" in m and "too short: 3 frames, need at least 8" in m for m in messages)
    assert clips.paths == [videos["ramp"]]  # notes.txt is not a video extension: not probed
    assert clips.frame_counts == [NUM_RAMP_FRAMES]
    assert dict(clips.skipped).keys() == {str(videos["broken"]), str(videos["short"])}
    assert len(clips) == 1
    clip = clips[0]
    assert clip.shape == (8, 3, 16, 16)
    for t, got in enumerate(brightness(clip)):  # the default clip is the first num_frames frames
        assert abs(got - ramp_value(t)) <= TOLERANCE
    assert "1 videos used, 2 skipped" in repr(clips)


def test_video_clips_use_frame_indices_fn(videos):
    clips = VideoClips(
        [videos["ramp"]], num_frames=4, size=8, frame_indices_fn=lambda n: [n - 1, 0, n // 2]
    )
    for got, t in zip(brightness(clips[0]), [19, 0, 10], strict=True):
        assert abs(got - ramp_value(t)) <= TOLERANCE


def test_video_clips_min_frames_admits_short_files(videos):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may be skipped here
        clips = VideoClips(
            [videos["short"], videos["ramp"]],
            num_frames=8,
            min_frames=2,
            frame_indices_fn=lambda n: torch.linspace(0, n - 1, 8).round().long(),
        )
    assert clips.frame_counts == [3, NUM_RAMP_FRAMES]
    assert clips[0].shape == (8, 3, 32, 32)


def test_bad_frame_indices_fn_fails_at_construction_naming_the_file(videos):
    with pytest.raises(IndexError, match=r"frame_indices_fn\(20\) returned frame 20.*ramp\.mp4"):
        VideoClips([videos["ramp"]], num_frames=4, frame_indices_fn=lambda n: [n])
    with pytest.raises(TypeError, match="frame_indices_fn must be callable"):
        VideoClips([videos["ramp"]], num_frames=4, frame_indices_fn=3)


def test_no_usable_file_raises_naming_the_paths_and_reasons(videos):
    with pytest.warns(UserWarning, match="broken.mp4"):
        with pytest.raises(
            ValueError, match=r"no usable video.*paths='.*broken\.\*'.*broken\.mp4: unreadable"
        ):
            VideoClips(str(videos["root"] / "broken.*"), num_frames=4)


def test_glob_matching_nothing_raises_naming_the_pattern(tmp_path):
    pattern = str(tmp_path / "*.webm")
    with pytest.raises(FileNotFoundError, match=r"the pattern '.*\*\.webm' matches no file"):
        VideoClips(pattern, num_frames=4)


def test_expand_video_paths_globs_dirs_and_files(videos):
    root = videos["root"]
    assert expand_video_paths(str(root / "*.mp4")) == [
        root / "broken.mp4",
        root / "ramp.mp4",
        root / "short.mp4",
    ]
    # A folder yields video extensions only; an explicit file is kept whatever it is called;
    # duplicates are dropped, first occurrence kept.
    assert expand_video_paths([root / "notes.txt", root, str(root / "ramp.mp4")]) == [
        root / "notes.txt",
        root / "broken.mp4",
        root / "ramp.mp4",
        root / "short.mp4",
    ]
    assert ".mp4" in VIDEO_EXTENSIONS and ".webm" in VIDEO_EXTENSIONS
    with pytest.raises(ValueError, match="at least one"):
        expand_video_paths([])


def test_empty_directory_raises_naming_it(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"directory '.*' holds no file with a video extension"):
        expand_video_paths(tmp_path)


@pytest.mark.parametrize(
    ("frames", "error", "message"),
    [
        (torch.zeros(2, 3, 15, 16), ValueError, "must be even.*H=15, W=16"),
        (torch.full((2, 3, 8, 8), 1.5), ValueError, r"\[0, 1\].*1\.5"),
        (torch.full((2, 3, 8, 8), math.nan), ValueError, r"\[0, 1\].*nan"),
        (torch.zeros(2, 2, 8, 8), ValueError, r"C in \(1, 3\).*\[2, 2, 8, 8\]"),
        (torch.zeros(3, 8, 8), ValueError, r"\[T, C, H, W\].*\[3, 8, 8\]"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), TypeError, "float.*uint8"),
        (torch.zeros(0, 3, 8, 8), ValueError, "must not be empty"),
    ],
)
def test_write_video_rejects_bad_frames(tmp_path, frames, error, message):
    with pytest.raises(error, match=message):
        write_video(tmp_path / "x.mp4", frames)


def test_write_video_needs_an_existing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        write_video(tmp_path / "no_such_dir" / "x.mp4", torch.zeros(1, 3, 8, 8))


def test_missing_pyav_names_the_extra(videos, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "flexframe\[video\]"'):
        read_video_frames(videos["ramp"], [0])


# --------------------------------------------------------------------------------------------
# Camera-like clips: what the ablation's tests and README use where no camera clip is at hand
# --------------------------------------------------------------------------------------------


@given(st.integers(1, 12), st.sampled_from([8, 16, 32]), st.sampled_from([1, 3]),
       st.integers(0, 2**31 - 1))  # fmt: skip
@settings(max_examples=6)
def test_camera_frames_have_their_shape_range_and_repeat_for_a_seed(t, size, channels, seed):
    frames = synthetic_camera_frames(t, size=size, seed=seed, channels=channels)
    assert frames.shape == (t, channels, size, size) and frames.dtype == torch.float32
    assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0
    assert torch.equal(frames, synthetic_camera_frames(t, size=size, seed=seed, channels=channels))
    assert not torch.equal(frames, synthetic_camera_frames(t, size=size, seed=seed + 1,
                                                           channels=channels))  # fmt: skip


def test_camera_frames_move_smoothly_as_a_camera_does():
    """Without sensor noise, every frame differs from the last (the camera moves) by far less
    than frames eight apart differ; the noise adds its variance to every frame pair."""
    still = synthetic_camera_frames(24, size=32, seed=3, noise=0.0)
    step = (still[1:] - still[:-1]).pow(2).mean(dim=(1, 2, 3))
    far = (still[8:] - still[:-8]).pow(2).mean(dim=(1, 2, 3))
    assert bool((step > 0).all()) and float(step.mean()) < 0.25 * float(far.mean())
    noisy = synthetic_camera_frames(24, size=32, seed=3, noise=0.05)
    extra = (noisy[1:] - noisy[:-1]).pow(2).mean() - step.mean()
    assert float(extra) == pytest.approx(2 * 0.05**2, rel=0.25)  # two frames' noise, clamped
    faster = synthetic_camera_frames(24, size=32, seed=3, noise=0.0, speed=3.0)
    assert float((faster[1:] - faster[:-1]).pow(2).mean()) > 2 * float(step.mean())


def test_camera_frames_round_trip_through_a_video_file(tmp_path):
    frames = synthetic_camera_frames(10, size=32, seed=0)
    path = write_video(tmp_path / "camera.mp4", frames)
    back = read_video_frames(path, size=32)
    assert back.shape == frames.shape
    assert float((back - frames).abs().mean()) < 0.03  # a lossy codec, near the original


@pytest.mark.parametrize(
    "kwargs, error, needle",
    [
        ({"num_frames": 0}, ValueError, "num_frames must be >= 1"),
        ({"num_frames": 4, "size": 1}, ValueError, "size must be >= 2"),
        ({"num_frames": 4, "channels": 2}, ValueError, "channels must be 1 or 3"),
        ({"num_frames": 2.5}, TypeError, "num_frames must be an int"),
    ],
)
def test_camera_frames_refuse_bad_arguments_by_name(kwargs, error, needle):
    with pytest.raises(error, match=needle):
        synthetic_camera_frames(**kwargs)
