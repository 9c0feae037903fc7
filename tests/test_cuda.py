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
from flexframe.nn import KernelPolicy

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CASES = {
    "causal-frame": {"num_frames": 8, "num_patches_per_frame": 64},
    "sliding-window": {"num_frames": 8, "num_patches_per_frame": 64, "window_size": 2},
    "timestamp-causal": {"timestamps": [0, 4, 8, 12, 9, 10, 11, 12], "num_patches_per_frame": 64},
    "packed-causal-frame": {"frames_per_video": [3, 5], "num_patches_per_frame": 50},
    "sliding-window-sinks": {"num_frames": 9, "num_patches_per_frame": 96, "window_size": 2,
                             "sink_frames": 1},
    "chunk-causal": {"num_frames": 9, "num_patches_per_frame": 96, "frames_per_chunk": 3,
                     "window_size": 1, "sink_chunks": 1},
    "teacher-forcing": {"num_frames": 6, "num_patches_per_frame": 100, "frames_per_chunk": 3},
}  # fmt: skip


# The masks of the first round get the full matrix of head dims; the generation masks (one
# closed form each, compiled like the others) head dim 128, which FLASH and the models use.
HEAD_DIMS = {name: (64, 96, 128) for name in CASES}
for _name in ("sliding-window-sinks", "chunk-causal", "teacher-forcing"):
    HEAD_DIMS[_name] = (128,)
FLEX_VS_SDPA = [(n, d) for n in sorted(CASES) for d in HEAD_DIMS[n] if d != 96]
TUNED = [(n, d) for n in sorted(CASES) for d in HEAD_DIMS[n]]


def case_spec(name: str):
    """The registered mask of a case (``sliding-window-sinks`` is sliding-window with sinks)."""
    return get_mask(name.removesuffix("-sinks"), **CASES[name])


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def twin_decoders(head_dim: int, first: dict, second: dict, kernels=None, **kwargs) -> tuple:
    """Two bf16 CUDA decoders with the same weights, built with ``first`` and ``second`` on top
    of ``kwargs`` (default: 2 layers of 4 query and 2 key/value heads of ``head_dim``)."""
    kwargs = {"dim": 4 * head_dim, "depth": 2, "num_heads": 4, "num_kv_heads": 2,
              "head_dim": head_dim, **kwargs}  # fmt: skip
    a = FlexFrameDecoder(**kwargs, **first, kernels=kernels).cuda().to(torch.bfloat16)
    b = FlexFrameDecoder(**kwargs, **second, kernels=kernels).cuda().to(torch.bfloat16)
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


def case_errors(
    name: str, head_dim: int, first: dict, second: dict, kernels=None
) -> dict[str, float]:
    """:func:`pair_errors` of twin decoders on the mask ``CASES[name]``, batch 2."""
    spec = case_spec(name)
    torch.manual_seed(0)
    a, b = twin_decoders(head_dim, first, second, kernels)
    x = torch.randn(2, spec.q_len, 4 * head_dim, device="cuda", dtype=torch.bfloat16)
    return pair_errors(a, b, spec, x)


def flex_vs_sdpa_errors(name: str, head_dim: int) -> dict[str, float]:
    return case_errors(name, head_dim, {"attention_backend": "flex"}, {"attention_backend": "sdpa"})


@pytest.mark.cuda
@pytest.mark.parametrize("name, head_dim", FLEX_VS_SDPA)
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
    # The one host-to-device copy and the grids formed on the GPU, against torch's builder.
    from torch.nn.attention.flex_attention import create_block_mask

    from flexframe.masks.closed_form import build_block_mask

    spec = case_spec(name)
    bs = block_size if isinstance(block_size, tuple) else (block_size, block_size)
    mod = spec.mask_mod_for("cuda")
    want = create_block_mask(mod, 1, 1, spec.q_len, spec.kv_len, device="cuda", BLOCK_SIZE=bs)
    got = build_block_mask(spec.relation, mod, bs, torch.device("cuda"))
    for attr in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
                 "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices"):  # fmt: skip
        tensor = getattr(got, attr)
        assert tensor.is_cuda and torch.equal(tensor, getattr(want, attr)), attr


