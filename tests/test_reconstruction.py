"""The next-frame reconstruction loss: leak-free by perturbation, right targets, frozen tower."""

from __future__ import annotations

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from flexframe import (
    AutoregressiveReconstructionConfig,
    create_autoregressive_reconstruction_module,
)

HIDDEN, PATCH, IMG = 32, 4, 8  # 8x8 frames, 4x4 patches: 4 tokens a frame, 48 features (3 ch)
GRID = [(frame, fast) for frame in (False, True) for fast in (False, True)]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest.py)


def make_module(frame_mask: bool, fast_slow: bool, **extra):
    config: dict = {
        "embedding_dim": 3 * PATCH * PATCH,
        "patch_size": PATCH,
        "predictor_dim": 32,
        "predictor_depth": 2,
        "loss_weight": 1.0,
        "use_frame_causal_mask": frame_mask,
        "use_fast_slow_frames": fast_slow,
        "num_fast": 4,
        "num_slow": 4,
        "fast_stride": 1,
        "slow_stride": 4,
        "attention_backend": "sdpa",
        **extra,
    }
    torch.manual_seed(0)
    return create_autoregressive_reconstruction_module("pixels", HIDDEN, config)


def numbered_clip(batch: int, frames: int) -> torch.Tensor:
    """``[B, T, 3, 8, 8]``: frame t of clip b is filled with (t + 1) / 100 + b / 1000."""
    t = torch.arange(frames, dtype=torch.float32)[None, :, None, None, None]
    b = torch.arange(batch, dtype=torch.float32)[:, None, None, None, None]
    return ((t + 1) / 100 + b / 1000).expand(batch, frames, 3, IMG, IMG).clone()


# -- leakage ------------------------------------------------------------------------------------
# Fast/slow settings whose layouts are out of time order ([slow | fast] with the seed's 8/8 and
# stride 4; interleaved), and a short clip whose streams repeat frames.
LAYOUTS = [
    {"num_fast": 4, "num_slow": 4},
    {"num_fast": 8, "num_slow": 8},
    {"num_fast": 8, "num_slow": 8, "merge_strategy": "interleave"},
    {"num_fast": 6, "num_slow": 3, "slow_stride": 2, "merge_strategy": "interleave"},
]


@settings(max_examples=40)
@given(
    config=st.sampled_from(GRID),
    settings=st.sampled_from(LAYOUTS),
    num_frames=st.sampled_from([5, 16]),
    data=st.data(),
)
def test_later_frames_and_hidden_states_do_not_change_earlier_predictions(
    config, settings, num_frames, data
):
    check_no_leak(make_module(*config, **settings).eval(), num_frames, data)


@given(data=st.data())
@settings(max_examples=4)
def test_no_leak_on_the_flex_backend_for_a_slow_fast_layout(data):
    # The fused kernel with the closed-form BlockMask, one compiled shape: [slow | fast] frames
    # 10, 12, 14, 13, 14, 15 of 4 tokens, 24 in all (not a multiple of 16, where torch's CPU
    # kernel went wrong below head dim 32), one head of 32.
    module = make_module(
        True, True, num_fast=3, num_slow=3, slow_stride=2, attention_backend="flex",
        predictor_heads=1,
    )  # fmt: skip
    assert module.frame_layout(16).frame_indices.tolist() == [10, 12, 14, 13, 14, 15]
    check_no_leak(module.eval(), 16, data)


def check_no_leak(module, num_frames: int, data) -> None:
    layout = module.frame_layout(num_frames)
    times = layout.frame_indices  # [F] original frame of each layout frame
    t = data.draw(st.integers(0, num_frames - 2), label="t")
    video = torch.rand(2, num_frames, 3, IMG, IMG)
    hidden = torch.randn(2, len(layout) * 4, HIDDEN)
    later_tokens = (times > t).repeat_interleave(4)

    video2, hidden2 = video.clone(), hidden.clone()
    video2[:, t + 1 :] = torch.rand_like(video2[:, t + 1 :])
    hidden2[:, later_tokens] = torch.randn_like(hidden2[:, later_tokens]) * 3
    with torch.no_grad():
        _, out = module(hidden, video, return_outputs=True)
        _, out2 = module(hidden2, video2, return_outputs=True)
    now = times <= t
    torch.testing.assert_close(out.predictions[:, now], out2.predictions[:, now], rtol=0, atol=1e-5)
    if (times > t).any():
        assert not torch.allclose(out.predictions[:, ~now], out2.predictions[:, ~now])


