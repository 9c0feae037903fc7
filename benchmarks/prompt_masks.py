"""Prompt masks inside a video LLM: building them, and the text decoder's attention under them.

The prompt is a video LLM's (``text | 20 frames of 1,560 tokens | text``, about 32K tokens by
default: Qwen2-VL's 7B layout of a 448x780 video), with one row per batch entry. Two parts:

- **Building the mask** (median wall-clock ms, the device synchronized around each call,
  warm-up excluded; every call builds from the frame ids, nothing cached):

  - ``flexframe closed form (flex)``: ``get_mask("prompt-causal-frame", frame_ids=ids)
    .block_mask(device)``, what ``enable_frame_masks`` builds at each forward for flex (on CUDA
    its tensors come from one Triton launch, ``flexframe.masks.block_kernel``);
  - ``flexframe closed form, torch route (flex)``: the same grids formed by torch operations
    (the route before that kernel, and the CPU's);
  - ``flexframe dense (sdpa)``: the same spec's ``[B, L, L]`` bool mask, what it builds for sdpa;
  - ``transformers create_causal_mask (flex|sdpa)``: ``create_causal_mask(...,
    block_sequence_ids=...)``, transformers' own causal-frame prompt mask (flex: its compiled
    ``create_block_mask``; sdpa: the dense 4-D mask);
  - the sliding-window and timestamp-causal prompt masks in closed form (transformers has none).

  Before timing, flexframe's masks are compared with transformers' (the BlockMask block for
  block, the dense mask element for element): a row that disagrees is FAILED and not timed.

- **Attention** (median GPU ms from ``triton.testing.do_bench``; on the CPU wall clock): one
  layer's ``[B, H, L, D]`` bf16 attention (28 query and 4 key/value heads of 128, Qwen2-VL-7B's)
  under the causal-frame prompt mask: flex through flexframe's kernel policy (FLASH where
  available, the default options otherwise) against sdpa with the dense bool mask, and sdpa's
  token-causal ``is_causal`` (no mask) as the plain LLM's reference. Each output is checked
  against sdpa's dense-mask output (relative error < 2e-2 in bf16) before timing.

Results go to a JSON file (card, torch, transformers, date, every row). Examples::

    python benchmarks/prompt_masks.py --out results/prompt_masks.json
    python benchmarks/prompt_masks.py --smoke --device cpu --out /tmp/prompt_masks.json
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import _common as C
import torch

from flexframe import get_mask
from flexframe.masks.closed_form import block_mask_from_grids
from flexframe.masks.prompt import TEXT
from flexframe.nn.kernels import KERNELS, default_kernel_options

MASKS = (
    ("prompt-causal-frame", {}),
    ("prompt-sliding-window", {"window_size": 4, "sink_frames": 1}),
    ("prompt-timestamp-causal", {"within_frame": "full"}),
)


def torch_route(spec: Any, device: torch.device | str, bs: tuple[int, int] = (128, 128)) -> Any:
    """A prompt spec's closed-form BlockMask by the torch route (the grids formed by torch
    operations: the route before the block kernel, and the CPU's)."""
    return block_mask_from_grids(
        *spec.block_grids(bs, device), (spec.q_len, spec.kv_len), bs, spec.mask_mod_for(device)
    )


def prompt_ids(
    batch: int, frames: int, tokens_per_frame: int, text: tuple[int, int]
) -> torch.Tensor:
    """``[B, L]`` frame ids: ``text[0]`` text tokens, the frames, ``text[1]`` text tokens."""
    row = [TEXT] * text[0]
    for k in range(frames):
        row += [k] * tokens_per_frame
    row += [TEXT] * text[1]
    return torch.tensor([row] * batch)


def _hf_config(implementation: str):
    from transformers import Qwen2VLTextConfig

    config = Qwen2VLTextConfig(num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                               hidden_size=32, intermediate_size=32, vocab_size=16)  # fmt: skip
    config._attn_implementation = implementation
    return config


def hf_mask(ids: torch.Tensor, implementation: str, device: torch.device):
    """transformers' causal-frame prompt mask: ``block_sequence_ids`` over the frames."""
    from transformers.masking_utils import create_causal_mask

    groups = torch.where(ids >= 0, ids, -1).to(device)
    embeds = torch.empty(ids.shape[0], ids.shape[1], 0, device=device)
    mask = torch.ones(ids.shape, dtype=torch.long, device=device)
    return create_causal_mask(
        _hf_config(implementation), embeds, mask, None, block_sequence_ids=groups
    )


def _same_blocks(ours, theirs) -> str | None:
    for attr in ("kv_num_blocks", "full_kv_num_blocks"):
        a, b = getattr(ours, attr), getattr(theirs, attr)
        if not torch.equal(a.expand_as(b) if a.dim() == b.dim() else a, b):
            return f"{attr} differ"
    if not torch.equal(ours.to_dense(), theirs.to_dense().expand_as(ours.to_dense())):
        return "blocks differ"
    return None


