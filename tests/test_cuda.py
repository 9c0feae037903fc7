"""On a CUDA GPU: the flex backend's forward and backward equal the sdpa backend's in bf16,
and the reconstruction loss trains under bf16 autocast.

Skipped on machines without CUDA (CI is CPU-only); run on an H100/H200 with
``python -m pytest tests/test_cuda.py`` or ``python tests/test_cuda.py`` (prints the errors for
the record).
"""

from __future__ import annotations

import pytest
import torch

from flexframe import FlexFrameDecoder, get_mask

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CASES = {
    "causal-frame": {"num_frames": 8, "num_patches_per_frame": 64},
    "sliding-window": {"num_frames": 8, "num_patches_per_frame": 64, "window_size": 2},
    "timestamp-causal": {"timestamps": [0, 4, 8, 12, 9, 10, 11, 12], "num_patches_per_frame": 64},
    "packed-causal-frame": {"frames_per_video": [3, 5], "num_patches_per_frame": 50},
}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def twin_decoders(head_dim: int, first: dict, second: dict, **kwargs) -> tuple:
    """Two bf16 CUDA decoders with the same weights, built with ``first`` and ``second`` on top
    of ``kwargs`` (default: 2 layers of 4 query and 2 key/value heads of ``head_dim``)."""
    kwargs = {"dim": 4 * head_dim, "depth": 2, "num_heads": 4, "num_kv_heads": 2,
              "head_dim": head_dim, **kwargs}  # fmt: skip
    a = FlexFrameDecoder(**kwargs, **first).cuda().to(torch.bfloat16)
    b = FlexFrameDecoder(**kwargs, **second).cuda().to(torch.bfloat16)
    b.load_state_dict(a.state_dict())
    return a, b


