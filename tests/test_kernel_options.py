"""flex_attention kernel options: the documented default order and the FLASH fallback.

Each test builds its own ``KernelPolicy`` with the hardware it pretends to run on (capability,
FlashAttention-4's presence) and, for the fallback, a stand-in compiler whose FLASH kernel
fails; ``tests/test_cuda.py`` runs the real kernels against each other on a GPU.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention.flex_attention import BlockMask, flex_attention, noop_mask

from flexframe import DecoderConfig, FlexFrameDecoder, get_mask
from flexframe.nn import (
    Attention,
    FrameKVCache,
    Hardware,
    KernelPolicy,
    flash_would_ignore_blocks,
)

FLASH = {"BACKEND": "FLASH"}
TMA = {"USE_TMA": True}
KNOWN = frozenset({"USE_TMA", "BACKEND"})


def gpu(capability=(9, 0), flash=True, known=KNOWN):
    """A hardware probe that reports a CUDA GPU of ``capability`` for every device."""
    return lambda device: Hardware(True, capability, flash, known)


@pytest.mark.parametrize(
    ("capability", "flash", "dtype", "head_dim", "deterministic", "want"),
    [
        ((9, 0), True, torch.bfloat16, 128, False, FLASH),
        ((9, 0), True, torch.float16, 64, False, FLASH),
        ((9, 0), True, torch.bfloat16, 96, False, FLASH),
        ((9, 0), True, torch.float32, 128, False, TMA),  # FlashAttention-4: 16-bit inputs only
        ((9, 0), True, torch.bfloat16, 80, False, TMA),  # a head dim the tests do not cover
        ((9, 0), True, torch.bfloat16, 256, False, TMA),
        ((9, 0), True, torch.bfloat16, 128, True, TMA),  # no deterministic FLASH backward
        ((9, 0), False, torch.bfloat16, 128, False, TMA),  # flash-attn-4 not installed
        ((8, 0), True, torch.bfloat16, 128, False, {}),  # Ampere: torch's defaults
        ((10, 0), True, torch.bfloat16, 128, False, {}),  # not measured there
    ],
)
def test_the_default_options_follow_the_documented_order(
    capability, flash, dtype, head_dim, deterministic, want
):
    policy = KernelPolicy(hardware=gpu(capability, flash))
    torch.use_deterministic_algorithms(deterministic)
    try:
        assert policy.options("cuda:0", dtype, head_dim) == want
    finally:
        torch.use_deterministic_algorithms(False)


def test_a_torch_that_does_not_know_the_options_gets_its_defaults():
    policy = KernelPolicy(hardware=gpu(known=frozenset()))
    assert policy.options("cuda:0", torch.bfloat16, 128) == {}


def test_without_dtype_and_head_dim_the_choice_starts_at_the_triton_kernel():
    policy = KernelPolicy(hardware=gpu())
    assert policy.options("cuda:0") == TMA
    assert policy.options("cuda:0", torch.bfloat16) == TMA
    cpu = KernelPolicy()  # the real probe: this CPU
    assert cpu.options("cpu", torch.bfloat16, 128) == {}


def test_the_returned_options_are_a_copy():
    policy = KernelPolicy(hardware=gpu())
    policy.options("cuda:0", torch.bfloat16, 128)["BACKEND"] = "TRITON"
    assert policy.options("cuda:0", torch.bfloat16, 128) == FLASH


# -- the FLASH fallback, on the CPU: the policy believes it runs on Hopper -----------------------
class FakeCompiler:
    """Stands in for ``torch.compile``: records each compiled function's calls as ``(kind,
    kernel options)``, ``kind`` ``"flash"`` for ``dynamic=False`` and ``"triton"`` otherwise; a
    FLASH call raises ``error`` when set, every call runs eager flex_attention otherwise."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, dict | None]] = []

    def __call__(self, fn, dynamic=None):
        kind = "flash" if dynamic is False else "triton"

        def run(q, k, v, block_mask, enable_gqa, kernel_options):
            self.calls.append((kind, kernel_options))
            if kernel_options and kernel_options.get("BACKEND") == "FLASH":
                assert kind == "flash", "FLASH must not go through a dynamic compiled function"
                if self.error is not None:
                    raise self.error
            with warnings.catch_warnings():  # eager on purpose: the kernel is not under test
                warnings.filterwarnings("ignore", "flex_attention called without torch.compile")
                return flex_attention(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)

        return run