BLOCK_TENSORS = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
                 "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices")  # fmt: skip


def assert_block_kernel_gives_torchs_tensors(make, bs, monkeypatch):
    """``make()``'s BlockMask through the one-launch kernel (flexframe.masks.block_kernel)
    against torch's ``create_block_mask`` and the torch route (``FLEXFRAME_BLOCK_KERNEL=0``),
    tensor for tensor."""
    from torch.nn.attention.flex_attention import create_block_mask

    from flexframe.masks.block_kernel import block_kernel_available
    from flexframe.masks.closed_form import build_block_mask

    assert block_kernel_available("cuda"), "Triton comes with torch's CUDA builds"
    spec = make()
    mod = spec.mask_mod_for("cuda")
    b = getattr(spec, "batch_size", 1)
    want = create_block_mask(mod, b, 1, spec.q_len, spec.kv_len, device="cuda", BLOCK_SIZE=bs)
    if spec.relation is None:  # a prompt mask: its own builder
        got = spec.block_mask("cuda", block_size=bs)
        monkeypatch.setenv("FLEXFRAME_BLOCK_KERNEL", "0")
        torch_route = make().block_mask("cuda", block_size=bs)
    else:
        got = build_block_mask(spec.relation, mod, bs, torch.device("cuda"))
        monkeypatch.setenv("FLEXFRAME_BLOCK_KERNEL", "0")
        torch_route = build_block_mask(spec.relation, mod, bs, torch.device("cuda"))
    monkeypatch.delenv("FLEXFRAME_BLOCK_KERNEL")
    for attr in BLOCK_TENSORS:
        tensor = getattr(got, attr)
        assert tensor.is_cuda and torch.equal(tensor, getattr(want, attr)), (spec, bs, attr)
        assert torch.equal(tensor, getattr(torch_route, attr)), (spec, bs, attr)


