"""The decoder stack: backends agree, no future frame leaks in, compilation stays bounded."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._dynamo.utils import counters

from flexframe import DecoderConfig, FlexFrameDecoder, FramePositions, get_mask
from flexframe.nn import Attention, KernelPolicy, resolve_backend

DIM, HEADS, KV_HEADS = 128, 4, 2  # head dim 32: the smallest flex takes on the CPU

# One shape per mask keeps the CPU compilations (about 12 s each) to one per mask.
MASKS = {
    "causal-frame": {"num_frames": 4, "num_patches_per_frame": 5},
    "sliding-window": {"num_frames": 5, "num_patches_per_frame": 4, "window_size": 1},
    "fast-slow": {"num_fast_frames": 2, "num_slow_frames": 3, "num_patches_per_frame": 4},
    "timestamp-causal": {"timestamps": [0, 6, 3, 6, 9], "num_patches_per_frame": 4},
    "packed-causal-frame": {"frames_per_video": [2, 3], "num_patches_per_frame": 4},
    "token-causal": {"seq_len": 20},
    "full": {"seq_len": 20},
}


def make_decoder(backend: str, cross: bool = False, seed: int = 0) -> FlexFrameDecoder:
    torch.manual_seed(seed)
    return FlexFrameDecoder(
        dim=DIM, depth=2, num_heads=HEADS, num_kv_heads=KV_HEADS, cross_attention=cross,
        attention_backend=backend,
    )  # fmt: skip


def twin_decoders(cross: bool = False) -> tuple[FlexFrameDecoder, FlexFrameDecoder]:
    flex, sdpa = make_decoder("flex", cross), make_decoder("sdpa", cross)
    sdpa.load_state_dict(flex.state_dict())
    return flex.eval(), sdpa.eval()


@pytest.mark.parametrize("name", sorted(MASKS))
def test_flex_and_sdpa_backends_agree_in_inference(name):
    spec = get_mask(name, **MASKS[name])
    flex, sdpa = twin_decoders()
    x = torch.randn(2, spec.q_len, DIM)
    with torch.no_grad():
        torch.testing.assert_close(flex(x, spec), sdpa(x, spec), rtol=1e-4, atol=1e-5)


# -- leakage -------------------------------------------------------------------------------------
def token_times(name: str) -> torch.Tensor:
    """When each token of the mask's sequence was shown (written from the mask's definition)."""
    params = MASKS[name]
    p = params["num_patches_per_frame"]
    if name == "timestamp-causal":
        return torch.tensor(params["timestamps"]).repeat_interleave(p)
    if name == "packed-causal-frame":
        return torch.arange(sum(params["frames_per_video"])).repeat_interleave(p)
    return torch.arange(params["num_frames"]).repeat_interleave(p)


CAUSAL = ["causal-frame", "sliding-window", "timestamp-causal", "packed-causal-frame"]


@settings(max_examples=12)
@given(name=st.sampled_from(CAUSAL), cross=st.booleans(), data=st.data())
def test_later_frames_change_no_output_of_earlier_frames(name, cross, data):
    spec = get_mask(name, **MASKS[name])
    times = token_times(name)
    t = data.draw(st.sampled_from(sorted(set(times.tolist()))[:-1]), label="t")
    later = times > t
    decoder = make_decoder("sdpa", cross).eval()
    x = torch.randn(2, spec.q_len, DIM)
    x_changed = x.clone()
    x_changed[:, later] = torch.randn_like(x_changed[:, later]) * 5
    kwargs = lambda inp: {"memory": inp, "memory_mask": spec} if cross else {}  # noqa: E731
    with torch.no_grad():
        out, out_changed = (
            decoder(x, spec, **kwargs(x)),
            decoder(x_changed, spec, **kwargs(x_changed)),
        )
    torch.testing.assert_close(out[:, ~later], out_changed[:, ~later], rtol=0, atol=1e-5)
    assert not torch.allclose(out[:, later], out_changed[:, later])  # the change did reach


def test_flex_backend_does_not_leak_either():
    spec = get_mask("causal-frame", **MASKS["causal-frame"])  # shape compiled above
    flex, _ = twin_decoders()
    x = torch.randn(2, spec.q_len, DIM)
    x_changed = x.clone()
    x_changed[:, 10:] += 3.0  # frames 2 and 3
    with torch.no_grad():
        out, out_changed = flex(x, spec), flex(x_changed, spec)
    torch.testing.assert_close(out[:, :10], out_changed[:, :10], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", CAUSAL)
@pytest.mark.parametrize("cross", [False, True])
def test_gradients_of_earlier_outputs_wrt_later_inputs_are_zero(name, cross):
    spec = get_mask(name, **MASKS[name])
    times = token_times(name)
    decoder = make_decoder("sdpa", cross).train()
    x = torch.randn(1, spec.q_len, DIM, requires_grad=True)
    kwargs = {"memory": x, "memory_mask": spec} if cross else {}
    out = decoder(x, spec, **kwargs)
    # A random direction: the sum of a LayerNorm's outputs does not depend on its input.
    direction = torch.randn_like(out)
    for t in sorted(set(times.tolist()))[:-1]:
        loss = (out[:, times <= t] * direction[:, times <= t]).sum()
        (grad,) = torch.autograd.grad(loss, x, retain_graph=True)
        assert torch.all(grad[:, times > t] == 0), f"frame time {t} reads a later frame"
        assert grad[:, times <= t].abs().sum() > 0


def test_frame_positions_and_mask_follow_timestamps():
    # Frames shown out of order under timestamp-causal give the same per-frame outputs as the
    # same frames in time order under causal-frame: mask and rotary positions both follow time.
    p, order = 3, torch.tensor([2, 0, 3, 1])
    decoder = make_decoder("sdpa").eval()
    x_sorted = torch.randn(1, 4 * p, DIM)
    tokens = (order[:, None] * p + torch.arange(p)).flatten()
    x_shuffled = x_sorted[:, tokens]
    ts_spec = get_mask("timestamp-causal", timestamps=order.tolist(), num_patches_per_frame=p)
    with torch.no_grad():
        out_sorted = decoder(
            x_sorted, get_mask("causal-frame", num_frames=4, num_patches_per_frame=p)
        )
        out_shuffled = decoder(x_shuffled, ts_spec)
    torch.testing.assert_close(out_shuffled, out_sorted[:, tokens], rtol=1e-4, atol=1e-5)
    assert FramePositions.from_mask(ts_spec).frame.tolist() == order.repeat_interleave(p).tolist()


# -- compilation -------------------------------------------------------------------------------
def test_new_block_masks_of_one_shape_reuse_the_compiled_kernel():
    flex, _ = twin_decoders()
    x = torch.randn(1, 20, DIM)
    first = get_mask("timestamp-causal", **MASKS["timestamp-causal"])
    other = get_mask("timestamp-causal", timestamps=[5, 1, 2, 8, 0], num_patches_per_frame=4)
    assert first.block_mask("cpu") is not other.block_mask("cpu")
    with torch.no_grad():
        flex(x, first)  # compiled (or reused from the backend test above)
        before = counters["stats"]["unique_graphs"]
        with torch._dynamo.config.patch(error_on_recompile=True):
            flex(x, other)
            flex(x, first.block_mask("cpu"))  # a bare BlockMask takes the same path
    assert counters["stats"]["unique_graphs"] == before


def test_varying_frame_counts_compile_at_most_twice():
    decoder = make_decoder("flex").eval()
    before = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        for num_frames in (2, 3, 4, 6):
            x = torch.randn(1, num_frames * 7, DIM)
            decoder(
                x,
                "causal-frame",
                mask_params={"num_frames": num_frames, "num_patches_per_frame": 7},
            )
    assert counters["stats"]["unique_graphs"] - before <= 2


# -- backend choice, shapes, errors --------------------------------------------------------------
class CountingKernels(KernelPolicy):
    """A kernel policy that counts its flex calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def attend(self, *args, **kwargs):
        self.calls += 1
        return super().attend(*args, **kwargs)


