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
from torch.nn.attention.flex_attention import flex_attention

from flexframe import DecoderConfig, get_mask
from flexframe.nn import Attention, Hardware, KernelPolicy

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
