"""flex_attention kernel options: the documented default order and the FLASH fallback.

The GPU itself is faked here (capability, FlashAttention-4's presence, a FLASH kernel that fails
to compile); ``tests/test_cuda.py`` runs the real kernels against each other on a GPU.
"""

from __future__ import annotations

import logging
from functools import partial

import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention

import flexframe.nn.attention as attention
from flexframe import get_mask
from flexframe.nn import Attention

FLASH = {"BACKEND": "FLASH"}
TMA = {"USE_TMA": True}


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device of settable capability, with or without FlashAttention-4."""
    state = {"capability": (9, 0), "flash": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(attention, "_capability", lambda device: state["capability"])
    monkeypatch.setattr(attention, "flash_available", lambda: state["flash"])
    monkeypatch.setattr(
        attention, "_known_kernel_options", lambda: frozenset({"USE_TMA", "BACKEND"})
    )
    monkeypatch.setattr(attention, "_FLASH_FAILED", set())
    attention._kernel_options_for.cache_clear()
    yield state
    attention._kernel_options_for.cache_clear()


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
    fake_gpu, capability, flash, dtype, head_dim, deterministic, want
):
    fake_gpu.update(capability=capability, flash=flash)
    torch.use_deterministic_algorithms(deterministic)
    try:
        assert attention.default_kernel_options("cuda", dtype, head_dim) == want
    finally:
        torch.use_deterministic_algorithms(False)


def test_without_dtype_and_head_dim_the_choice_starts_at_the_triton_kernel(fake_gpu):
    assert attention.default_kernel_options("cuda") == TMA
    assert attention.default_kernel_options("cuda:0", torch.bfloat16) == TMA
    assert attention.default_kernel_options("cpu", torch.bfloat16, 128) == {}


def test_the_returned_options_are_a_copy(fake_gpu):
    attention.default_kernel_options("cuda", torch.bfloat16, 128)["BACKEND"] = "TRITON"
    assert attention.default_kernel_options("cuda", torch.bfloat16, 128) == FLASH


# -- the FLASH fallback, on the CPU: FLASH "applies" there and its kernel fails -------------------
@pytest.fixture
def failing_flash(monkeypatch):
    """FLASH is the default for every input; a FLASH call raises ``state["error"]`` when it is
    set, and every call runs eager flex_attention otherwise. Records ``(compiled function,
    kernel options)`` of every call: ``"flash"`` is FLASH's own (``dynamic=False``),
    ``"shared"`` the Triton one."""
    state = {"error": RuntimeError("CuteDSL template failed: no config fits\nsecond line"),
             "calls": []}  # fmt: skip
    monkeypatch.setattr(attention, "_FLASH_FAILED", set())
    monkeypatch.setattr(attention, "_FLASH_SHAPES", set())
    monkeypatch.setattr(attention, "_FLASH_SHAPES_FULL", set())
    monkeypatch.setattr(
        attention,
        "_flash_applies",
        lambda device, dtype, head_dim: (
            (str(device), dtype, head_dim) not in attention._FLASH_FAILED
        ),
    )
    attention._kernel_options_for.cache_clear()

    def fake(which, q, k, v, block_mask, enable_gqa, kernel_options):
        state["calls"].append((which, kernel_options))
        if kernel_options and kernel_options.get("BACKEND") == "FLASH":
            assert which == "flash", "FLASH must not go through the dynamic compiled function"
            if state["error"] is not None:
                raise state["error"]
        return flex_attention(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)

    monkeypatch.setattr(attention, "_compiled_flash_attention", lambda: partial(fake, "flash"))
    monkeypatch.setattr(attention, "compiled_flex_attention", lambda: partial(fake, "shared"))
    yield state
    attention._kernel_options_for.cache_clear()


def _attend(module: Attention, x: torch.Tensor, spec) -> torch.Tensor:
    with torch.no_grad():
        return module(x, x, spec)


def test_a_failing_default_flash_kernel_falls_back_to_triton_once_with_a_warning(failing_flash):
    spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=4)
    torch.manual_seed(0)
    flex = Attention(dim=32, num_heads=2, attention_backend="flex")
    sdpa = Attention(dim=32, num_heads=2, attention_backend="sdpa")
    sdpa.load_state_dict(flex.state_dict())
    x = torch.randn(2, spec.q_len, 32)
    with pytest.warns(RuntimeWarning, match="FLASH flex_attention kernel failed") as record:
        out = _attend(flex, x, spec)
    message = str(record[0].message)
    assert "(RuntimeError: CuteDSL template failed: no config fits);" in message
    assert "second line" not in message
    assert "torch.float32 head_dim=16" in message and "kernel_options={}" in message
    assert failing_flash["calls"] == [("flash", FLASH), ("shared", None)]
    torch.testing.assert_close(out, _attend(sdpa, x, spec), atol=1e-5, rtol=1e-5)
    # Remembered: the next call goes straight to the Triton kernel, without a warning.
    _attend(flex, x, spec)
    assert failing_flash["calls"][2:] == [("shared", None)]
    # Only for that (device, dtype, head_dim): another head dim still tries FLASH first.
    other = Attention(dim=32, num_heads=4, attention_backend="flex")
    with pytest.warns(RuntimeWarning, match="head_dim=8"):
        _attend(other, x, spec)
    assert failing_flash["calls"][3:] == [("flash", FLASH), ("shared", None)]


def test_flash_chosen_by_the_caller_is_never_replaced(failing_flash):
    spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=4)
    module = Attention(dim=32, num_heads=2, attention_backend="flex", kernel_options=FLASH)
    with pytest.raises(RuntimeError, match="no config fits"):
        _attend(module, torch.randn(1, spec.q_len, 32), spec)
    assert failing_flash["calls"] == [("flash", FLASH)]
    assert not attention._FLASH_FAILED


def test_running_out_of_memory_is_not_a_reason_to_fall_back(failing_flash):
    failing_flash["error"] = torch.OutOfMemoryError("CUDA out of memory")
    spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=4)
    module = Attention(dim=32, num_heads=2, attention_backend="flex")
    with pytest.raises(torch.OutOfMemoryError):
        _attend(module, torch.randn(1, spec.q_len, 32), spec)
    assert failing_flash["calls"] == [("flash", FLASH)]
    assert not attention._FLASH_FAILED


def test_the_default_flash_path_compiles_for_a_bounded_number_of_shapes(failing_flash, caplog):
    # FLASH is compiled with dynamic=False: a kernel per input signature. The first
    # FLASH_MAX_SHAPES signatures get FLASH (and keep it); later ones the Triton default.
    failing_flash["error"] = None
    module = Attention(dim=32, num_heads=2, attention_backend="flex")
    limit = attention.FLASH_MAX_SHAPES
    frames = list(range(2, 2 + limit + 2))
    with caplog.at_level(logging.INFO, logger="flexframe"):
        for num_frames in frames + frames[:2]:
            spec = get_mask("causal-frame", num_frames=num_frames, num_patches_per_frame=3)
            _attend(module, torch.randn(1, spec.q_len, 32), spec)
    which = [w for w, _ in failing_flash["calls"]]
    assert which == ["flash"] * limit + ["shared", "shared"] + ["flash", "flash"]
    assert [opts for _, opts in failing_flash["calls"][limit : limit + 2]] == [None, None]
    assert len(attention._FLASH_SHAPES) == limit
    full = [r.getMessage() for r in caplog.records if "input shapes already" in r.getMessage()]
    assert len(full) == 1  # said once