def test_auto_is_sdpa_on_the_cpu_in_training_and_inference():
    kernels = CountingKernels()
    spec = get_mask("causal-frame", **MASKS["causal-frame"])
    torch.manual_seed(0)
    decoder = FlexFrameDecoder(dim=DIM, depth=2, num_heads=HEADS, kernels=kernels).train()
    x = torch.randn(1, spec.q_len, DIM)
    decoder(x, spec).sum().backward()
    with torch.no_grad():
        decoder(x, spec)
    assert kernels.calls == 0
    assert decoder.layers[0].self_attn.q_proj.weight.grad is not None
    assert resolve_backend("auto", "cpu") == "sdpa" and resolve_backend("auto", "cuda:0") == "flex"
    # Asked for by name, flex runs its CPU kernel in inference (one call a layer).
    flex = FlexFrameDecoder(
        dim=DIM, depth=2, num_heads=HEADS, attention_backend="flex", kernels=kernels
    ).eval()
    with torch.no_grad():
        flex(x, spec)
    assert kernels.calls == 2


@pytest.mark.parametrize("trainable", ["input", "key_value_only"])
def test_flex_on_the_cpu_refuses_to_train_with_a_clear_error(trainable):
    # LoRA-style tuning (a frozen q_proj, trainable k_proj and v_proj) still trains: a backward
    # pass would follow, and FlexAttention has none on the CPU.
    spec = get_mask("causal-frame", **MASKS["causal-frame"])
    attn = Attention(DecoderConfig(dim=DIM, depth=1, num_heads=4, attention_backend="flex"))
    x = torch.randn(1, spec.q_len, DIM, requires_grad=trainable == "input")
    if trainable == "key_value_only":
        attn.q_proj.requires_grad_(False)
    else:
        attn.requires_grad_(False)
    with pytest.raises(RuntimeError, match="'flex' cannot train on the CPU.*'auto' or 'sdpa'"):
        attn(x, x, spec)


