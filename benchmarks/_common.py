"""Helpers shared by the benchmarks: environment, timing, useful FLOPs, JSON and Markdown.

The benchmarks are scripts (``python benchmarks/attention.py``), so this module is imported as
``_common`` from the scripts' own folder; it is not part of the ``flexframe`` package.

Useful FLOPs are counted on the exact mask area: ``4 * B * H * D`` per visible (query, key) pair
for the forward pass (two matmuls, a multiply and an add each), times 3.5 for forward+backward
(the backward counted as 2.5 forwards). The visible pairs are counted from a ``BlockMask``
without any ``N x N`` tensor: full blocks by their area, partial blocks by evaluating the
``mask_mod`` on those blocks only, a few at a time.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention.flex_attention import BlockMask

from flexframe import MaskSpec, get_mask
from flexframe.sampling import fast_slow_indices, merge_fast_slow_indices

PASSES = ("fwd", "fwdbwd")
FRAME_MASKS = ("causal-frame", "sliding-window", "timestamp-causal")
# The masks of autoregressive video generation (and packed videos), benchmarked at the settings
# of real models: --frames-per-chunk, --sink-frames and --num-videos.
GENERATION_MASKS = (
    "chunk-causal",
    "chunk-causal-window",
    "sliding-window-sinks",
    "teacher-forcing",
    "packed-causal-frame",
)
ALL_FRAME_MASKS = (*FRAME_MASKS, *GENERATION_MASKS)
# fwd + bwd, with the backward counted as 2.5 forwards (FlashAttention's convention).
FWDBWD_FACTOR = 3.5


# -- the benchmarked masks ---------------------------------------------------------------------
def fast_slow_timestamps(num_frames: int, merge_strategy: str = "concat") -> list[int]:
    """Timestamps of a merged fast/slow sequence of ``num_frames`` frames (half slow, half fast).

    The clip is ``4 * num_frames`` frames long; fast frames are its most recent stretch, slow
    frames are spread over all of it 8 apart, merged by ``merge_strategy``: the same layout the
    library's sampler produces, so the timestamp-causal mask is benchmarked on its real use.

    Example:
        >>> fast_slow_timestamps(4)
        [0, 8, 14, 15]
    """
    if num_frames == 1:
        return [0]
    num_slow = num_frames // 2
    num_fast = num_frames - num_slow
    fast_idx, slow_idx = fast_slow_indices(
        4 * num_frames, fast_stride=1, slow_stride=8, num_fast=num_fast, num_slow=num_slow
    )
    return merge_fast_slow_indices(fast_idx, slow_idx, merge_strategy).tolist()


def frame_spec(
    mask: str,
    num_frames: int,
    num_patches_per_frame: int,
    window_size: int,
    merge_strategy: str = "concat",
    *,
    frames_per_chunk: int = 3,
    sink_frames: int = 1,
    num_videos: int = 4,
) -> MaskSpec:
    """The registered frame mask ``mask`` with the benchmark's parameters, ``num_frames`` frames
    in all (teacher forcing: half clean, half noisy; packed: ``num_videos`` videos of near-equal
    length).

    ``chunk-causal-window`` is chunk-causal with a window of ``window_size`` chunks and one sink
    chunk (a long rollout's training mask); ``sliding-window-sinks`` is sliding-window with
    ``sink_frames`` sink frames.

    Example:
        >>> frame_spec("sliding-window", 4, 2, window_size=1).params["window_size"]
        1
        >>> frame_spec("teacher-forcing", 6, 2, window_size=1).q_len  # 3 frames, twice
        12
    """
    p = num_patches_per_frame
    if mask == "causal-frame":
        return get_mask(mask, num_frames=num_frames, num_patches_per_frame=p)
    if mask in ("sliding-window", "sliding-window-sinks"):
        sinks = {"sink_frames": min(sink_frames, num_frames)} if mask.endswith("sinks") else {}
        return get_mask(
            "sliding-window",
            num_frames=num_frames,
            num_patches_per_frame=p,
            window_size=window_size,
            **sinks,
        )
    if mask == "timestamp-causal":
        return get_mask(
            mask,
            timestamps=fast_slow_timestamps(num_frames, merge_strategy),
            num_patches_per_frame=p,
        )
    if mask in ("chunk-causal", "chunk-causal-window"):
        window = {"window_size": window_size, "sink_chunks": 1} if mask.endswith("window") else {}
        return get_mask(
            "chunk-causal",
            num_frames=num_frames,
            num_patches_per_frame=p,
            frames_per_chunk=frames_per_chunk,
            **window,
        )
    if mask == "teacher-forcing":
        if num_frames < 2:
            raise ValueError("teacher-forcing needs at least 2 frames (one clean, one noisy)")
        return get_mask(
            mask,
            num_frames=num_frames // 2,
            num_patches_per_frame=p,
            frames_per_chunk=frames_per_chunk,
        )
    if mask == "packed-causal-frame":
        videos = max(1, min(num_videos, num_frames))
        counts = [num_frames // videos + (i < num_frames % videos) for i in range(videos)]
        return get_mask(mask, frames_per_video=counts, num_patches_per_frame=p)
    raise ValueError(f"mask must be one of {ALL_FRAME_MASKS}, got {mask!r}")


def frame_options(args: Any) -> dict[str, int]:
    """The generation masks' keyword arguments of :func:`frame_spec` from parsed arguments."""
    return {
        "frames_per_chunk": getattr(args, "frames_per_chunk", 3),
        "sink_frames": getattr(args, "sink_frames", 1),
        "num_videos": getattr(args, "num_videos", 4),
    }


# -- environment -------------------------------------------------------------------------------
def _driver_version() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as err:
        return f"unknown ({type(err).__name__})"
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def env_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on: GPU, driver, torch, CUDA, Triton, host and date.

    Example:
        >>> info = env_info(torch.device("cpu"))
        >>> info["device"], info["gpu_name"]
        ('cpu', None)
    """
    info: dict[str, Any] = {
        "device": str(device),
        "gpu_name": None,
        "gpu_capability": None,
        "gpu_count": 0,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": None,
        "triton_version": None,
        "driver_version": None,
        "python_version": platform.python_version(),
        "hostname": platform.node(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        info["gpu_name"] = torch.cuda.get_device_name(device)
        info["gpu_capability"] = list(torch.cuda.get_device_capability(device))
        info["gpu_count"] = torch.cuda.device_count()
        info["cudnn_version"] = torch.backends.cudnn.version()
        info["driver_version"] = _driver_version()
    try:
        import triton

        info["triton_version"] = triton.__version__
    except ImportError:
        pass
    return info


def resolve_device(name: str) -> torch.device:
    """``"cuda"`` or ``"cpu"`` (or ``"cuda:1"``) as a device, refusing CUDA where there is none.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    device = torch.device(name)
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"--device must be 'cuda' or 'cpu' (or 'cuda:N'), got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"--device {name!r} asked for CUDA but torch {torch.__version__} sees no CUDA "
                "GPU; use --device cpu (with --quick for a smoke run)"
            )
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- timing ------------------------------------------------------------------------------------
def synchronizing_calls(fn: Callable[[], Any], times: int = 1) -> list[str]:
    """The calls that synchronize the host with the GPU while ``fn()`` runs ``times`` times, as
    ``torch.cuda.set_sync_debug_mode("warn")`` reports them (``file:line: message``); none
    without CUDA. torch's own note that the mode is a prototype is left out.

    Example:
        >>> synchronizing_calls(lambda: None)
        []
    """
    if not torch.cuda.is_available():
        fn()
        return []
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(times):
                fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    said = [(w, str(w.message)) for w in caught]
    return [f"{w.filename}:{w.lineno}: {m.splitlines()[0]}" for w, m in said
            if "synchron" in m and "prototype" not in m]  # fmt: skip