def _random_configs(count: int, seed: int = 0) -> list[tuple[str, dict, tuple[int, int]]]:
    """``count`` registered masks with random parameters and block sizes (seeded), drawn as
    the brute-force tests' strategies draw them; the masks without a closed form left out."""
    import random

    rng = random.Random(seed)
    out: list[tuple[str, dict, tuple[int, int]]] = []
    while len(out) < count:
        f, p, w = rng.randint(1, 9), rng.randint(1, 11), rng.randint(0, 4)
        bs = rng.choice([(1, 1), (3, 5), (16, 16), (64, 128), (128, 64), (128, 128)])
        c = rng.randint(1, f)
        chunks = -(-f // c)
        kind = rng.randrange(6)
        if kind == 0:
            name, params = "causal-frame", {"num_frames": f, "num_patches_per_frame": p}
        elif kind == 1:
            name, params = (
                "sliding-window",
                {
                    "num_frames": f,
                    "num_patches_per_frame": p,
                    "window_size": w,
                    "sink_frames": rng.randint(0, f),
                },
            )
        elif kind in (2, 3):
            name = "chunk-causal" if kind == 2 else "teacher-forcing"
            params = {
                "num_frames": f,
                "num_patches_per_frame": p,
                "frames_per_chunk": c,
                "window_size": rng.choice([None, w]),
                "sink_chunks": rng.randint(0, chunks),
            }
        elif kind == 4:
            name, params = (
                "packed-causal-frame",
                {
                    "frames_per_video": [rng.randint(1, 4) for _ in range(rng.randint(1, 3))],
                    "num_patches_per_frame": p,
                },
            )
        else:
            name, params = (
                "timestamp-causal",
                {
                    "timestamps": [rng.randint(0, 6) for _ in range(f)],
                    "num_patches_per_frame": p,
                    "within_frame": rng.choice(["full", "causal"]),
                },
            )
        out.append((name, params, bs))
    return out  # fmt: skip


@pytest.mark.cuda
@pytest.mark.parametrize("case", range(120))
def test_the_block_kernel_writes_torchs_tensors_for_random_masks(case, monkeypatch):
    name, params, bs = _random_configs(120)[case]
    assert_block_kernel_gives_torchs_tensors(lambda: get_mask(name, **params), bs, monkeypatch)


def _prompt_ids() -> torch.Tensor:
    """Two prompts of 6,000 tokens: text, 3 frames of 1,560, text; the second left-padded."""
    ids = torch.full((2, 6000), -1)
    ids[0, 100:4780] = torch.arange(3).repeat_interleave(1560)
    ids[1, :900] = -2
    ids[1, 1000:5680] = torch.arange(3).repeat_interleave(1560)
    return ids


LARGE = {
    "chunk-causal-21x1560": ("chunk-causal", {"num_frames": 21, "num_patches_per_frame": 1560,
                             "frames_per_chunk": 3, "window_size": 2, "sink_chunks": 1}),
    "teacher-forcing-21x1560": ("teacher-forcing", {"num_frames": 21,
                                "num_patches_per_frame": 1560, "frames_per_chunk": 3}),
    "sliding-window-20x1560": ("sliding-window", {"num_frames": 20, "num_patches_per_frame": 1560,
                               "window_size": 4, "sink_frames": 1}),
    "prompt-causal-frame": ("prompt-causal-frame", {}),
    "prompt-sliding-window": ("prompt-sliding-window", {"window_size": 1, "sink_frames": 1}),
    "prompt-timestamp-causal": ("prompt-timestamp-causal", {"timestamps": [0, 2, 2],
                                "within_frame": "causal"}),
}  # fmt: skip


@pytest.mark.cuda
@pytest.mark.parametrize("bs", [(128, 128), (128, 64)])
@pytest.mark.parametrize("case", sorted(LARGE))
def test_the_block_kernel_writes_torchs_tensors_at_published_sizes_and_for_prompts(
    case, bs, monkeypatch
):
    name, params = LARGE[case]
    if name.startswith("prompt-"):
        params = {"frame_ids": _prompt_ids(), **params}
    assert_block_kernel_gives_torchs_tensors(lambda: get_mask(name, **params), bs, monkeypatch)


@pytest.mark.cuda
@pytest.mark.parametrize("route", ["kernel", "torch"])
def test_builds_queued_behind_a_busy_gpu_give_the_cpu_builds_tensors(route, monkeypatch):
    # A build copies its tables (and a prompt, in the same copy, its mask_mod's tensors) from
    # page-locked memory without waiting (flexframe.masks.block_kernel.HostArrays). With the GPU
    # held busy, every copy is still queued while the host frees its buffer and builds the next
    # mask: the memory must not be reused before its copy has run. Each mask is then compared
    # with its CPU build (the torch route on the host, itself held to create_block_mask by the
    # CPU tests), and a prompt's mask_mod, evaluated on the GPU, with its dense CPU mask.
    if route == "torch":
        monkeypatch.setenv("FLEXFRAME_BLOCK_KERNEL", "0")
    ids = _prompt_ids()
    makes = [
        lambda: get_mask("prompt-causal-frame", frame_ids=ids),
        lambda: get_mask("prompt-sliding-window", frame_ids=ids, window_size=1, sink_frames=1),
        lambda: get_mask("prompt-timestamp-causal", frame_ids=ids[1:], timestamps=[2, 0, 1]),
        lambda: get_mask("prompt-causal-frame", frame_ids=ids[:, 500:], q_len=700),
    ] + [lambda name=name, params=params: get_mask(name, **params)
         for name, params in (LARGE[k] for k in LARGE if not k.startswith("prompt-"))]  # fmt: skip
    torch.cuda.synchronize()
    torch.cuda._sleep(200_000_000)  # some 0.1 s of a spinning kernel ahead of every copy
    built = []
    for make in makes * 3:  # the same sizes again: the allocator's cached buffers come back
        spec = make()
        tensors = spec.tensors("cuda") if spec.relation is None else ()
        built.append((make, spec.block_mask("cuda"), tensors))
    torch.cuda.synchronize()
    for make, got, tensors in built:
        spec = make()
        want = spec.block_mask("cpu")
        for attr in BLOCK_TENSORS:
            assert torch.equal(getattr(got, attr).cpu(), getattr(want, attr)), (spec, attr)
        for t, w in zip(tensors, spec.tensors("cpu") if tensors else (), strict=True):
            assert torch.equal(t.cpu(), w), spec
        if spec.relation is None:  # a prompt: its mask_mod read the tensors sent with the tables
            b, q, kv = (torch.arange(n, device="cuda") for n in (spec.batch_size, *got.seq_lengths))
            dense = got.mask_mod(b[:, None, None], 0, q[None, :, None], kv[None, None, :])
            assert torch.equal(dense.cpu(), spec.to_dense("cpu")), spec


@pytest.mark.cuda
@pytest.mark.parametrize("patches", [128, 96])
def test_flash_keeps_the_skipped_blocks_of_a_block_mask_whose_mask_mod_is_trivial(patches):
    # The class of torch issue 188322: torch's FLASH lowering drops a BlockMask whose mask_mod
    # returns a constant (its template passes no block tensors when the mask graph is trivial).
    # Calling torch's flex_attention with BACKEND=FLASH directly on such a mask failed this
    # check for both patch sizes (H200, torch 2.11, flash-attn-4 4.0.0b36, 2026-12-01).
    # flexframe's policy must give the masked result: the Triton kernel where FLASH was its own
    # default, a refusal where the caller chose FLASH.
    from torch.nn.attention.flex_attention import BlockMask, noop_mask

    from flexframe.masks import dense_from_block_mask
    from flexframe.nn import flash_available

    if not flash_available():  # FLASH is FA4's kernel: a CUDA machine without it has no FLASH
        # to test; the GPU session installs FA4 first (../shared/notes/gpu-anchors.md)
        pytest.skip("FlashAttention-4 is not installed here")
    spec = get_mask("causal-frame", num_frames=6, num_patches_per_frame=patches)
    blocks = spec.block_mask("cuda")
    trivial = BlockMask(
        blocks.seq_lengths,
        blocks.kv_num_blocks, blocks.kv_indices, blocks.full_kv_num_blocks,
        blocks.full_kv_indices, blocks.q_num_blocks, blocks.q_indices,
        blocks.full_q_num_blocks, blocks.full_q_indices,
        BLOCK_SIZE=blocks.BLOCK_SIZE, mask_mod=noop_mask,
    )  # fmt: skip
    assert blocks.sparsity() > 0
    q, k, v = (torch.randn(1, 4, spec.q_len, 128, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))  # fmt: skip
    policy = KernelPolicy()
    assert policy.options("cuda", torch.bfloat16, 128) == {"BACKEND": "FLASH"}
    out = policy.attend(q, k, v, trivial)
    dense = dense_from_block_mask(trivial)  # full blocks and partial blocks whole
    want = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=dense
    )
    assert rel_err(out, want) < 1e-2
    everything = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert rel_err(out, everything) > 0.05  # the skipped blocks really were skipped
    with pytest.raises(ValueError, match="drops such a BlockMask"):
        policy.attend(q, k, v, trivial, kernel_options={"BACKEND": "FLASH"})
    # The same blocks under flexframe's mask_mod run FLASH and give the causal-frame result.
    frames = torch.arange(spec.q_len, device="cuda") // patches
    causal = frames[None, :] <= frames[:, None]
    want = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=causal
    )
    assert rel_err(policy.attend(q, k, v, blocks), want) < 1e-2
    assert policy.flash_signatures and not policy.flash_failed