def build_rows(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    ids = prompt_ids(
        args.batch, args.frames, args.tokens_per_frame, (args.text_before, args.text_after)
    )
    timestamps = list(range(args.frames))[::-1]  # frames shown last-first: out of time order
    rows = []

    def row(name: str, fn, check=None) -> None:
        error = None
        try:
            out = fn()
            error = check(out) if check is not None else None
            ms = None if error else C.bench_wallclock(fn, args.warmup_ms, args.rep_ms, device)
        except Exception as err:  # noqa: BLE001  (a failed row is reported, not fatal)
            error, ms = C.error_message(err), None
        rows.append({"what": name, "ms": ms, "status": "FAILED: " + error if error else "ok"})
        print(f"  {name:48s} {'-' if ms is None else f'{ms:9.3f} ms'}  {rows[-1]['status']}")

    def spec_of(name: str, params: dict[str, Any]):
        extra = {"timestamps": timestamps} if name == "prompt-timestamp-causal" else {}
        return get_mask(name, frame_ids=ids, **params, **extra)

    def closed(name: str, params: dict[str, Any]):
        return lambda: spec_of(name, params).block_mask(device)

    def closed_torch():
        return torch_route(get_mask(MASKS[0][0], frame_ids=ids), device)

    hf_flex = hf_mask(ids, "flex_attention", device)  # compiles create_block_mask once
    hf_sdpa = hf_mask(ids, "sdpa", device)
    row("flexframe closed form (flex)", closed(*MASKS[0]), lambda bm: _same_blocks(bm, hf_flex))
    row("flexframe closed form, torch route (flex)", closed_torch,
        lambda bm: _same_blocks(bm, hf_flex))  # fmt: skip
    row(
        "flexframe dense (sdpa)",
        lambda: get_mask("prompt-causal-frame", frame_ids=ids).to_dense(device),
        lambda d: None if torch.equal(d[:, None], hf_sdpa) else "dense masks differ",
    )
    row("transformers create_causal_mask (flex)", lambda: hf_mask(ids, "flex_attention", device))
    row("transformers create_causal_mask (sdpa)", lambda: hf_mask(ids, "sdpa", device))
    for name, params in MASKS[1:]:  # checked against the torch route (transformers has none)
        reference = torch_route(spec_of(name, params), device)
        row(f"flexframe closed form {name[7:]} (flex)", closed(name, params),
            lambda bm, reference=reference: _same_blocks(bm, reference))  # fmt: skip
    return rows


def attention_rows(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    ids = prompt_ids(
        args.batch, args.frames, args.tokens_per_frame, (args.text_before, args.text_after)
    )
    spec = get_mask("prompt-causal-frame", frame_ids=ids)
    block_mask = spec.block_mask(device)
    dense = spec.to_dense(device)[:, None]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    b, n, h, hk, d = args.batch, ids.shape[1], args.heads, args.kv_heads, args.head_dim
    q = torch.randn(b, h, n, d, device=device, dtype=dtype, generator=gen)
    k = torch.randn(b, hk, n, d, device=device, dtype=dtype, generator=gen)
    v = torch.randn(b, hk, n, d, device=device, dtype=dtype, generator=gen)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    # sdpa gets the key/value heads repeated, as transformers gives them with a mask (its fused
    # kernels take no GQA with a mask).
    k_rep, v_rep = (t.repeat_interleave(h // hk, dim=1) for t in (k, v))
    reference = sdpa(q, k_rep, v_rep, attn_mask=dense)
    options = default_kernel_options(device, dtype, d)
    candidates = {
        f"flex, frame mask ({options or 'default options'})": lambda: KERNELS.attend(
            q, k, v, block_mask, enable_gqa=True
        ),
        "sdpa, dense frame mask": lambda: sdpa(q, k_rep, v_rep, attn_mask=dense),
        "sdpa, is_causal (token-causal, no mask)": lambda: sdpa(q, k_rep, v_rep, is_causal=True),
    }
    rows = []
    for name, fn in candidates.items():
        error, ms, rel = None, None, None
        try:
            out = fn()
            rel = C.relative_error(out, reference)
            if "is_causal" not in name and rel > 2e-2:
                error = f"relative error {rel:.2e} against sdpa's dense-mask output"
            ms = None if error else C.bench(fn, args.warmup_ms, args.rep_ms, device)
        except Exception as err:  # noqa: BLE001
            error = C.error_message(err)
        rows.append({"what": name, "ms": ms, "relative_error": rel,
                     "status": "FAILED: " + error if error else "ok"})  # fmt: skip
        print(f"  {name:48s} {'-' if ms is None else f'{ms:9.3f} ms'}  {rows[-1]['status']}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the JSON results file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="a small prompt (CPU, seconds)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--tokens-per-frame", type=int, default=1560)
    parser.add_argument("--text-before", type=int, default=600)
    parser.add_argument("--text-after", type=int, default=200)
    parser.add_argument("--heads", type=int, default=28)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--warmup-ms", type=float, default=200)
    parser.add_argument("--rep-ms", type=float, default=1000)
    parser.add_argument(
        "--build-only", action="store_true", help="the builds only (A/B runs of a builder)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.frames, args.tokens_per_frame, args.text_before, args.text_after = 4, 60, 30, 10
        args.heads, args.kv_heads, args.head_dim = 4, 2, 32
        args.warmup_ms, args.rep_ms = 5, 20
    device = C.resolve_device(args.device)
    import transformers

    tokens = args.text_before + args.frames * args.tokens_per_frame + args.text_after
    print(f"prompt: {args.batch} x {tokens} tokens ({args.frames} frames of "
          f"{args.tokens_per_frame}) on {device}")  # fmt: skip
    print("building the mask:")
    build = build_rows(args, device)
    attention = []
    if not args.build_only:
        print("attention:")
        attention = attention_rows(args, device)
    doc = {
        "benchmark": "prompt_masks",
        "env": {**C.env_info(device), "transformers_version": transformers.__version__},
        "config": {**vars(args), "tokens": tokens},
        "build": build,
        "attention": attention,
    }
    C.write_json(args.out, doc)
    print(f"wrote {args.out}")
    failed = [r["what"] for r in build + attention if r["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