@pytest.mark.parametrize("head_dim", [64, 128])
def test_grouped_query_attention_with_head_dims_64_and_128(head_dim):
    spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=2)
    decoder = FlexFrameDecoder(dim=48, depth=1, num_heads=4, num_kv_heads=1, head_dim=head_dim,
                               attention_backend="sdpa")  # fmt: skip
    attn = decoder.layers[0].self_attn
    assert attn.k_proj.out_features == head_dim and attn.q_proj.out_features == 4 * head_dim
    x = torch.randn(2, 6, 48, requires_grad=True)
    decoder(x, spec).sum().backward()
    assert x.grad.shape == x.shape


def test_cross_attention_without_memory_mask_is_refused_under_a_causal_mask():
    decoder = make_decoder("sdpa", cross=True)
    x = torch.randn(1, 20, DIM)
    with pytest.raises(
        ValueError, match="cross-attention without a memory_mask is refused.*causal-frame"
    ):
        decoder(x, get_mask("causal-frame", **MASKS["causal-frame"]), memory=x)
    # Under the full mask unmasked cross-attention is what the user asked for.
    assert decoder(x, get_mask("full", seq_len=20), memory=torch.randn(1, 7, DIM)).shape == x.shape


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="attention_backend must be one of .* got 'flash'"):
        FlexFrameDecoder(dim=32, depth=1, num_heads=4, attention_backend="flash")
    with pytest.raises(
        ValueError, match="num_kv_heads must divide num_heads, got num_heads=4, num_kv_heads=3"
    ):
        FlexFrameDecoder(dim=32, depth=1, num_heads=4, num_kv_heads=3)
    decoder = make_decoder("sdpa")
    with pytest.raises(ValueError, match=r"the mask is \[20, 20\].*12 queries"):
        decoder(torch.randn(1, 12, DIM), get_mask("causal-frame", **MASKS["causal-frame"]))
    with pytest.raises(ValueError, match=r"x must be \[B, N, 128\], got \(12, 128\)"):
        decoder(torch.randn(12, DIM), "token-causal", mask_params={"seq_len": 12})
    with pytest.raises(ValueError, match="no cross-attention"):
        decoder(
            torch.randn(1, 12, DIM),
            "full",
            mask_params={"seq_len": 12},
            memory=torch.randn(1, 3, DIM),
        )


def test_activation_checkpointing_gives_the_same_gradients():
    spec = get_mask("causal-frame", **MASKS["causal-frame"])
    plain = make_decoder("sdpa").train()
    torch.manual_seed(0)
    ckpt = FlexFrameDecoder(dim=DIM, depth=2, num_heads=HEADS, num_kv_heads=KV_HEADS,
                            attention_backend="sdpa", activation_checkpointing=True).train()  # fmt: skip
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, spec.q_len, DIM)
    grads, mlp_calls = [], []
    for model in (plain, ckpt):
        calls: list[int] = []
        hook = model.layers[0].self_attn.register_forward_pre_hook(
            lambda *args, calls=calls: calls.append(1)
        )
        model.zero_grad()
        model(x, spec).pow(2).sum().backward()
        hook.remove()
        grads.append([p.grad.clone() for p in model.parameters()])
        mlp_calls.append(len(calls))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    assert mlp_calls == [1, 2]  # checkpointing recomputed the layer in the backward pass


def test_sdpa_backend_with_bare_block_masks_equals_the_specs():
    # Bare BlockMasks go through dense_from_block_mask and a cache keyed by the object; with the
    # BlockMask cache off each one is freed after use, so a later one may reuse its address.
    from flexframe import set_block_mask_cache_size

    decoder = make_decoder("sdpa").eval()
    x = torch.randn(1, 20, DIM)
    set_block_mask_cache_size(0)
    try:
        for timestamps in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [0, 0, 0, 0, 0], [2, 0, 4, 1, 3]) * 3:
            spec = get_mask("timestamp-causal", timestamps=timestamps, num_patches_per_frame=4)
            block_mask = spec.block_mask("cpu", builder="closed-form")
            with torch.no_grad():
                got = decoder(x, block_mask, positions=FramePositions.from_mask(spec))
                want = decoder(x, spec)
            torch.testing.assert_close(got, want)
            del block_mask, spec
    finally:
        set_block_mask_cache_size(64)