def hopper_policy(error=None, **kwargs) -> tuple[KernelPolicy, FakeCompiler]:
    compiler = FakeCompiler(error)
    return KernelPolicy(hardware=gpu(), compile=compiler, **kwargs), compiler


def attention(policy: KernelPolicy, head_dim: int = 64, options=None, backend="flex"):
    """bf16 attention with a head dim FLASH takes (64, 96 or 128)."""
    config = DecoderConfig(dim=32, depth=1, num_heads=2, head_dim=head_dim,
                           attention_backend=backend, kernel_options=options)  # fmt: skip
    return Attention(config, kernels=policy).to(torch.bfloat16)


def attend(module: Attention, x: torch.Tensor, spec) -> torch.Tensor:
    with torch.no_grad():
        return module(x.bfloat16(), x.bfloat16(), spec).float()


FAILED = RuntimeError("CuteDSL template failed: no config fits\nsecond line")


def test_a_failing_default_flash_kernel_falls_back_to_triton_once_with_a_warning():
    policy, compiler = hopper_policy(FAILED)
    spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=4)
    torch.manual_seed(0)
    flex = attention(policy)
    sdpa = attention(policy, backend="sdpa")
    sdpa.load_state_dict(flex.state_dict())
    x = torch.randn(2, spec.q_len, 32)
    with pytest.warns(RuntimeWarning, match="FLASH flex_attention kernel failed") as record:
        out = attend(flex, x, spec)
    message = str(record[0].message)
    assert "(RuntimeError: CuteDSL template failed: no config fits);" in message
    assert "second line" not in message
    assert "torch.bfloat16 head_dim=64" in message and "kernel_options={'USE_TMA': True}" in message
    assert compiler.calls == [("flash", FLASH), ("triton", TMA)]
    torch.testing.assert_close(out, attend(sdpa, x, spec), atol=2e-2, rtol=2e-2)
    # Remembered: the next call goes straight to the Triton kernel, without a warning.
    attend(flex, x, spec)
    assert compiler.calls[2:] == [("triton", TMA)]
    # Only for that (device, dtype, head_dim): another head dim still tries FLASH first.
    with pytest.warns(RuntimeWarning, match="head_dim=96"):
        attend(attention(policy, head_dim=96), x, spec)
    assert compiler.calls[3:] == [("flash", FLASH), ("triton", TMA)]


def test_flash_chosen_by_the_caller_is_never_replaced():
    policy, compiler = hopper_policy(FAILED)
    spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=4)
    with pytest.raises(RuntimeError, match="no config fits"):
        attend(attention(policy, options=FLASH), torch.randn(1, spec.q_len, 32), spec)
    assert compiler.calls == [("flash", FLASH)]
    assert not policy.flash_failed


def test_running_out_of_memory_is_not_a_reason_to_fall_back():
    policy, compiler = hopper_policy(torch.OutOfMemoryError("CUDA out of memory"))
    spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=4)
    with pytest.raises(torch.OutOfMemoryError):
        attend(attention(policy), torch.randn(1, spec.q_len, 32), spec)
    assert compiler.calls == [("flash", FLASH)]
    assert not policy.flash_failed


def test_the_default_flash_path_compiles_for_a_bounded_number_of_shapes(caplog):
    # FLASH is compiled with dynamic=False: a kernel per input signature. The first
    # max_flash_shapes signatures get FLASH (and keep it); later ones the Triton default.
    limit = 3
    policy, compiler = hopper_policy(max_flash_shapes=limit)
    module = attention(policy)
    frames = list(range(2, 2 + limit + 2))
    with caplog.at_level(logging.INFO, logger="flexframe"):
        for num_frames in frames + frames[:2]:
            spec = get_mask("causal-frame", num_frames=num_frames, num_patches_per_frame=3)
            attend(module, torch.randn(1, spec.q_len, 32), spec)
    kinds = [kind for kind, _ in compiler.calls]
    assert kinds == ["flash"] * limit + ["triton", "triton"] + ["flash", "flash"]
    assert [opts for _, opts in compiler.calls[limit : limit + 2]] == [TMA, TMA]
    assert len(policy.flash_signatures) == limit
    full = [r.getMessage() for r in caplog.records if "input shapes already" in r.getMessage()]
    assert len(full) == 1  # said once


