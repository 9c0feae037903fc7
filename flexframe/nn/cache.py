"""`FrameKVCache`: per-layer key/value buffers of whole frames, laid out as a training mask says.

The layout (sinks and a ring, or linear up to ``max_frames``), the slot table the step's
mask_mod reads, and the step's BlockMask and dense mask; ``flexframe.nn.streaming`` explains
the design and the masks that stream, ``flexframe.nn.cache_step`` the step.

Example:
    >>> from flexframe import FlexFrameDecoder
    >>> cache = FrameKVCache.for_mask("sliding-window", FlexFrameDecoder(dim=16, depth=2,
    ...     num_heads=2), mask_params={"num_frames": 8, "num_patches_per_frame": 4,
    ...     "window_size": 2, "sink_frames": 1})
    >>> cache
    FrameKVCache(sliding-window: 4 frame slots (ring of 3 after 1 sink(s)), 0 frames appended, ...)
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn.attention.flex_attention import BlockMask

from flexframe._checks import check_bool, check_int, normalize_block_size, resolve_device
from flexframe._vocab import DEFAULT_BLOCK_SIZE
from flexframe.masks import MaskSpec
from flexframe.masks.cache import LRUCache
from flexframe.masks.closed_form import block_mask_from_grids
from flexframe.masks.spec import MaskMod
from flexframe.nn._cache_util import (
    _describe,
    _host_tensor,
    _identity,
    _module_shape,
    _progressions,
    _rule_params,
    _with_code,
    _zeros,
)
from flexframe.nn.attention import Attention, MaskLike, check_tokens, resolve_mask
from flexframe.nn.cache_step import CacheStep, StepMask
from flexframe.nn.graphs import StepGraphs
from flexframe.nn.kernels import resolve_backend
from flexframe.nn.positions import FramePositions
from flexframe.nn.streaming import StreamingRule, step_block_grids, step_mask_mod, streaming_rule

if TYPE_CHECKING:
    from flexframe.nn.decoder import FlexFrameDecoder


_ONE_CHUNK = (
    "a 'teacher-forcing' cache steps one chunk at a time (frames_per_chunk={fpc}), {what}: "
    "a noisy chunk runs as a reading step (append=False) that sees the cached clean chunks "
    "before it and itself, never another noisy chunk, and the clean chunk is appended after it. "
    "To append several clean chunks in one step, stream under 'chunk-causal' with the same "
    "parameters (what the clean half of teacher-forcing is)"
)


class FrameKVCache:
    """Per-layer key/value buffers of whole frames, laid out and read as a training mask says.

    Build it with :meth:`for_mask`; run a step with ``decoder(x_chunk, cache=cache)`` (or
    ``attention(x_chunk, cache=cache)`` for a lone :class:`~flexframe.nn.Attention`). A step of
    ``c`` frames appends them (``append=True``, the default) or only reads the cache
    (``append=False``: a denoising pass). See the module docstring for the layout.

    Attributes:
        spec: the mask it was built for.
        rule: its :class:`StreamingRule`.
        batch_size, device, dtype: what every step's input must have.
        capacity_frames: slots, one frame each; ``capacity_tokens = capacity_frames * P``.
        chunk_frames: the largest step, in frames.
        max_frames: the most frames that can be appended (``None``: no limit, a ring).
        is_ring: whether the slots past the sinks are a ring buffer.

    Example:
        >>> from flexframe import FlexFrameDecoder, get_mask
        >>> decoder = FlexFrameDecoder(dim=32, depth=1, num_heads=2).eval()
        >>> spec = get_mask("chunk-causal", num_frames=12, num_patches_per_frame=4,
        ...                 frames_per_chunk=3, window_size=1, sink_chunks=1)
        >>> cache = FrameKVCache.for_mask(spec, decoder)
        >>> cache.capacity_frames, cache.is_ring, cache.max_frames  # 3 sinks + ring of 3 + 3
        (9, True, None)
        >>> with torch.no_grad():
        ...     y = decoder(torch.randn(1, 3 * 4, 32), cache=cache)  # one chunk of 3 frames
        >>> y.shape, cache.frames, cache.slot_frames.tolist()
        (torch.Size([1, 12, 32]), 3, [0, 1, 2, -1, -1, -1, -1, -1, -1])
    """

    def __init__(
        self,
        spec: MaskSpec,
        rule: StreamingRule,
        module: nn.Module,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        backend: str,
        num_heads: int | None = None,
        *,
        batch_size: int,
        capacity_frames: int,
        ring: int | None,
        max_frames: int | None,
        chunk_frames: int,
        device: torch.device,
        dtype: torch.dtype,
        block_size: tuple[int, int],
        cuda_graphs: bool = False,
    ) -> None:
        self.spec, self.rule = spec, rule
        self._module = weakref.ref(module)
        self.backend = backend
        self.batch_size, self.device, self.dtype = batch_size, device, dtype
        self.num_patches_per_frame = rule.num_patches_per_frame
        self.capacity_frames, self.chunk_frames, self.max_frames = (
            capacity_frames,
            chunk_frames,
            max_frames,
        )
        self.capacity_tokens = capacity_frames * self.num_patches_per_frame
        self.block_size = block_size
        self._ring, self._sinks = ring, rule.sink_frames
        shape = (batch_size, kv_heads, self.capacity_tokens, head_dim)
        q_bs, kv_bs = block_size
        # Where a kernel skips its bound checks (torch's Triton kernel at lengths that are
        # multiples of 128), it loads whole blocks, past the buffer's last key for a padded
        # last block; a zero tail keeps those loads inside the storage and finite (the
        # mask_mod hides them: a NaN there would still poison the sum, 0 * NaN).
        tail = (-self.capacity_tokens % kv_bs) * head_dim
        self._keys = [_zeros(shape, tail, device, dtype) for _ in range(num_layers)]
        self._values = [_zeros(shape, tail, device, dtype) for _ in range(num_layers)]
        self._slots = np.full(capacity_frames, -1, dtype=np.int64)  # host copy of the table
        # The device table: the step's frames, then the frame in each slot, each part padded to
        # whole blocks of tokens: [f0, f0 + 1, .. | slot 0, slot 1, .., -1, ..].
        p = self.num_patches_per_frame
        largest_step = chunk_frames if ring is not None else capacity_frames
        self._q_entries = -(-largest_step * p // q_bs) * q_bs // p + 1
        self._kv_entries = -(-capacity_frames * p // kv_bs) * kv_bs // p + 1
        self._table = torch.full(
            (self._q_entries + self._kv_entries,), -1, dtype=torch.int64, device=device
        )
        # What the device table holds (it is written with scalar kernels, see _send_table).
        self._sent_f0: int | None = None
        self._sent_slots = self._slots.copy()
        self._iota = torch.arange(
            max(self._q_entries, capacity_frames), dtype=torch.int64, device=device
        )
        self._mask_mod = step_mask_mod(self._table, p, self._q_entries, rule.frame_rule)
        # What a compiled step specializes on, but the step size: see _step_mask_mod.
        self._setting = (
            rule.name, _rule_params(rule), p, self._q_entries, self._kv_entries, shape,
            num_heads, str(device), dtype, block_size,
        )  # fmt: skip
        self._step_mods: dict[int, MaskMod] = {}
        period = 1 if ring is None else ring // math.gcd(ring, chunk_frames)
        self._masks = LRUCache(maxsize=2 if ring is None else min(64, period + 4))
        self._local: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._filled = 0  # slots 0 .. _filled - 1 have held a frame (sdpa attends over them)
        self.frames = 0
        """Frames appended so far: the next step starts at this frame."""
        self._open: CacheStep | None = None
        self._closed_at: int | None = None  # a partial chunk was appended at this frame
        self.graphs: StepGraphs | None = None
        """The recorded attention calls (``cuda_graphs=True``), else ``None``."""
        if cuda_graphs:
            if backend != "flex":
                raise ValueError(
                    f"cuda_graphs=True records flex_attention calls, but this cache's module "
                    f"runs attention_backend={backend!r}; use attention_backend='flex' (or 'auto' "
                    "on a GPU), or leave cuda_graphs off"
                )
            self.graphs = StepGraphs(device, max_graphs=4 * num_layers + 8)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def for_mask(
        cls,
        spec: MaskLike,
        module: FlexFrameDecoder | Attention,
        batch_size: int = 1,
        *,
        max_frames: int | None = None,
        chunk_frames: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        block_size: int | tuple[int, int] = DEFAULT_BLOCK_SIZE,
        cuda_graphs: bool = False,
        mask_params: Mapping[str, Any] | None = None,
    ) -> FrameKVCache:
        """The cache for streaming ``module`` (a decoder or one attention) under ``spec``.

        Args:
            spec: the training mask (a ``MaskSpec``, a registry name with ``mask_params``, or a
                mapping ``{"name": ..., **params}``); refused when it has no streaming form.
            module: the :class:`~flexframe.FlexFrameDecoder` (one buffer pair a layer) or the
                :class:`~flexframe.nn.Attention` the cache is for; a step with another is refused.
            batch_size: ``B`` of every step.
            max_frames: the most frames that can be appended. Without a window it sizes the
                buffers (default: the mask's ``num_frames``). With a window the cache is a
                ring of ``sinks + window + chunk_frames`` frame slots that streams past the
                mask's ``num_frames`` for good (default: no limit), unless that ring would
                be larger than the mask's ``num_frames`` (a window as long as the mask): then
                the window drops no frame within the mask, and the cache holds the mask's
                frames, linearly, up to ``max_frames=num_frames`` by default, so a long window
                never allocates more than the mask covers unless asked. A ``max_frames`` given
                limits appends, and below the ring's size gives a linear layout of
                ``max_frames`` slots.
            chunk_frames: the largest step in frames (default: ``frames_per_chunk`` for
                chunk-causal and teacher-forcing, 1 for frame masks); a ring holds the window
                plus one such chunk. ``teacher-forcing`` takes ``frames_per_chunk`` only: its
                noisy chunk runs as a reading step of its own, and a step of two noisy chunks
                would let one see the other, which the training mask forbids.
            device, dtype: of the buffers (default: the module's parameters').
            block_size: the step BlockMask's block size (FlexAttention's 128 by default).
            cuda_graphs: replay each step's flex_attention call from a recorded CUDA graph
                (``flexframe.nn.graphs``): the same kernels without their host cost (a CUDA
                device and the flex backend; calls that need autograd run as usual). Up to
                ``4 * layers + 8`` graphs are kept, each with its own memory pool.
            mask_params: the mask's parameters when ``spec`` is a name.

        Example:
            >>> from flexframe import FlexFrameDecoder
            >>> decoder = FlexFrameDecoder(dim=16, depth=2, num_heads=2)
            >>> cache = FrameKVCache.for_mask("causal-frame", decoder, max_frames=10,
            ...     mask_params={"num_frames": 4, "num_patches_per_frame": 5})
            >>> cache.capacity_frames, cache.capacity_tokens, cache.memory_bytes
            (10, 50, 12800)
        """
        resolved = resolve_mask(spec, mask_params)
        rule = streaming_rule(resolved)
        assert isinstance(resolved, MaskSpec)  # streaming_rule refuses bare BlockMasks
        layers, config = _module_shape(module)
        b = check_int("batch_size", batch_size, minimum=1)
        fpc = rule.frames_per_chunk
        c = fpc if chunk_frames is None else check_int("chunk_frames", chunk_frames, minimum=1)
        if c % fpc:
            raise ValueError(
                f"chunk_frames must be a multiple of frames_per_chunk={fpc} for {resolved.name!r} "
                f"(a step holds whole chunks), got chunk_frames={c}"
            )
        if resolved.name == "teacher-forcing" and c != fpc:
            raise ValueError(_ONE_CHUNK.format(fpc=fpc, what=f"got chunk_frames={c}"))
        limit = None if max_frames is None else check_int("max_frames", max_frames, minimum=1)
        mask_frames = resolved.q_len // rule.num_patches_per_frame
        if resolved.name == "teacher-forcing":  # [clean | noisy]: num_frames frames each
            mask_frames //= 2
        ring: int | None = None
        if rule.window_frames is None:
            capacity = limit = mask_frames if limit is None else limit
        else:
            ring = rule.window_frames + c
            capacity = rule.sink_frames + ring
            if limit is None and capacity > mask_frames:
                limit = mask_frames  # the window drops nothing within the mask: hold its frames
            if limit is not None and limit <= capacity:
                capacity, ring = limit, None
        parameter = next(iter(module.parameters()), None)
        if device is None:
            target = parameter.device if parameter is not None else torch.device("cpu")
        else:
            target = resolve_device(device)
        if dtype is None:
            dtype = parameter.dtype if parameter is not None else torch.get_default_dtype()
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        backend = resolve_backend(config.attention_backend, target)
        return cls(
            resolved,
            rule,
            module,
            layers,
            config.kv_heads,
            config.head_size,
            backend,
            config.num_heads,
            batch_size=b,
            capacity_frames=capacity,
            ring=ring,
            max_frames=limit,
            chunk_frames=c,
            device=target,
            dtype=dtype,
            block_size=normalize_block_size(block_size),
            cuda_graphs=check_bool("cuda_graphs", cuda_graphs),
        )

    # -- state --------------------------------------------------------------------------------
    @property
    def module(self) -> nn.Module | None:
        """The decoder or attention this cache is for (``None`` once it is gone)."""
        return self._module()

    @property
    def is_ring(self) -> bool:
        return self._ring is not None

    @property
    def slot_frames(self) -> torch.Tensor:
        """``[capacity_frames]`` int64 (a CPU copy): the frame in each slot, ``-1`` for none."""
        return torch.from_numpy(self._slots.copy())

    @property
    def memory_bytes(self) -> int:
        """Bytes of the key and value buffers, all layers (not counting the zero tail each
        buffer's storage has up to the end of its last key block, under one block of keys)."""
        return sum(t.numel() * t.element_size() for t in (*self._keys, *self._values))

    def keys(self, layer: int = 0) -> torch.Tensor:
        """Layer ``layer``'s key buffer ``[B, H_kv, capacity_tokens, head_dim]`` (slot ``s`` is
        tokens ``s * P .. (s + 1) * P - 1``)."""
        return self._keys[layer]

    def values(self, layer: int = 0) -> torch.Tensor:
        """Layer ``layer``'s value buffer, laid out as :meth:`keys`."""
        return self._values[layer]

    def slot_of(self, frame: int) -> int:
        """The slot frame ``frame`` is written to.

        Example:
            >>> from flexframe import FlexFrameDecoder
            >>> cache = FrameKVCache.for_mask("sliding-window", FlexFrameDecoder(dim=8, depth=1,
            ...     num_heads=2), mask_params={"num_frames": 9, "num_patches_per_frame": 1,
            ...     "window_size": 1, "sink_frames": 1})
            >>> [cache.slot_of(f) for f in range(6)]  # frame 0 is the sink; a ring of 2 after it
            [0, 1, 2, 1, 2, 1]
        """
        frame = check_int("frame", frame, minimum=0)
        if self._ring is None or frame < self._sinks:
            return frame
        return self._sinks + (frame - self._sinks) % self._ring

    def reset(self) -> None:
        """Empty the cache (the buffers are kept): the next step starts at frame 0."""
        if self._open is not None:
            raise RuntimeError("a cache step is in progress: finish it before reset()")
        self._slots[:] = -1
        self.frames, self._filled, self._closed_at = 0, 0, None

    def __repr__(self) -> str:
        layout = f"ring of {self._ring} after {self._sinks} sink(s)" if self.is_ring else "linear"
        return (
            f"FrameKVCache({self.spec.name}: {self.capacity_frames} frame slots ({layout}), "
            f"{self.frames} frames appended, B={self.batch_size}, {self.dtype}, {self.device})"
        )

    # -- steps --------------------------------------------------------------------------------
    def check_module(self, module: nn.Module) -> None:
        """Refuse a step through another module than the one this cache was built for."""
        if self._module() is not module:
            raise ValueError(
                f"this cache was built for another {type(module).__name__} (its buffers hold that "
                "model's keys and values); build one for this module with "
                "FrameKVCache.for_mask(spec, module, ...)"
            )

    def check_mask(self, mask: MaskLike, mask_params: Mapping[str, Any] | None = None) -> None:
        """Refuse a mask other than the cache's: a mask given with a step must be the one the
        cache was built for, the same name, lengths (so ``num_frames``), patches and rule
        parameters (a parameter left at its default counts as given with it).

        Example:
            >>> from flexframe import FlexFrameDecoder, get_mask
            >>> cache = FrameKVCache.for_mask("causal-frame", FlexFrameDecoder(dim=8, depth=1,
            ...     num_heads=2), mask_params={"num_frames": 4, "num_patches_per_frame": 2})
            >>> cache.check_mask("causal-frame", {"num_frames": 4, "num_patches_per_frame": 2})
            >>> cache.check_mask(get_mask("causal-frame", num_frames=6, num_patches_per_frame=2))
            Traceback (most recent call last):
            ...
            ValueError: this cache streams causal-frame(num_frames=4, ...
        """
        resolved = resolve_mask(mask, mask_params)
        try:
            other = streaming_rule(resolved)
        except ValueError as err:
            raise ValueError(f"the mask given with the cache is not the cache's: {err}") from err
        assert isinstance(resolved, MaskSpec)  # streaming_rule refuses bare BlockMasks
        if _identity(resolved, other) != _identity(self.spec, self.rule):
            raise ValueError(
                f"this cache streams {_describe(self.spec)} but the step was given "
                f"{_describe(resolved)}: a cache serves the mask it was built for (leave the "
                "mask out of a cache step, or give that one); build another cache with "
                "FrameKVCache.for_mask for this mask"
            )

    def check_input(self, x: torch.Tensor) -> int:
        """Check a step's input ``[B, c * P, dim]`` against the cache; returns ``c``."""
        p = self.num_patches_per_frame
        if x.shape[0] != self.batch_size:
            raise ValueError(
                f"x_chunk has batch size {x.shape[0]} but this cache holds {self.batch_size} "
                "sequence(s) (batch_size); build a cache with that batch_size"
            )
        if x.shape[1] == 0 or x.shape[1] % p:
            raise ValueError(
                f"x_chunk holds {x.shape[1]} tokens, not a whole number of frames of "
                f"num_patches_per_frame={p} tokens; a step is c whole frames, [B, c * {p}, dim]"
            )
        if x.device != self.device:
            raise ValueError(
                f"x_chunk is on {x.device} but the cache's buffers are on {self.device}; move one "
                "of them (a cache is built on its module's device by default)"
            )
        autocast = torch.is_autocast_enabled(x.device.type)
        if x.dtype != self.dtype and not autocast:
            raise TypeError(
                f"x_chunk is {x.dtype} but the cache holds {self.dtype} keys and values; cast "
                f"x_chunk, or build the cache with dtype={x.dtype}"
            )
        return x.shape[1] // p

    def begin(self, num_frames: int, *, append: bool = True) -> CacheStep:
        """Start a step of ``num_frames`` frames at frame :attr:`frames`: place the chunk in its
        slots and set the step's mask. Use it as a context manager, or call
        :meth:`CacheStep.finish` (the decoder and attention do this for you).

        Example:
            >>> from flexframe import FlexFrameDecoder
            >>> cache = FrameKVCache.for_mask("causal-frame", FlexFrameDecoder(dim=8, depth=1,
            ...     num_heads=2), mask_params={"num_frames": 4, "num_patches_per_frame": 2})
            >>> with cache.begin(2) as step:
            ...     step.first_frame, step.mask.q_len, step.mask.kv_len
            (0, 4, 4)
            >>> cache.frames
            2
        """
        c = check_int("num_frames", num_frames, minimum=1)
        check_bool("append", append)
        if self._open is not None:
            raise RuntimeError(
                "a cache step is already in progress (begin() without finish()); finish it first"
            )
        f0 = self.frames
        fpc = self.rule.frames_per_chunk
        if self._closed_at is not None:
            raise ValueError(
                f"frames {self._closed_at}..{f0 - 1} were appended as a partial last chunk (chunks "
                f"of {fpc} frames): every token of a chunk sees the whole chunk, so nothing can "
                "follow a partial chunk; reset() the cache to start another video"
            )
        if self.spec.name == "teacher-forcing" and c > fpc:
            raise ValueError(_ONE_CHUNK.format(fpc=fpc, what=f"got a step of {c} frames"))
        if self._ring is not None and c > self.chunk_frames:
            raise ValueError(
                f"x_chunk holds {c} frames, more than this cache's chunk_frames="
                f"{self.chunk_frames}: its ring holds the window ({self.rule.window_frames} "
                f"frames) plus one chunk of at most {self.chunk_frames}; build the cache with "
                f"chunk_frames={c} (or more)"
            )
        if self.max_frames is not None and f0 + c > self.max_frames:
            what = "appending" if append else "a step over"
            raise ValueError(
                f"{what} frames {f0}..{f0 + c - 1} would go past max_frames={self.max_frames} "
                f"(the cache holds frames 0..{self.max_frames - 1}); build the cache with a "
                "larger max_frames"
            )
        slots = [self.slot_of(f0 + j) for j in range(c)]
        self._slots[slots] = np.arange(f0, f0 + c)
        self._filled = max(self._filled, max(slots) + 1)
        if self.backend == "flex":  # fixed shapes: every slot, and the table on the device
            kv_slots = self.capacity_frames
            self._send_table(f0)
        else:  # sdpa: the slots filled so far
            kv_slots = self._filled
        visible = self.rule.visible(np.arange(f0, f0 + c), self._slots[:kv_slots])
        mask = StepMask(
            visible, self.num_patches_per_frame, self.device, self._block_mask, self._dense
        )
        step = CacheStep(self, f0, c, append, slots, mask, self._close)
        self._open = step
        return step

    def _send_table(self, f0: int) -> None:
        """Bring the device table to this step, ``[f0, f0 + 1, .. | the frame in each slot]``,
        writing only what changed, each run of it by one kernel that takes its numbers as
        scalars: no host-to-device copy and no pinned buffer a step (a step changes the first
        frame and the chunk's slots: two or three small kernels)."""
        table, q = self._table, self._q_entries
        if self._sent_f0 != f0:
            torch.add(self._iota[:q], f0, out=table[:q])
            self._sent_f0 = f0
        changed = np.flatnonzero(self._slots != self._sent_slots)
        for first, count, value, step in _progressions(changed, self._slots[changed]):
            run = table[q + first : q + first + count]
            if step:
                torch.add(self._iota[:count], value, out=run)
            else:
                run.fill_(value)
        self._sent_slots[changed] = self._slots[changed]

    def _close(self, step: CacheStep, commit: bool) -> None:
        self._open = None
        if commit:
            self.frames += step.num_frames
            if step.num_frames % self.rule.frames_per_chunk:
                self._closed_at = step.first_frame
        else:
            self._slots[step.slots] = -1

    def positions(self, first_frame: int, num_frames: int) -> FramePositions:
        """The positions of frames ``first_frame .. first_frame + num_frames - 1`` on the
        cache's device: absolute frame times (what a step rotates its queries and keys by).

        Example:
            >>> from flexframe import FlexFrameDecoder
            >>> cache = FrameKVCache.for_mask("causal-frame", FlexFrameDecoder(dim=8, depth=1,
            ...     num_heads=2), mask_params={"num_frames": 4, "num_patches_per_frame": 2})
            >>> cache.positions(7, 2).frame.tolist(), cache.positions(7, 2).patch.tolist()
            ([7, 7, 8, 8], [0, 1, 0, 1])
        """
        if num_frames not in self._local:
            p = self.num_patches_per_frame
            local = torch.arange(num_frames, device=self.device).repeat_interleave(p)
            patch = torch.arange(p, device=self.device).repeat(num_frames)
            self._local[num_frames] = (local, patch)
        local, patch = self._local[num_frames]
        return FramePositions(local + first_frame, patch)

    def _cached(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        """The step mask kept under ``key``, built (and kept) on a miss."""
        value = self._masks.get(key)
        if value is None:
            value = build()
            self._masks.put(key, value)
        return value

    def _block_mask(self, visible: np.ndarray) -> BlockMask:
        key = ("block", visible.shape, visible.tobytes())
        return self._cached(key, lambda: self._build_block_mask(visible))

    def _build_block_mask(self, visible: np.ndarray) -> BlockMask:
        partial, full = step_block_grids(visible, self.num_patches_per_frame, self.block_size)
        grids = _host_tensor(np.stack([partial, full]), self.device)
        grids = grids.to(self.device, non_blocking=True)
        c, slots = visible.shape
        p = self.num_patches_per_frame
        return block_mask_from_grids(
            grids[0], grids[1], (c * p, slots * p), self.block_size, self._step_mask_mod(c)
        )

    def _step_mask_mod(self, c: int) -> MaskMod:
        """The mask_mod of a ``c``-frame step: the cache's, under a code object of its own for
        this setting and step size, shared by every cache of the same (the kernel policy
        compiles one function a code object; ``flexframe.nn.streaming`` says why)."""
        mod = self._step_mods.get(c)
        if mod is None:
            mod = _with_code(self._mask_mod, (self._setting, c), self.rule.name)
            self._step_mods[c] = mod
        return mod

    def _dense(self, visible: np.ndarray) -> torch.Tensor:
        key = ("dense", visible.shape, visible.tobytes())
        p = self.num_patches_per_frame

        def build() -> torch.Tensor:
            dense = np.repeat(np.repeat(visible, p, axis=0), p, axis=1)
            return _host_tensor(dense, self.device).to(self.device, non_blocking=True)

        return self._cached(key, build)

    def attend(self, attention: Attention, x: torch.Tensor, *, append: bool = True) -> torch.Tensor:
        """One self-attention step of a lone :class:`~flexframe.nn.Attention` against the cache
        (what ``attention(x_chunk, cache=cache)`` runs); returns ``[B, c * P, dim]``."""
        self.check_module(attention)
        check_tokens(x, attention.config.dim, "x_chunk")
        c = self.check_input(x)
        with self.begin(c, append=append) as step:
            return step.layer(0).attend(attention, x)