def test_rotary_positions_survive_a_bf16_model():
    # model.to(bfloat16) must not round the frequencies or the positions: bf16 holds integers
    # exactly only up to 256, and video timestamps and patch indices go far beyond.
    from flexframe.nn.positions import FramePositions, FrameRotaryEmbedding

    fp32 = FrameRotaryEmbedding(16)
    bf16 = FrameRotaryEmbedding(16).to(torch.bfloat16)
    assert bf16.inv_freq.dtype == torch.float32
    torch.manual_seed(0)
    x = torch.randn(1, 2, 6, 16)
    pos = FramePositions(torch.tensor([300, 301, 1000, 1001, 4000, 4001]),
                         torch.tensor([0, 1, 500, 501, 700, 701]))  # fmt: skip
    err = (bf16(x.bfloat16(), pos).float() - fp32(x, pos)).abs().max()
    assert err < 0.05, err  # bf16 rounding of the output alone


def test_zero_kv_heads_is_refused():
    with pytest.raises(ValueError, match="num_kv_heads.*0"):
        FlexFrameDecoder(dim=32, depth=1, num_heads=4, num_kv_heads=0)


@pytest.mark.parametrize("head_dim", [64, 128])
def test_flex_equals_sdpa_with_grouped_query_heads_of_64_and_128(head_dim):
    # The fused kernel's forward on the CPU (no backward there) against the sdpa path.
    spec = get_mask("sliding-window", num_frames=4, num_patches_per_frame=3, window_size=1)
    torch.manual_seed(0)
    kwargs = dict(dim=48, depth=1, num_heads=4, num_kv_heads=2, head_dim=head_dim)
    flex = FlexFrameDecoder(**kwargs, attention_backend="flex").eval()
    sdpa = FlexFrameDecoder(**kwargs, attention_backend="sdpa").eval()
    sdpa.load_state_dict(flex.state_dict())
    x = torch.randn(2, spec.q_len, 48)
    with torch.no_grad():
        torch.testing.assert_close(flex(x, spec), sdpa(x, spec), rtol=1e-4, atol=1e-5)


def test_frame_positions_follow_timestamps_through_a_combined_mask():
    from flexframe.nn.positions import FramePositions

    ts = get_mask("timestamp-causal", timestamps=[0, 4, 2, 5], num_patches_per_frame=2)
    window = get_mask("sliding-window", num_frames=4, num_patches_per_frame=2, window_size=1)
    for spec in (ts & window, window & ts, ts | window):
        assert FramePositions.from_mask(spec).frame.tolist() == [0, 0, 4, 4, 2, 2, 5, 5]
    assert FramePositions.from_mask(window).frame.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # The decoder therefore gives the combined spec's output, not the frame index's.
    decoder = make_decoder("sdpa")
    x = torch.randn(1, 8, DIM)
    spec = ts & window
    by_spec = decoder(x, spec)
    by_times = decoder(
        x, spec.block_mask("cpu"), positions=FramePositions.for_frames(4, 2, [0, 4, 2, 5])
    )
    by_index = decoder(x, spec.block_mask("cpu"), positions=FramePositions.for_frames(4, 2))
    torch.testing.assert_close(by_spec, by_times)
    assert not torch.allclose(by_spec, by_index)


def test_a_bare_block_mask_without_positions_warns_through_warnings():
    spec = get_mask("causal-frame", **MASKS["causal-frame"])
    decoder = make_decoder("sdpa")
    x = torch.randn(1, spec.q_len, DIM)
    with pytest.warns(UserWarning, match="bare BlockMask.*rotary frame\\+patch positions are"):
        decoder(x, spec.block_mask("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the spec, or the block mask with positions: no warning
        decoder(x, spec)
        decoder(x, spec.block_mask("cpu"), positions=FramePositions.from_mask(spec))


@pytest.mark.parametrize("mask", ["causal-frame", "full"])
def test_a_cross_attention_decoder_called_without_memory_is_refused(mask):
    decoder = make_decoder("sdpa", cross=True)
    x = torch.randn(1, 20, DIM)
    spec = get_mask(mask, **(MASKS[mask] if mask != "full" else {"seq_len": 20}))
    with pytest.raises(ValueError, match="built with cross_attention=True, so every call needs"):
        decoder(x, spec)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_inputs_of_another_dtype_than_the_weights_get_what_to_do(dtype):
    decoder = make_decoder("sdpa")
    x = torch.randn(1, 20, DIM, dtype=dtype)
    spec = get_mask("causal-frame", **MASKS["causal-frame"])
    with pytest.raises(TypeError, match=f"x is {dtype} but the decoder's weights are torch.float32"
                       ".*decoder.to.*autocast"):  # fmt: skip
        decoder(x, spec)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast is the documented way out
        assert decoder(x.float(), spec).shape == x.shape