def test_each_mask_family_gets_its_own_compiled_function():
    # Dynamo counts recompilations per code object: one per family keeps a process that runs
    # many masks from reaching the limit (and torch's silent eager fallback).
    policy, compiler = hopper_policy()
    frame = get_mask("causal-frame", num_frames=3, num_patches_per_frame=2).mask_mod
    window = get_mask("sliding-window", num_frames=3, num_patches_per_frame=2, window_size=1)
    assert policy.compiled(frame) is policy.compiled(frame)
    assert policy.compiled(frame) is not policy.compiled(window.mask_mod)
    assert policy.compiled(frame, flash=True) is not policy.compiled(frame)


@pytest.mark.parametrize("head_dim", [8, 16, 24])
def test_flex_on_the_cpu_refuses_head_dims_its_kernel_gets_wrong(head_dim):
    # torch's CPU kernel gave errors up to 2.8 (and NaN) against sdpa at head dims 8 and 16.
    spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=8)
    q = torch.randn(1, 2, spec.q_len, head_dim)
    with pytest.raises(ValueError, match=f"head_dim={head_dim} is refused.*'sdpa'.*32 or more"):
        KernelPolicy().attend(q, q, q, spec.block_mask("cpu"))


# -- BlockMasks FLASH would ignore (the class of torch issue 188322) ----------------------------
# torch's FLASH lowering drops a BlockMask whose mask_mod returns a constant and attends to every
# key. The references below build the token-level mask from the blocks by brute force.
def _constant_false(b, h, q_idx, kv_idx):
    return q_idx.new_zeros((), dtype=torch.bool)


def _constant_true_from_a_tensor(b, h, q_idx, kv_idx):
    return torch.ones((), dtype=torch.bool) | False


def _every_key(b, h, q_idx, kv_idx):  # always True, but it reads an index: FLASH keeps blocks
    return kv_idx >= 0


def _keys_up_to_query(b, h, q_idx, kv_idx):
    return kv_idx <= q_idx


MODS = {  # name: (mask_mod, returns a constant)
    "noop": (noop_mask, True),
    "constant-false": (_constant_false, True),
    "constant-true-from-a-tensor": (_constant_true_from_a_tensor, True),
    "every-key": (_every_key, False),
    "keys-up-to-query": (_keys_up_to_query, False),
}


def blocks_with(grid_partial, grid_full, mod, q_len, kv_len, block=4) -> BlockMask:
    """A BlockMask of ``[Q_BLOCKS, KV_BLOCKS]`` bool grids, built by hand."""

    def side(grid):
        num = grid.sum(-1).to(torch.int32)
        idx = torch.argsort(~grid, dim=-1, stable=True).to(torch.int32)
        return num[None, None], idx[None, None]

    kv_num, kv_idx = side(grid_partial)
    full_num, full_idx = side(grid_full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block,
                                    mask_mod=mod, seq_lengths=(q_len, kv_len))  # fmt: skip


