"""The example world model's rollout: the cache gives what recomputation gives, and the picture.

Tiny models (untrained, or trained a few steps) keep this file to a few seconds.
"""

from __future__ import annotations

import argparse

import matplotlib.image
import numpy as np
import pytest
import torch

from flexframe.data import make_moving_digits
from flexframe.experiment.rollout import (
    LABEL_MARGIN,
    STRIP_BACKGROUND,
    STRIP_GAP,
    RolloutConfig,
    WorldModel,
    add_rollout_command,
    rollout,
    save_rollout_strip,
    strip_image,
    train_world_model,
)

TINY = dict(image_size=16, patch_size=4, digit_size=8, dim=32, depth=2, num_heads=2)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest.py)


@pytest.fixture(scope="module")
def trained():
    config = RolloutConfig(
        **TINY, steps=4, train_clips=16, batch_size=4, train_seconds=None, train_frames=6
    )
    model, result = train_world_model(config)
    assert result.steps == 4 and len(result.losses) == 4
    return model


@pytest.mark.parametrize(
    "mask",
    [
        {"mask": "sliding-window", "window_size": 1},  # a ring of 2 frames, wrapped many times
        {"mask": "sliding-window", "window_size": 2, "sink_frames": 1},
        {"mask": "causal-frame"},
    ],
)
def test_rollout_with_the_cache_equals_rollout_by_full_recomputation(trained, mask):
    model = WorldModel(RolloutConfig(**TINY, **mask))
    model.load_state_dict(trained.state_dict())
    model.eval()
    prefix = make_moving_digits(2, num_frames=3, image_size=16, digit_size=8, split="test")
    cached = rollout(model, prefix, 9)
    recomputed = rollout(model, prefix, 9, use_cache=False)
    assert cached.shape == (2, 9, 1, 16, 16)
    torch.testing.assert_close(cached, recomputed, rtol=1e-5, atol=1e-5)
    assert torch.equal(rollout(model, prefix, 9), cached)  # deterministic
    # The model really runs: its frames are not the last prefix frame copied.
    assert (cached[:, 0] - prefix[:, -1]).abs().max() > 1e-3


def test_generated_frames_stay_in_the_pixel_range_and_depend_only_on_the_past(trained):
    prefix = make_moving_digits(1, num_frames=4, image_size=16, digit_size=8, split="test")
    frames = rollout(trained, prefix, 5)
    assert frames.min() >= 0 and frames.max() <= 1
    # A longer rollout starts with the same frames: nothing later changes an earlier frame.
    torch.testing.assert_close(rollout(trained, prefix, 8)[:, :5], frames, rtol=0, atol=0)


def test_the_strip_places_each_frame_at_its_documented_pixels():
    gen = torch.Generator().manual_seed(0)
    true, generated = torch.rand(5, 1, 3, 4, generator=gen), torch.rand(2, 1, 3, 4, generator=gen)
    scale = 2
    strip = strip_image(true, generated, scale=scale)
    h, w = 3 * scale, 4 * scale
    assert strip.shape == (STRIP_GAP + 2 * (h + STRIP_GAP), STRIP_GAP + 5 * (w + STRIP_GAP))
    for k in range(5):
        x = STRIP_GAP + k * (w + STRIP_GAP)
        top = strip[STRIP_GAP : STRIP_GAP + h, x : x + w]
        bottom = strip[2 * STRIP_GAP + h : 2 * STRIP_GAP + 2 * h, x : x + w]
        # nearest-neighbour upscaling: pixel (i, j) of the frame fills a scale x scale square
        for i in range(3):
            for j in range(4):
                assert np.all(
                    top[i * scale : (i + 1) * scale, j * scale : (j + 1) * scale]
                    == float(true[k, 0, i, j])
                )
        if k < 3:
            assert np.all(bottom == STRIP_BACKGROUND)  # under the prefix: no generated frame
        else:
            assert np.allclose(bottom[::scale, ::scale], generated[k - 3, 0].numpy())


def test_the_picture_holds_the_strip_pixel_for_pixel(tmp_path):
    gen = torch.Generator().manual_seed(1)
    true, generated = torch.rand(4, 1, 8, 8, generator=gen), torch.rand(2, 1, 8, 8, generator=gen)
    path = save_rollout_strip(tmp_path / "strip.png", true, generated, scale=3)
    strip = strip_image(true, generated, scale=3)
    image = matplotlib.image.imread(path)  # [H, W, 4] floats in [0, 1]
    assert image.shape[:2] == (strip.shape[0], strip.shape[1] + LABEL_MARGIN)
    picture = image[:, LABEL_MARGIN:, :3]
    assert np.abs(picture - strip[:, :, None]).max() <= 1 / 255 + 1e-6  # 8-bit rounding only
    assert image[:, :LABEL_MARGIN, :3].min() < 0.5  # the labels are drawn in the margin


def test_the_rollout_command_trains_rolls_out_and_draws(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="flexframe")
    add_rollout_command(parser.add_subparsers(dest="command"))
    out = tmp_path / "r.png"
    args = parser.parse_args(
        ["rollout", "--steps", "2", "--train-clips", "8", "--batch-size", "2", "--dim", "32",
         "--depth", "1", "--rollout-frames", "3", "--prefix-frames", "2", "--out", str(out),
         "--quiet", "--save", str(tmp_path / "m.pt")]
    )  # fmt: skip
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n| ") >= 3 and "largest difference" in printed  # a row a frame
    assert matplotlib.image.imread(out).shape[1] > LABEL_MARGIN
    # A saved model rolls out again without training.
    again = parser.parse_args(["rollout", "--load", str(tmp_path / "m.pt"), "--out", str(out)])
    assert again.handler(again) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["rollout", "--steps", "-1"], "steps must be >= 0, got -1"),
        (["rollout", "--out", "/no/such/folder/r.png"], "folder '/no/such/folder' does not exist"),
        (["rollout", "--load", "missing.pt"], "no model file 'missing.pt'"),
    ],
)
def test_bad_rollout_input_is_one_line_and_status_2(argv, message, capsys):
    parser = argparse.ArgumentParser(prog="flexframe")
    add_rollout_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    assert args.handler(args) == 2
    assert message in capsys.readouterr().err