def tuned_vs_plain_errors(
    name: str, head_dim: int, kernel_options=None, kernels=None
) -> dict[str, float]:
    """The decoder with ``kernel_options`` (None: flexframe's default for the inputs) against
    torch's default Triton kernel (``{}``), forward and backward in bf16."""
    return case_errors(
        name,
        head_dim,
        {"attention_backend": "flex", "kernel_options": kernel_options},
        {"attention_backend": "flex", "kernel_options": {}},
        kernels,
    )


@pytest.mark.cuda
def test_the_default_kernel_options_follow_the_documented_order():
    from flexframe.nn import default_kernel_options, flash_available

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


@pytest.mark.cuda
@pytest.mark.parametrize("name, head_dim", TUNED)
def test_the_tuned_default_gives_the_triton_result(name, head_dim):
    # The tuned default (FLASH where FlashAttention-4 is installed, else USE_TMA) against torch's
    # default Triton kernel. Where FLASH is the default it must really have run: no failure
    # handed over to Triton on the way. A policy of its own: no earlier test's FLASH shapes.
    policy = KernelPolicy()
    errors = tuned_vs_plain_errors(name, head_dim, kernels=policy)
    assert all(e < 1e-2 for e in errors.values()), errors
    assert not policy.flash_failed, policy.flash_failed
    flash = policy.options("cuda:0", torch.bfloat16, head_dim) == {"BACKEND": "FLASH"}
    assert bool(policy.flash_signatures) == flash