def bench(
    fn: Callable[[], Any],
    warmup_ms: float,
    rep_ms: float,
    device: torch.device,
    min_reps: int = 5,
) -> float:
    """Median time of one ``fn()`` call in milliseconds, warm-up excluded.

    On CUDA this is ``triton.testing.do_bench(fn, warmup, rep, return_mode="median")``: CUDA
    events around each call with the L2 cache flushed in between, so it measures GPU time. On the
    CPU it is a ``perf_counter`` loop over the same time budgets, ``min_reps`` calls at least.

    Example:
        >>> bench(lambda: sum(range(100)), 1, 5, torch.device("cpu")) > 0
        True
    """
    if device.type == "cuda":
        try:
            from triton.testing import do_bench
        except ImportError as err:
            raise RuntimeError(
                "timing on CUDA needs triton (triton.testing.do_bench); install triton or use "
                "the torch wheel that ships it"
            ) from err
        with torch.cuda.device(device):
            return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    return bench_wallclock(fn, warmup_ms, rep_ms, device, min_reps=min_reps)


def bench_wallclock(
    fn: Callable[[], Any],
    warmup_ms: float,
    rep_ms: float,
    device: torch.device,
    min_reps: int = 5,
    max_reps: int = 10_000,
) -> float:
    """Median wall-clock milliseconds of ``fn()`` with the device synchronized around each call.

    For host-bound work (building a BlockMask launches many small kernels and syncs), where the
    wall clock, not the GPU timeline, is what a caller waits for.

    Example:
        >>> bench_wallclock(lambda: None, 0, 1, torch.device("cpu")) >= 0
        True
    """
    synchronize(device)
    start = time.perf_counter()
    while (time.perf_counter() - start) * 1e3 < warmup_ms:
        fn()
        synchronize(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (
        len(times) < min_reps or (time.perf_counter() - start) * 1e3 < rep_ms
    ):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# -- useful FLOPs ------------------------------------------------------------------------------
def count_visible_pairs(
    block_mask: BlockMask,
    mask_mod: Callable[..., torch.Tensor],
    max_pairs_per_chunk: int = 1 << 24,
) -> int:
    """Exact number of visible (query, key) pairs of a ``B = H = 1`` BlockMask, without N x N.

    Full blocks count their area (clipped at the sequence ends); partial blocks are evaluated with
    ``mask_mod`` on their own positions only, ``max_pairs_per_chunk`` positions at a time, so
    memory stays at one chunk whatever the sequence length. ``mask_mod`` must broadcast over
    index tensors (the built-in masks do).

    Example:
        >>> from flexframe import get_mask
        >>> spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=100)
        >>> count_visible_pairs(spec.block_mask("cpu"), spec.mask_mod)  # 100*100 * (1+2+3)
        60000
    """
    kv_num = block_mask.kv_num_blocks
    if kv_num.shape[0] != 1 or kv_num.shape[1] != 1:
        raise ValueError(
            "count_visible_pairs needs a BlockMask of batch and head size 1 (one that "
            f"broadcasts), got kv_num_blocks of shape {tuple(kv_num.shape)}"
        )
    q_len, kv_len = block_mask.seq_lengths
    q_bs, kv_bs = block_mask.BLOCK_SIZE
    device = kv_num.device

    def extents(length: int, bs: int, num_blocks: int) -> torch.Tensor:
        starts = torch.arange(num_blocks, device=device, dtype=torch.int64) * bs
        return (length - starts).clamp(min=0, max=bs)

    def listed(num: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        num, idx = num[0, 0].to(torch.int64), idx[0, 0].to(torch.int64)  # [nq], [nq, nk]
        valid = torch.arange(idx.shape[-1], device=device)[None, :] < num[:, None]
        rows = torch.arange(idx.shape[0], device=device)[:, None].expand_as(idx)
        return rows[valid], idx[valid]

    total = 0
    if block_mask.full_kv_num_blocks is not None:
        rows, cols = listed(block_mask.full_kv_num_blocks, block_mask.full_kv_indices)
        q_ext = extents(q_len, q_bs, block_mask.full_kv_indices.shape[-2])
        kv_ext = extents(kv_len, kv_bs, block_mask.full_kv_indices.shape[-1])
        total += int((q_ext[rows] * kv_ext[cols]).sum())
    rows, cols = listed(block_mask.kv_num_blocks, block_mask.kv_indices)
    blocks_per_chunk = max(1, max_pairs_per_chunk // (q_bs * kv_bs))
    q_off = torch.arange(q_bs, device=device)
    kv_off = torch.arange(kv_bs, device=device)
    zero = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, rows.numel(), blocks_per_chunk):
        r = rows[start : start + blocks_per_chunk]
        c = cols[start : start + blocks_per_chunk]
        q_idx = (r[:, None] * q_bs + q_off[None, :])[:, :, None]  # [P, BQ, 1]
        kv_idx = (c[:, None] * kv_bs + kv_off[None, :])[:, None, :]  # [P, 1, BKV]
        inside = (q_idx < q_len) & (kv_idx < kv_len)
        # Padding positions are clamped before evaluation: mask_mods may index tensors by them.
        visible = mask_mod(zero, zero, q_idx.clamp(max=q_len - 1), kv_idx.clamp(max=kv_len - 1))
        total += int((visible & inside).sum())
    return total


def useful_flops(
    visible_pairs: int, batch: int, heads: int, head_dim: int, pass_name: str
) -> float:
    """Useful FLOPs of one attention call: ``4 * B * H * D * pairs``, times 3.5 for fwd+bwd.

    Example:
        >>> useful_flops(10, 1, 2, 8, "fwd"), useful_flops(10, 1, 2, 8, "fwdbwd")
        (640.0, 2240.0)
    """
    if pass_name not in PASSES:
        raise ValueError(f"pass_name must be one of {PASSES}, got {pass_name!r}")
    forward = 4.0 * batch * heads * head_dim * visible_pairs
    return forward * (FWDBWD_FACTOR if pass_name == "fwdbwd" else 1.0)


def block_mask_bytes(block_mask: BlockMask) -> int:
    """Bytes held by a BlockMask's index tensors (kv and q, partial and full).

    Example:
        >>> from flexframe import get_mask
        >>> block_mask_bytes(get_mask("token-causal", seq_len=256).block_mask("cpu"))
        96
    """
    names = (
        "kv_num_blocks",
        "kv_indices",
        "full_kv_num_blocks",
        "full_kv_indices",
        "q_num_blocks",
        "q_indices",
        "full_q_num_blocks",
        "full_q_indices",
    )
    total = 0
    for name in names:
        tensor = getattr(block_mask, name, None)
        if tensor is not None:
            total += tensor.numel() * tensor.element_size()
    return total


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` (Frobenius norms over the whole tensor, summed in float64).

    Example:
        >>> relative_error(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]))
        0.0
    """
    if out.shape != ref.shape:
        raise ValueError(f"shapes differ: out {tuple(out.shape)} vs ref {tuple(ref.shape)}")
    # Differences in fp32 (rounding ~1e-7, far below any bound used here) keep the memory at
    # fp32 copies at 64K tokens; the sums of squares run in float64.
    diff = torch.linalg.vector_norm(out.float() - ref.float(), dtype=torch.float64)
    denom = torch.linalg.vector_norm(ref.float(), dtype=torch.float64)
    if not torch.isfinite(diff):
        return math.inf
    return float(diff / denom) if denom > 0 else float(diff)


# -- output ------------------------------------------------------------------------------------
def write_json(path: str | os.PathLike, doc: dict[str, Any]) -> None:
    """Write ``doc`` as indented JSON, atomically (a crash mid-run leaves the last good file).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.json"
        >>> write_json(p, {"rows": []}); json.loads(p.read_text())
        {'rows': []}
    """
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (torch.device, torch.dtype)):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON: {value!r}")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; ``None`` prints as ``-``.

    Example:
        >>> print(markdown_table(["a", "b"], [[1, None]]))
        | a | b |
        |---|---|
        | 1 | - |
    """
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells for {len(headers)} headers: {row!r}")
        cells = ["-" if cell is None else str(cell).replace("|", "\\|") for cell in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt_bytes(num_bytes: float | None) -> str | None:
    """Bytes in binary units (``"1.5 GiB"``); ``None`` stays ``None``.

    Example:
        >>> fmt_bytes(3 * 2**29), fmt_bytes(100)
        ('1.5 GiB', '100 B')
    """
    if num_bytes is None:
        return None
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(num_bytes) >= size:
            return f"{num_bytes / size:.1f} {unit}"
    return f"{int(num_bytes)} B"


def fmt_num(value: float | None, digits: int = 3) -> str | None:
    """A number with ``digits`` significant digits (``None`` stays ``None``).

    Example:
        >>> fmt_num(412.345), fmt_num(0.0012345), fmt_num(None)
        ('412', '0.00123', None)
    """
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def error_message(err: BaseException, limit: int = 600) -> str:
    """``"Type: message"`` on one line, cut at ``limit`` characters (the start says the most).

    Example:
        >>> error_message(ValueError("bad\\nthing"))
        'ValueError: bad thing'
    """
    text = " ".join(str(err).split())
    message = f"{type(err).__name__}: {text}"
    return message if len(message) <= limit else message[: limit - 3] + "..."


def oom_request(err: BaseException) -> str | None:
    """The size an out-of-memory error asked for (``"128.00 GiB"``), if its message says.

    Example:
        >>> oom_request(RuntimeError("CUDA out of memory. Tried to allocate 128.00 GiB. GPU 0"))
        '128.00 GiB'
    """
    text = str(err)
    marker = "Tried to allocate "
    at = text.find(marker)
    if at < 0:
        return None
    rest = text[at + len(marker) :].split()
    return " ".join(rest[:2]).rstrip(".") if len(rest) >= 2 else None


def is_oom(err: BaseException) -> bool:
    """Whether ``err`` is an out-of-memory error (CUDA's, or the CPU allocator's)."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err)
    return "out of memory" in text.lower() or "DefaultCPUAllocator: can't allocate" in text
