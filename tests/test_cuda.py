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


def flex_vs_sdpa_errors(name: str, head_dim: int) -> dict[str, float]:
    spec = get_mask(name, **CASES[name])
    torch.manual_seed(0)
    kwargs = dict(dim=4 * head_dim, depth=2, num_heads=4, num_kv_heads=2, head_dim=head_dim)
    flex = FlexFrameDecoder(**kwargs, attention_backend="flex").cuda().to(torch.bfloat16)
    sdpa = FlexFrameDecoder(**kwargs, attention_backend="sdpa").cuda().to(torch.bfloat16)
    sdpa.load_state_dict(flex.state_dict())
    x = torch.randn(2, spec.q_len, 4 * head_dim, device="cuda", dtype=torch.bfloat16)
    # A random direction for the loss: mean(out**2) would be constant after the final LayerNorm,
    # leaving only rounding noise as gradient.
    direction = torch.randn(x.shape, device="cuda")
    errors = {}
    outs, grads = [], []
    for model in (flex, sdpa):
        xi = x.clone().requires_grad_(True)
        out = model(xi, spec)
        (out.float() * direction).sum().backward()
        outs.append(out.detach())
        grads.append([xi.grad] + [p.grad for p in model.parameters()])
    errors["out"] = rel_err(outs[0], outs[1])
    errors["grad_x"] = rel_err(grads[0][0], grads[1][0])
    errors["grad_params_max"] = max(
        rel_err(g0, g1) for g0, g1 in zip(grads[0][1:], grads[1][1:], strict=True)
    )
    return errors


@pytest.mark.cuda
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("name", sorted(CASES))
def test_flex_equals_sdpa_in_bf16_forward_and_backward(name, head_dim):
    errors = flex_vs_sdpa_errors(name, head_dim)
    assert all(e < 1e-2 for e in errors.values()), errors


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


@pytest.mark.cuda
def test_tuned_kernel_options_give_the_default_result():
    from flexframe.nn.attention import default_kernel_options

    spec = get_mask("timestamp-causal", **CASES["timestamp-causal"])
    assert default_kernel_options("cuda") == (
        {"USE_TMA": True} if torch.cuda.get_device_capability()[0] == 9 else {}
    )
    torch.manual_seed(0)
    tuned = FlexFrameDecoder(256, 2, 4, attention_backend="flex").cuda().to(torch.bfloat16)
    plain = FlexFrameDecoder(256, 2, 4, attention_backend="flex", kernel_options={})
    plain = plain.cuda().to(torch.bfloat16)
    plain.load_state_dict(tuned.state_dict())
    x = torch.randn(2, spec.q_len, 256, device="cuda", dtype=torch.bfloat16)
    direction = torch.randn(x.shape, device="cuda")
    results = []
    for model in (tuned, plain):
        xi = x.clone().requires_grad_(True)
        out = model(xi, spec)
        (out.float() * direction).sum().backward()
        results.append((out.detach(), xi.grad))
    assert rel_err(results[0][0], results[1][0]) < 1e-2
    assert rel_err(results[0][1], results[1][1]) < 1e-2