def token_mask(grid_partial, grid_full, mod, q_len, kv_len, block=4) -> torch.Tensor:
    """``[q_len, kv_len]``: what the BlockMask says, pair by pair."""
    out = torch.zeros(q_len, kv_len, dtype=torch.bool)
    zero = torch.zeros((), dtype=torch.int32)
    for q in range(q_len):
        for kv in range(kv_len):
            if grid_full[q // block, kv // block]:
                out[q, kv] = True
            elif grid_partial[q // block, kv // block]:
                out[q, kv] = bool(mod(zero, zero, torch.tensor(q), torch.tensor(kv)))
    return out


@st.composite
def hand_built_blocks(draw):
    q_len, kv_len = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    nq, nkv = -(-q_len // 4), -(-kv_len // 4)
    kind = draw(st.sampled_from(["partial", "full"]))
    cells = st.lists(st.sampled_from(["skip", kind, "both"]), min_size=nq * nkv, max_size=nq * nkv)
    grid = draw(cells)
    full = torch.tensor([c == "full" or (c == "both" and kind == "partial") for c in grid])
    partial = torch.tensor([c == "partial" for c in grid]) & ~full
    name = draw(st.sampled_from(sorted(MODS)))
    return partial.view(nq, nkv), full.view(nq, nkv), name, q_len, kv_len


@settings(max_examples=60, deadline=None)
@given(hand_built_blocks())
def test_flash_would_ignore_blocks_exactly_when_its_all_keys_result_differs(case):
    partial, full, name, q_len, kv_len = case
    mod, constant = MODS[name]
    blocks = blocks_with(partial, full, mod, q_len, kv_len)
    # FLASH with a constant mask_mod attends to every pair: wrong unless the mask is all-visible.
    wrong = constant and not bool(token_mask(partial, full, mod, q_len, kv_len).all())
    assert flash_would_ignore_blocks(blocks) == wrong


def test_a_block_mask_flash_would_ignore_runs_the_triton_kernel_by_default():
    # Which kernel runs is the contract here; tests/test_cuda.py checks the values on a GPU
    # (the stand-in compiler runs eager flex_attention, which reads no blocks at all).
    policy, compiler = hopper_policy()
    causal = get_mask("causal-frame", num_frames=3, num_patches_per_frame=128).block_mask()
    trivial = BlockMask.from_kv_blocks(
        causal.kv_num_blocks,
        causal.kv_indices,
        causal.full_kv_num_blocks,
        causal.full_kv_indices,
        BLOCK_SIZE=causal.BLOCK_SIZE,
        seq_lengths=causal.seq_lengths,
    )  # fmt: skip  (no mask_mod: torch's noop_mask)
    q = torch.randn(1, 2, 384, 64, dtype=torch.bfloat16)
    policy.attend(q, q, q, trivial)
    assert compiler.calls == [("triton", TMA)]
    assert not policy.flash_failed  # a choice for this BlockMask, not a fallback for the inputs
    # The same blocks under flexframe's own mask_mod keep FLASH.
    policy.attend(q, q, q, causal)
    assert compiler.calls[1:] == [("flash", FLASH)]


def test_flash_chosen_by_the_caller_is_refused_for_a_block_mask_it_would_ignore():
    policy, compiler = hopper_policy()
    sparse = BlockMask.from_kv_blocks(torch.tensor([[[1, 2]]]), torch.tensor([[[[0, 1], [0, 1]]]]))
    q = torch.randn(1, 1, 256, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"FLASH.*'noop_mask'.*skips blocks.*real mask_mod"):
        policy.attend(q, q, q, sparse, kernel_options=FLASH)
    assert compiler.calls == []
    dense = BlockMask.from_kv_blocks(torch.tensor([[[2, 2]]]), torch.tensor([[[[0, 1], [0, 1]]]]))
    policy.attend(q, q, q, dense, kernel_options=FLASH)  # every block computed: FLASH is right
    assert compiler.calls == [("flash", FLASH)]


@pytest.mark.parametrize(
    "name, params",
    [("causal-frame", {"num_frames": 3, "num_patches_per_frame": 5}),
     ("sliding-window", {"num_frames": 4, "num_patches_per_frame": 3, "window_size": 1,
                         "sink_frames": 1}),
     ("chunk-causal", {"num_frames": 5, "num_patches_per_frame": 2, "frames_per_chunk": 2}),
     ("teacher-forcing", {"num_frames": 3, "num_patches_per_frame": 2}),
     ("packed-causal-frame", {"frames_per_video": [2, 1], "num_patches_per_frame": 3}),
     ("timestamp-causal", {"timestamps": [0, 2, 1], "num_patches_per_frame": 2}),
     ("fast-slow", {"num_fast_frames": 2, "num_slow_frames": 2, "num_patches_per_frame": 2}),
     ("token-causal", {"seq_len": 9}), ("full", {"seq_len": 9})],
)  # fmt: skip
def test_flexframes_masks_are_never_taken_for_constant_ones(name, params):
    spec = get_mask(name, **params)
    assert not flash_would_ignore_blocks(spec.block_mask())
    assert not flash_would_ignore_blocks((spec & get_mask("full", seq_len=spec.q_len)).block_mask())


def test_prompt_and_streaming_step_masks_are_never_taken_for_constant_ones():
    ids = torch.tensor([[-1, -1, 0, 0, 1, 1, -1]])
    for name in ("prompt-causal-frame", "prompt-sliding-window"):
        params = {"window_size": 1} if name == "prompt-sliding-window" else {}
        assert not flash_would_ignore_blocks(get_mask(name, frame_ids=ids, **params).block_mask())
    spec = get_mask("sliding-window", num_frames=6, num_patches_per_frame=2, window_size=1)
    decoder = FlexFrameDecoder(dim=64, depth=1, num_heads=2, attention_backend="flex")
    cache = FrameKVCache.for_mask(spec, decoder, chunk_frames=1)
    for _ in range(4):  # the ring wraps
        with cache.begin(1) as step:
            assert not flash_would_ignore_blocks(step.mask.block_mask())


def _fresh_constant(name: str):
    """A constant mask_mod with a code object of its own (nothing is kept for it yet)."""
    namespace: dict = {"torch": torch}
    exec(
        f"def {name}(b, h, q_idx, kv_idx):\n    return torch.ones((), dtype=torch.bool)", namespace
    )
    return namespace[name]


SPARSE = (torch.tensor([[[1, 2]]]), torch.tensor([[[[0, 1], [0, 1]]]]))  # row 0 skips block 1


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad", "autocast"])
def test_a_constant_mask_mod_is_found_in_the_modes_generation_runs_in(mode):
    context = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad,
               "autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}[mode]  # fmt: skip
    with context():
        constant = _fresh_constant(f"constant_in_{mode}")
        assert flash_would_ignore_blocks(BlockMask.from_kv_blocks(*SPARSE, mask_mod=constant))
        causal = BlockMask.from_kv_blocks(*SPARSE, mask_mod=_keys_up_to_query)
        assert not flash_would_ignore_blocks(causal)


class _Masks:
    def constant(self, b, h, q_idx, kv_idx):
        return q_idx.new_ones((), dtype=torch.bool)

    def causal(self, b, h, q_idx, kv_idx):
        return kv_idx <= q_idx


def _constant_with_a_default(b, h, q_idx, kv_idx, value=True):
    return q_idx.new_full((), value, dtype=torch.bool)


def _causal_with_a_default(b, h, q_idx, kv_idx, offset=0):
    return kv_idx <= q_idx + offset


@pytest.mark.parametrize(
    "mod, constant",
    [(_Masks().constant, True), (_Masks().causal, False),
     (_constant_with_a_default, True), (_causal_with_a_default, False)],
    ids=["bound-constant", "bound-causal", "default-constant", "default-causal"],
)  # fmt: skip
def test_bound_methods_and_defaulted_parameters_are_read_as_flex_calls_them(mod, constant):
    assert flash_would_ignore_blocks(BlockMask.from_kv_blocks(*SPARSE, mask_mod=mod)) == constant


@pytest.mark.parametrize("order", [(True, False), (False, True)])
def test_a_mask_mod_that_branches_on_a_closed_over_flag_is_read_for_each_flag(order):
    def make(flag: torch.Tensor):
        def branching(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) if bool(flag) else q_idx.new_ones((), dtype=torch.bool)

        return branching

    for causal in order:  # the same code object, read once per flag value
        mod = make(torch.tensor(causal))
        assert flash_would_ignore_blocks(BlockMask.from_kv_blocks(*SPARSE, mask_mod=mod)) == (
            not causal
        )