def pair_errors(a, b, spec, x: torch.Tensor) -> dict[str, float]:
    """Relative errors of ``a`` against ``b`` on ``x`` under ``spec``: the output, the input's
    gradient and the worst parameter gradient, forward and backward."""
    # A random direction for the loss: mean(out**2) would be constant after the final LayerNorm,
    # leaving only rounding noise as gradient.
    direction = torch.randn(x.shape, device="cuda")
    results = []
    for model in (a, b):
        xi = x.clone().requires_grad_(True)
        out = model(xi, spec)
        (out.float() * direction).sum().backward()
        results.append((out.detach(), xi.grad, [p.grad for p in model.parameters()]))
    (out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = results
    return {
        "out": rel_err(out_a, out_b),
        "grad_x": rel_err(gx_a, gx_b),
        "grad_params_max": max(rel_err(g, h) for g, h in zip(gp_a, gp_b, strict=True)),
    }


def case_errors(name: str, head_dim: int, first: dict, second: dict) -> dict[str, float]:
    """:func:`pair_errors` of twin decoders on the mask ``CASES[name]``, batch 2."""
    spec = get_mask(name, **CASES[name])
    torch.manual_seed(0)
    a, b = twin_decoders(head_dim, first, second)
    x = torch.randn(2, spec.q_len, 4 * head_dim, device="cuda", dtype=torch.bfloat16)
    return pair_errors(a, b, spec, x)


def flex_vs_sdpa_errors(name: str, head_dim: int) -> dict[str, float]:
    return case_errors(name, head_dim, {"attention_backend": "flex"}, {"attention_backend": "sdpa"})


@pytest.mark.cuda
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("name", sorted(CASES))
def test_flex_equals_sdpa_in_bf16_forward_and_backward(name, head_dim):
    errors = flex_vs_sdpa_errors(name, head_dim)
    assert all(e < 1e-2 for e in errors.values()), errors


@pytest.mark.cuda
@pytest.mark.parametrize("fast_slow", [False, True])
def test_reconstruction_loss_under_bf16_autocast_on_the_flex_backend(fast_slow):
    from flexframe import create_autoregressive_reconstruction_module

    module = create_autoregressive_reconstruction_module(
        "pixels",
        256,
        {
            "embedding_dim": 3 * 16 * 16,
            "patch_size": 16,
            "predictor_dim": 256,
            "attention_backend": "flex",
            "use_fast_slow_frames": fast_slow,
            "preset": None if not fast_slow else "medium",
        },
    ).cuda()
    t = 48
    num_layout = len(module.frame_layout(t))
    hidden = torch.randn(2, num_layout * 16, 256, device="cuda", requires_grad=True)
    video = torch.rand(2, t, 3, 64, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, out = module(hidden, video, return_outputs=True)
    loss.backward()
    assert torch.isfinite(loss) and hidden.grad.abs().sum() > 0
    assert out.predictions.dtype == torch.bfloat16


@pytest.mark.cuda
@pytest.mark.parametrize("block_size", [128, (128, 64)])
@pytest.mark.parametrize("name", sorted(CASES))
def test_closed_form_builder_on_the_gpu_gives_torchs_tensors(name, block_size):
    # The host-to-device copy and the GPU searchsorted/gather route, against torch's builder.
    from torch.nn.attention.flex_attention import create_block_mask

    from flexframe.masks.closed_form import build_block_mask

    spec = get_mask(name, **CASES[name])
    bs = block_size if isinstance(block_size, tuple) else (block_size, block_size)
    mod = spec.mask_mod_for("cuda")
    want = create_block_mask(mod, 1, 1, spec.q_len, spec.kv_len, device="cuda", BLOCK_SIZE=bs)
    for method in ("grids", "intervals"):
        got = build_block_mask(spec.relation, mod, bs, torch.device("cuda"), method=method)
        for attr in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
                     "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices"):  # fmt: skip
            tensor = getattr(got, attr)
            assert tensor.is_cuda and torch.equal(tensor, getattr(want, attr)), (method, attr)


def tuned_vs_plain_errors(name: str, head_dim: int, kernel_options=None) -> dict[str, float]:
    """The decoder with ``kernel_options`` (None: flexframe's default for the inputs) against
    torch's default Triton kernel (``{}``), forward and backward in bf16."""
    return case_errors(
        name,
        head_dim,
        {"attention_backend": "flex", "kernel_options": kernel_options},
        {"attention_backend": "flex", "kernel_options": {}},
    )


@pytest.mark.cuda
def test_the_default_kernel_options_follow_the_documented_order():
    from flexframe.nn.attention import default_kernel_options, flash_available

    hopper = torch.cuda.get_device_capability()[0] == 9
    triton = {"USE_TMA": True} if hopper else {}
    flash = {"BACKEND": "FLASH"} if hopper and flash_available() else triton
    assert default_kernel_options("cuda") == triton
    assert default_kernel_options("cuda", torch.bfloat16, 128) == flash
    assert default_kernel_options("cuda", torch.float16, 64) == flash
    assert default_kernel_options("cuda", torch.float32, 128) == triton
    assert default_kernel_options("cuda", torch.bfloat16, 80) == triton
    torch.use_deterministic_algorithms(True)
    try:
        assert default_kernel_options("cuda", torch.bfloat16, 128) == triton
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.fixture
def fresh_flash(monkeypatch):
    """No compiled kernels and no FLASH bookkeeping from earlier tests: each test sees FLASH's
    first shapes itself."""
    from flexframe.nn import attention

    torch._dynamo.reset()
    monkeypatch.setattr(attention, "_FLASH_FAILED", set())
    monkeypatch.setattr(attention, "_FLASH_SHAPES", set())
    monkeypatch.setattr(attention, "_FLASH_SHAPES_FULL", set())
    return attention


@pytest.mark.cuda
@pytest.mark.parametrize("head_dim", [64, 96, 128])
@pytest.mark.parametrize("name", sorted(CASES))
def test_the_tuned_default_gives_the_triton_result(fresh_flash, name, head_dim):
    # The tuned default (FLASH where FlashAttention-4 is installed, else USE_TMA) against torch's
    # default Triton kernel. Where FLASH is the default it must really have run: no failure
    # handed over to Triton on the way.
    errors = tuned_vs_plain_errors(name, head_dim)
    assert all(e < 1e-2 for e in errors.values()), errors
    assert not fresh_flash._FLASH_FAILED, fresh_flash._FLASH_FAILED
    flash = fresh_flash.default_kernel_options("cuda", torch.bfloat16, head_dim) == {
        "BACKEND": "FLASH"
    }
    assert bool(fresh_flash._FLASH_SHAPES) == flash


@pytest.mark.cuda
def test_the_tuned_default_serves_changing_lengths(fresh_flash):
    # Frame counts that change from batch to batch. FLASH compiles one kernel per length for the
    # first FLASH_MAX_SHAPES lengths; the later ones go to the Triton default (lengths dynamic).
    # Each length against the sdpa backend, forward and backward.
    torch.manual_seed(0)
    flex, sdpa = twin_decoders(
        128, {"attention_backend": "flex"}, {"attention_backend": "sdpa"},
        dim=256, depth=1, num_heads=2, num_kv_heads=2,
    )  # fmt: skip
    limit = fresh_flash.FLASH_MAX_SHAPES
    for i, num_frames in enumerate(range(8, 8 + 2 * (limit + 2), 2)):
        spec = get_mask("causal-frame", num_frames=num_frames, num_patches_per_frame=64)
        x = torch.randn(1, spec.q_len, 256, device="cuda", dtype=torch.bfloat16)
        errors = pair_errors(flex, sdpa, spec, x)
        assert errors["out"] < 1e-2 and errors["grad_x"] < 1e-2, (num_frames, errors)
        if fresh_flash.flash_available():
            assert len(fresh_flash._FLASH_SHAPES) == min(i + 1, limit), num_frames
    assert not fresh_flash._FLASH_FAILED, fresh_flash._FLASH_FAILED


if __name__ == "__main__":
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}")
    print("| mask | head_dim | out | grad x | worst param grad |")
    print("|---|---|---|---|---|")
    for name in sorted(CASES):
        for head_dim in (64, 128):
            e = flex_vs_sdpa_errors(name, head_dim)
            print(
                f"| {name} | {head_dim} | {e['out']:.2e} | {e['grad_x']:.2e} | "
                f"{e['grad_params_max']:.2e} |"
            )
    print()
    print("| mask | head_dim | tuned default vs Triton {}: out | grad x | worst param grad |")
    print("|---|---|---|---|---|")
    for name in sorted(CASES):
        for head_dim in (64, 96, 128):
            e = tuned_vs_plain_errors(name, head_dim)
            print(
                f"| {name} | {head_dim} | {e['out']:.2e} | {e['grad_x']:.2e} | "
                f"{e['grad_params_max']:.2e} |"
            )