def toy_llm(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``[B, L, D]`` -> ``[B, L, D]``: each token averages the tokens it may attend to (all
    earlier positions when ``mask`` is None, as a token-causal LLM's attention does)."""
    n = tokens.shape[1]
    if mask is None:
        mask = torch.ones(n, n, dtype=torch.bool).tril()
    weights = mask.float() / mask.sum(-1, keepdim=True)
    return weights @ tokens


@pytest.mark.parametrize("merge", ["concat", "interleave"])
def test_an_llm_with_llm_mask_hands_over_no_future_and_a_token_causal_one_does(merge):
    # The seed's 8/8 layout is out of time order; the hidden states come from an "LLM" over the
    # layout. Changing frame 10 must not move predictions at frames <= 9 (fast frame 9's target
    # is frame 10) when the LLM attends with module.llm_mask; a token-causal LLM leaks it.
    module = make_module(True, True, num_fast=8, num_slow=8, merge_strategy=merge).eval()
    layout = module.frame_layout(16)
    assert not layout.in_time_order
    proj = torch.randn(3 * IMG * IMG, HIDDEN)
    video = torch.rand(1, 16, 3, IMG, IMG)
    video2 = video.clone()
    video2[:, 10] = torch.rand_like(video2[:, 10])
    llm_mask = module.llm_mask(16, tokens_per_frame=4).to_dense()
    early = layout.frame_indices <= 9
    moved = {}
    for name, mask in (("llm_mask", llm_mask), ("token-causal", None)):
        outs = []
        for clip in (video, video2):
            frames = clip[0, layout.frame_indices].reshape(len(layout), -1) @ proj  # [F, D]
            tokens = frames.repeat_interleave(4, dim=0)[None]  # [1, F * 4, D]
            with torch.no_grad():
                _, out = module(toy_llm(tokens, mask), clip, return_outputs=True)
            outs.append(out.predictions[:, early])
        moved[name] = (outs[0] - outs[1]).abs().max().item()
    assert moved["llm_mask"] < 1e-5, moved
    assert moved["token-causal"] > 1e-3, moved


def test_llm_mask_is_the_token_causal_mask_on_a_layout_in_time_order():
    module = make_module(True, False)
    want = torch.ones(5 * 4, 5 * 4, dtype=torch.bool).tril()
    assert torch.equal(module.llm_mask(5, tokens_per_frame=4).to_dense(), want)
    with pytest.raises(ValueError, match="tokens_per_frame"):
        module.llm_mask(5, tokens_per_frame=0)


def test_the_seed_designs_fast_slow_mask_fails_the_same_check_and_warns():
    # The perturbation test above can fail: with the leaky fast-slow mask it does.
    with pytest.warns(UserWarning, match="leaks the future"):
        module = make_module(True, True, mask="fast-slow").eval()
        layout = module.frame_layout(16)  # [slow 0 4 8 12 | fast 12 13 14 15]
        hidden = torch.randn(1, len(layout) * 4, HIDDEN)
        hidden2 = hidden.clone()
        hidden2[:, 3 * 4 : 4 * 4] += 1.0  # the slow frame shown at t=12
        video = torch.rand(1, 16, 3, IMG, IMG)
        with torch.no_grad():
            _, out = module(hidden, video, return_outputs=True)
            _, out2 = module(hidden2, video, return_outputs=True)
    slow_t8 = 2  # layout position of the slow frame shown at t=8: it sees t=12
    assert not torch.allclose(out.predictions[:, slow_t8], out2.predictions[:, slow_t8])


# -- targets and layout ----------------------------------------------------------------------
def reference_indices(num_frames: int, stride: int, count: int, slow: bool) -> list[int]:
    """The issue's index rules, written out: fast frames end at T - 1 (or spread over the clip);
    slow frames sample a window of min(T, stride * count) frames ending at the clip's end."""
    t = num_frames
    if slow:
        w = min(t, stride * count)
        return [(t - w) + (i * w) // count for i in range(count)]
    if stride * (count - 1) <= t - 1:
        return [t - 1 - stride * (count - 1 - i) for i in range(count)]
    return [t - 1 - ((count - 1 - i) * t) // count for i in range(count)]


def reference_targets(num_frames: int, fast_slow: bool) -> list[int | None]:
    """Next later frame of the same stream for each layout frame (slow first), from the written
    rule; ``None`` where no later frame follows in the stream."""
    if not fast_slow:
        return [t + 1 if t + 1 < num_frames else None for t in range(num_frames)]
    out = []
    for stride, slow in ((4, True), (1, False)):  # slow, then fast (4 each, as in make_module)
        stream = reference_indices(num_frames, stride, 4, slow)
        for frame in stream:
            later = [f for f in stream if f > frame]
            out.append(min(later) if later else None)
    return out


@pytest.mark.parametrize("frame_mask, fast_slow", GRID)
@pytest.mark.parametrize("num_frames", [2, 3, 5, 16, 20])
def test_each_frame_targets_the_next_frame_of_its_own_stream(frame_mask, fast_slow, num_frames):
    module = make_module(frame_mask, fast_slow)
    video = numbered_clip(2, num_frames)
    hidden = torch.randn(2, len(module.frame_layout(num_frames)) * 4, HIDDEN)
    _, out = module(hidden, video, return_outputs=True)
    expected = reference_targets(num_frames, fast_slow)
    assert out.target_mask[0].tolist() == [e is not None for e in expected]
    for i, frame in enumerate(expected):
        if frame is None:
            continue
        # Pixels tower: features are 2 * pixel - 1, and pixel encodes the frame number.
        want = 2 * ((frame + 1) / 100 + torch.tensor([0.0, 0.001])) - 1
        got = out.targets[:, i].mean(dim=(1, 2))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert out.predictions.shape == out.targets.shape == (2, len(expected), 4, 48)
    assert out.timestamps.tolist() == module.frame_layout(num_frames).frame_indices.tolist()


def test_slow_fast_boundary_is_not_a_next_frame():
    module = make_module(True, True)
    layout = module.frame_layout(16)
    assert layout.frame_indices.tolist() == [0, 4, 8, 12, 12, 13, 14, 15]
    assert layout.next_index.tolist()[3] == -1  # last slow frame has no target (not fast 12)


@pytest.mark.parametrize(
    "frame_mask, fast_slow, name, within",
    [
        (False, False, "token-causal", None),
        (True, False, "causal-frame", None),
        (False, True, "timestamp-causal", "causal"),
        (True, True, "timestamp-causal", "full"),
    ],
)
def test_the_ablation_grid_picks_its_masks(frame_mask, fast_slow, name, within):
    spec = make_module(frame_mask, fast_slow).mask_spec(num_frames=16, tokens_per_frame=4)
    assert spec.name == name
    if within:
        assert spec.params["within_frame"] == within


# -- training behaviour ---------------------------------------------------------------------------
class Conv1152Tower(nn.Module):
    """A stand-in vision tower: 14x14 patches to 1152 features, ``[N, P, 1152]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1152, 14, 14)
        self.norm = nn.BatchNorm2d(1152)  # running stats would drift if the tower ran in train

    def forward(self, x):
        return self.norm(self.conv(x)).flatten(2).transpose(1, 2)


def test_the_seed_design_snippet_runs_as_written():
    tower = Conv1152Tower()
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    module = create_autoregressive_reconstruction_module(
        vision_tower=tower,
        hidden_size=4096,
        config={
            "embedding_dim": 1152,
            "loss_weight": 0.1,
            "use_frame_causal_mask": True,
            "use_fast_slow_frames": True,
            "fast_stride": 1,
            "slow_stride": 4,
            "num_fast": 8,
            "num_slow": 8,
        },
    )
    video_frames = torch.rand(2, 16, 3, 28, 28)
    llm_hidden_states = torch.randn(2, 16 * 4, 4096, requires_grad=True)
    loss = module.compute_autoregressive_loss(
        hidden_states=llm_hidden_states, video_frames=video_frames
    )
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(torch.equal(before[k], v) for k, v in tower.state_dict().items())
    assert all(p.requires_grad for p in tower.parameters())  # the caller's tower untouched


def test_frozen_tower_is_bit_identical_after_an_optimizer_step():
    module = create_autoregressive_reconstruction_module(
        Conv1152Tower(),
        64,
        {"embedding_dim": 1152, "predictor_dim": 32, "attention_backend": "sdpa"},
    ).train()
    tower_before = {k: v.clone() for k, v in module.tower.state_dict().items()}
    predictor_before = module.predictor.layers[0].mlp.fc.weight.clone()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2, weight_decay=0.1)
    hidden = torch.randn(2, 4 * 4, 64, requires_grad=True)
    loss = module(hidden, torch.rand(2, 4, 3, 28, 28))
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in module.tower.parameters())
    for key, value in module.tower.state_dict().items():
        assert torch.equal(value, tower_before[key]), key
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0
    assert not torch.equal(module.predictor.layers[0].mlp.fc.weight, predictor_before)


def moving_square_clips(num: int, frames: int = 16) -> torch.Tensor:
    """``[N, T, 3, 8, 8]``: a 2x2 bright square moving one pixel a frame, wrapping around."""
    clips = torch.zeros(num, frames, 3, IMG, IMG)
    gen = torch.Generator().manual_seed(0)
    for n in range(num):
        x0, y0 = torch.randint(0, IMG, (2,), generator=gen).tolist()
        for t in range(frames):
            x, y = (x0 + t) % IMG, (y0 + t // 2) % IMG
            for dx in (0, 1):
                for dy in (0, 1):
                    clips[n, t, :, (y + dy) % IMG, (x + dx) % IMG] = 1.0
    return clips


@pytest.mark.parametrize("frame_mask, fast_slow", GRID)
def test_loss_falls_when_the_predictor_learns_a_motion(frame_mask, fast_slow):
    module = make_module(frame_mask, fast_slow).train()
    torch.manual_seed(1)
    encoder = nn.Linear(3 * PATCH * PATCH, HIDDEN)  # stands in for the LLM, one frame at a time
    params = list(module.parameters()) + list(encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    clips = moving_square_clips(8)
    layout = module.frame_layout(16)
    losses = []
    for _ in range(200):
        frames = clips[:, layout.frame_indices]  # [B, F, 3, 8, 8] in layout order
        patches = module.tower(frames.flatten(0, 1)).view(8, -1, 48)  # [B, F*P, 48]
        loss = module(encoder(patches), clips)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)


def test_works_under_cpu_autocast_in_bfloat16():
    module = make_module(True, True)
    hidden = torch.randn(2, 8 * 4, HIDDEN)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module(hidden, torch.rand(2, 16, 3, IMG, IMG))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# -- config forms ---------------------------------------------------------------------------------
def test_yaml_config_gives_the_same_module_as_the_dict(tmp_path):
    config = {"embedding_dim": 48, "patch_size": 4, "predictor_dim": 32, "preset": "medium"}
    path = tmp_path / "reconstruction.yaml"
    path.write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    from_dict = create_autoregressive_reconstruction_module("pixels", 32, config)
    torch.manual_seed(0)
    from_yaml = create_autoregressive_reconstruction_module("pixels", 32, str(path))
    torch.manual_seed(0)
    from_object = create_autoregressive_reconstruction_module(
        "pixels", 32, AutoregressiveReconstructionConfig(**config)
    )
    assert from_dict.config == from_yaml.config == from_object.config
    for other in (from_yaml, from_object):
        for (k, a), (_, b) in zip(
            from_dict.state_dict().items(), other.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), k


def test_presets_fill_the_sampler_settings():
    cfg = AutoregressiveReconstructionConfig(preset="long")
    assert (
        cfg.use_fast_slow_frames,
        cfg.num_fast,
        cfg.num_slow,
        cfg.fast_stride,
        cfg.slow_stride,
    ) == (True, 16, 8, 2, 8)
    assert AutoregressiveReconstructionConfig(preset="short").use_fast_slow_frames is False


def test_visual_token_mask_selects_the_video_tokens():
    module = make_module(True, False).eval()
    video = torch.rand(2, 5, 3, IMG, IMG)
    video_tokens = torch.randn(2, 20, HIDDEN)
    hidden = torch.randn(2, 27, HIDDEN)  # 3 text tokens, 20 video tokens, 4 text tokens
    hidden[:, 3:23] = video_tokens
    mask = torch.zeros(2, 27, dtype=torch.bool)
    mask[:, 3:23] = True
    with torch.no_grad():
        torch.testing.assert_close(
            module(hidden, video, visual_token_mask=mask), module(video_tokens, video)
        )


def test_targets_are_pooled_when_the_llm_has_fewer_tokens_per_frame():
    module = make_module(True, False)
    video = torch.rand(1, 3, 3, IMG, IMG)
    hidden = torch.randn(1, 3 * 1, HIDDEN)  # 1 token a frame
    _, out = module(hidden, video, return_outputs=True, tokens_per_frame=1)
    # 4 patches of frame 1 averaged: brute force from the pixels.
    patches = (video[0, 1] * 2 - 1).reshape(3, 2, 4, 2, 4).permute(1, 3, 2, 4, 0).reshape(4, 48)
    torch.testing.assert_close(out.targets[0, 0, 0], patches.mean(0))


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "config, error, match",
    [
        (
            {"embeding_dim": 4},
            ValueError,
            "unknown setting 'embeding_dim' in the config. Did you mean 'embedding_dim'",
        ),
        ({"num_fast": 0}, ValueError, "num_fast must be >= 1, got 0"),
        (
            {"loss_type": "l2"},
            ValueError,
            "loss_type must be one of 'mse', 'smooth_l1', 'cosine', got 'l2'",
        ),
        (
            {"mask": "casual-frame"},
            ValueError,
            "mask must be one of .* got 'casual-frame'. Did you mean 'causal-frame'",
        ),
        (
            {"preset": "medium", "num_fast": 16},
            ValueError,
            "preset 'medium' sets num_fast=8 but the config also sets num_fast=16",
        ),
        (
            {"preset": "huge"},
            ValueError,
            "preset must be one of 'short', 'medium', 'long', got 'huge'",
        ),
        (
            {"use_fast_slow_frames": "yes"},
            TypeError,
            "use_fast_slow_frames must be true or false, got 'yes'",
        ),
        ({"mask": "sliding-window"}, ValueError, "mask='sliding-window' needs window_size"),
        ({"loss_weight": -1}, ValueError, "loss_weight must be >= 0.0, got -1"),
        ({"loss_weight": float("nan")}, ValueError, "loss_weight must be a finite number, got nan"),
        ({"mlp_ratio": "four"}, TypeError, "mlp_ratio must be a number, got 'four'"),
        (
            {"predictor_dim": 32, "predictor_heads": 3},
            ValueError,
            "got predictor_dim=32, predictor_heads=3",
        ),
        (
            {"predictor_dim": 24, "predictor_heads": 4},  # head size 6: not a multiple of 4
            ValueError,
            "multiple of 4 .* got predictor_dim=24, predictor_heads=4",
        ),
        (
            {"predictor_heads": 4, "predictor_kv_heads": 3},
            ValueError,
            "predictor_kv_heads must divide predictor_heads, got predictor_kv_heads=3",
        ),
        (
            {"preset": "short", "num_fast": 4},
            ValueError,
            "preset 'short' uses all frames .* num_fast=4 would be ignored",
        ),
    ],
)
def test_bad_config_values_are_named(config, error, match):
    with pytest.raises(error, match=match):
        create_autoregressive_reconstruction_module("pixels", 32, config)


def test_missing_yaml_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file .*nope.yaml' does not exist"):
        create_autoregressive_reconstruction_module("pixels", 32, str(tmp_path / "nope.yaml"))


def test_bad_inputs_are_named():
    module = make_module(True, False)
    video = torch.rand(2, 5, 3, IMG, IMG)
    with pytest.raises(
        ValueError,
        match=r"hidden_states hold 21 video tokens but video_frames hold 5 frames .* of 4 tower "
        r"patches each, 20 tokens",
    ):
        module(torch.randn(2, 21, HIDDEN), video)
    with pytest.raises(
        ValueError, match=r"video_frames must be \[B, T, C, H, W\], got shape \(5, 3, 8, 8\)"
    ):
        module(torch.randn(2, 20, HIDDEN), video[0])
    with pytest.raises(
        ValueError, match="hidden_states have width 16 but the module was built with hidden_size=32"
    ):
        module(torch.randn(2, 20, 16), video)
    with pytest.raises(
        ValueError, match="the LLM has 3 tokens per frame but the vision tower gives 4 patches"
    ):
        module(torch.randn(2, 15, HIDDEN), video, tokens_per_frame=3)
    with pytest.raises(ValueError, match="a clip of 1 frame"):
        module(torch.randn(2, 4, HIDDEN), video[:, :1])
    wrong_width = create_autoregressive_reconstruction_module(
        "pixels", 32, {"embedding_dim": 100, "patch_size": 4, "predictor_dim": 32}
    )
    with pytest.raises(ValueError, match="features are 48 wide but embedding_dim is 100"):
        wrong_width(torch.randn(2, 20, HIDDEN), video)
    with pytest.raises(
        ValueError, match="visual_token_mask selects a different number of tokens in each row"
    ):
        mask = torch.ones(2, 20, dtype=torch.bool)
        mask[1, 0] = False
        module(torch.randn(2, 20, HIDDEN), video, visual_token_mask=mask)
    with pytest.raises(
        ValueError, match="vision_tower must be an nn.Module or 'pixels', got 'siglip'"
    ):
        create_autoregressive_reconstruction_module("siglip", 32, {})
    with pytest.raises(ValueError, match="hidden_states hold 0 video tokens"):
        module(torch.randn(2, 0, HIDDEN), video)
    with pytest.raises(ValueError, match="hidden_states hold 0 video tokens"):
        module(torch.randn(2, 20, HIDDEN), video,
               visual_token_mask=torch.zeros(2, 20, dtype=torch.bool))  # fmt: skip
    with pytest.raises(
        ValueError,
        match=r"visual_token_mask must be a bool tensor of shape \(2, 20\), got torch.int64 of "
        r"shape \(2, 20\)",
    ):
        module(torch.randn(2, 20, HIDDEN), video, visual_token_mask=torch.ones(2, 20).long())
    with pytest.raises(
        ValueError, match=r"visual_token_mask must be .* got torch.bool of shape \(2, 19\)"
    ):
        module(torch.randn(2, 20, HIDDEN), video,
               visual_token_mask=torch.ones(2, 19, dtype=torch.bool))  # fmt: skip


class _Output:
    def __init__(self, last_hidden_state: torch.Tensor) -> None:
        self.last_hidden_state = last_hidden_state


class _PatchTower(torch.nn.Module):
    """[N, 3, 8, 8] -> [N, 4, 48]: 4x4 patches, optionally wrapped like a Hugging Face output."""

    def __init__(self, wrap: bool = False, flat: bool = False) -> None:
        super().__init__()
        self.wrap, self.flat = wrap, flat
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor):
        n = x.shape[0]
        patches = x.reshape(n, 3, 2, 4, 2, 4).permute(0, 2, 4, 1, 3, 5).reshape(n, 4, 48)
        out = patches * self.scale
        if self.flat:
            return out.reshape(n, -1)
        return _Output(out) if self.wrap else out


def test_a_tower_output_with_last_hidden_state_gives_the_same_targets():
    video = torch.rand(2, 5, 3, IMG, IMG)
    hidden = torch.randn(2, 20, HIDDEN)
    outs = []
    for wrap in (False, True):
        torch.manual_seed(0)
        module = create_autoregressive_reconstruction_module(
            _PatchTower(wrap=wrap), HIDDEN, {"embedding_dim": 48, "predictor_dim": 32}
        )
        outs.append(module(hidden, video, return_outputs=True)[1].targets)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    # Frame t+1's patches times the tower's scale (2), independently of the module's code path.
    want = video[:, 1:].reshape(2, 4, 3, 2, 4, 2, 4).permute(0, 1, 3, 5, 2, 4, 6)
    torch.testing.assert_close(outs[0][:, :4], 2 * want.reshape(2, 4, 4, 48))


def test_a_tower_returning_the_wrong_shape_is_named():
    module = create_autoregressive_reconstruction_module(
        _PatchTower(flat=True), HIDDEN, {"embedding_dim": 48, "predictor_dim": 32}
    )
    with pytest.raises(
        ValueError, match=r"the vision tower must return \[N, P, E\] features, got \(10, 192\)"
    ):
        module(torch.randn(2, 20, HIDDEN), torch.rand(2, 5, 3, IMG, IMG))


# -- what a new user trips over (issue 17) -------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.int16, torch.bool])
def test_integer_video_is_refused_with_what_to_do(dtype):
    module = make_module(True, False)
    video = (torch.rand(2, 5, 3, IMG, IMG) * 255).to(dtype)
    with pytest.raises(
        TypeError, match=rf"video_frames are {dtype}: give float frames in \[0, 1\]"
    ):
        module(torch.randn(2, 20, HIDDEN), video)


@pytest.mark.parametrize("low, high", [(0.0, 255.0), (-1.0, 1.0), (0.0, 1.5), (-0.01, 0.5)])
def test_float_frames_outside_0_1_warn(low, high):
    module = make_module(True, False)
    video = torch.rand(2, 5, 3, IMG, IMG) * (high - low) + low
    video[0, 0, 0, 0, :2] = torch.tensor([low, high])  # the range reaches both ends
    with pytest.warns(UserWarning, match=r"outside \[0, 1\]"):
        module(torch.randn(2, 20, HIDDEN), video)


def test_frames_in_0_1_give_no_warning():
    module = make_module(True, False)
    video = torch.rand(2, 5, 3, IMG, IMG)
    video[0, 0, 0, 0, :2] = torch.tensor([0.0, 1.0])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module(torch.randn(2, 20, HIDDEN), video)


@pytest.mark.parametrize("hidden_dtype, module_dtype", [
    (torch.bfloat16, torch.float32), (torch.float16, torch.float32), (torch.float32, torch.bfloat16),
])  # fmt: skip
def test_hidden_states_of_another_dtype_say_what_to_do(hidden_dtype, module_dtype):
    module = make_module(True, False).to(module_dtype)
    hidden = torch.randn(2, 20, HIDDEN).to(hidden_dtype)
    with pytest.raises(
        TypeError,
        match=rf"hidden_states are {hidden_dtype} but the module's weights are {module_dtype}: cast the module .* or run under torch.autocast",
    ):
        module(hidden, torch.rand(2, 5, 3, IMG, IMG))
    with pytest.raises(TypeError, match="cast the module"):
        module.compute_loss_from_features(hidden, torch.randn(2, 5, 4, 48))


def test_a_clip_of_the_wrong_length_is_refused_when_the_tokens_per_frame_are_given():
    # 16 raw frames against hidden states of 8 frames of 4 tokens: a division would read 2 tokens
    # a frame and split every frame in two; with tokens_per_frame the counts are compared.
    module = make_module(True, False)
    hidden = torch.randn(1, 8 * 4, HIDDEN)
    with pytest.raises(
        ValueError,
        match="video_frames hold 16 frames .* but the hidden states hold 8 frames of 4 tokens",
    ):
        module(hidden, torch.rand(1, 16, 3, IMG, IMG), tokens_per_frame=4)
    loss = module(hidden, torch.rand(1, 8, 3, IMG, IMG), tokens_per_frame=4)
    assert torch.isfinite(loss)


def test_tokens_per_frame_are_never_inferred_by_a_division():
    # The trap: hidden states of 8 frames x 8 tokens (Qwen2-VL's temporal patches) and
    # the 16 raw frames. 64 / 16 would read 16 frames of 4 tokens and split each frame in two.
    module = create_autoregressive_reconstruction_module(
        "pixels", HIDDEN, {"predictor_dim": 32, "patch_size": 4, "embedding_dim": 48}
    )
    hidden = torch.randn(1, 8 * 8, HIDDEN)
    video = torch.rand(1, 16, 3, 16, 16)  # 16 patches a frame
    with pytest.raises(
        ValueError,
        match=r"hidden_states hold 64 video tokens but video_frames hold 16 frames .* of 16 "
        r"tower patches each, 256 tokens: without tokens_per_frame",
    ):
        module(hidden, video)
    with pytest.raises(
        ValueError, match="video_frames hold 16 frames .* hidden states hold 8 frames of 8 tokens"
    ):
        module(hidden, video, tokens_per_frame=8)
    configured = create_autoregressive_reconstruction_module(
        "pixels", HIDDEN,
        {"predictor_dim": 32, "patch_size": 4, "embedding_dim": 48, "tokens_per_frame": 8},
    )  # fmt: skip
    with pytest.raises(ValueError, match="hidden states hold 8 frames of 8 tokens"):
        configured(hidden, video)
    assert torch.isfinite(configured(hidden, video[:, :8]))  # the 8 frames the states follow
    with pytest.raises(ValueError, match="tokens_per_frame=4 but the config says .*=8"):
        configured(hidden, video[:, :8], tokens_per_frame=4)
    # Unambiguous without it: one hidden state per tower patch (the seed design's call).
    assert torch.isfinite(module(torch.randn(1, 8 * 16, HIDDEN), video[:, :8]))
    with pytest.raises(ValueError, match="features hold 4 tokens a frame but the config says .*=8"):
        configured.compute_loss_from_features(
            torch.randn(1, 8 * 4, HIDDEN), torch.randn(1, 8, 4, 48)
        )


def test_targets_given_as_features_follow_the_layout():
    # compute_loss_from_features (the path of a model's own features): frame i's target is
    # feature next_index[i], brute force from the layout's written rule (next later frame).
    module = make_module(True, True)
    layout = module.frame_layout(16)
    features = torch.arange(len(layout), dtype=torch.float32)[None, :, None, None].expand(
        1, -1, 4, 48
    )
    hidden = torch.randn(1, len(layout) * 4, HIDDEN)
    _, out = module.compute_loss_from_features(hidden, features, num_frames=16, return_outputs=True)
    times = layout.frame_indices.tolist()
    for i, t in enumerate(times):
        stream = [
            j for j in range(len(times)) if bool(layout.is_fast[j]) == bool(layout.is_fast[i])
        ]
        later = [j for j in stream if times[j] > t]
        if later:
            want = min(later, key=lambda j: (times[j], j))
            assert out.targets[0, i, 0, 0].item() == want
        else:
            assert not out.target_mask[0, i]
    in_order = make_module(True, False)
    with pytest.raises(ValueError, match="frame_layout.5. has 5 frames but the features hold 8"):
        in_order.compute_loss_from_features(hidden, features, num_frames=5)


def test_prompt_masks_are_no_predictor_mask():
    with pytest.raises(ValueError, match="mask must be one of"):
        create_autoregressive_reconstruction_module("pixels", 32, {"mask": "prompt-causal-frame"})