@pytest.mark.cuda
def test_the_tuned_default_serves_changing_lengths():
    # Frame counts that change from batch to batch. FLASH compiles one kernel per length for the
    # first max_flash_shapes lengths; the later ones go to the Triton default (lengths dynamic).
    # Each length against the sdpa backend, forward and backward.
    from flexframe.nn import flash_available

    policy = KernelPolicy()
    torch.manual_seed(0)
    flex, sdpa = twin_decoders(
        128, {"attention_backend": "flex"}, {"attention_backend": "sdpa"}, kernels=policy,
        dim=256, depth=1, num_heads=2, num_kv_heads=2,
    )  # fmt: skip
    limit = policy.max_flash_shapes
    for i, num_frames in enumerate(range(8, 8 + 2 * (limit + 2), 2)):
        spec = get_mask("causal-frame", num_frames=num_frames, num_patches_per_frame=64)
        x = torch.randn(1, spec.q_len, 256, device="cuda", dtype=torch.bfloat16)
        errors = pair_errors(flex, sdpa, spec, x)
        assert errors["out"] < 1e-2 and errors["grad_x"] < 1e-2, (num_frames, errors)
        if flash_available():
            assert len(policy.flash_signatures) == min(i + 1, limit), num_frames
    assert not policy.flash_failed, policy.flash_failed


if __name__ == "__main__":
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}")
    print("| mask | head_dim | out | grad x | worst param grad |")
    print("|---|---|---|---|---|")
    for name, head_dim in FLEX_VS_SDPA:
        e = flex_vs_sdpa_errors(name, head_dim)
        print(
            f"| {name} | {head_dim} | {e['out']:.2e} | {e['grad_x']:.2e} | "
            f"{e['grad_params_max']:.2e} |"
        )
    print()
    print("| mask | head_dim | tuned default vs Triton {}: out | grad x | worst param grad |")
    print("|---|---|---|---|---|")
    for name, head_dim in TUNED:
        e = tuned_vs_plain_errors(name, head_dim)
        print(
            f"| {name} | {head_dim} | {e['out']:.2e} | {e['grad_x']:.2e} | "
            f"{e['grad_params_max']:.2e} |"
        )
