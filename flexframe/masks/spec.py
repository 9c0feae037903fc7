"""`MaskSpec`: one attention mask with its parameters, lengths, mask_mod and builders.

A spec is what the registry hands out (``get_mask("causal-frame", num_frames=8, ...)``) and what
the decoder, the pictures and the loss take. It knows how to become:

- a ``mask_mod(b, h, q_idx, kv_idx) -> bool`` for ``flex_attention`` (True = may attend);
- a dense ``[q_len, kv_len]`` bool tensor (True = may attend), for SDPA and inspection;
- a ``BlockMask``, built in closed form when the mask has a frame structure and through torch's
  ``create_block_mask`` otherwise, and cached.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch.nn.attention.flex_attention import (
    BlockMask,
    _mask_mod_signature,
    and_masks,
    create_block_mask,
    create_mask,
    or_masks,
)

from flexframe._checks import check_int
from flexframe.masks.closed_form import IntervalRelation, build_block_mask

MaskMod = _mask_mod_signature
BlockSize = int | tuple[int, int]
Builder = Literal["auto", "closed-form", "create_block_mask"]

# A spec's mask_mod may close over tensors (timestamps, video ids); flex_attention needs them on
# the device of q, so a spec keeps a factory and builds one mask_mod per device.
ModFactory = Callable[[torch.device], MaskMod]


def default_device() -> torch.device:
    """The current accelerator if there is one, else the CPU (torch's own default)."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _resolve_device(device: torch.device | str | None) -> torch.device:
    device = default_device() if device is None else torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _normalize_block_size(block_size: BlockSize) -> tuple[int, int]:
    if isinstance(block_size, tuple):
        if len(block_size) != 2:
            raise ValueError(f"block_size must be an int or a (q, kv) pair, got {block_size!r}")
        q_bs, kv_bs = block_size
    else:
        q_bs = kv_bs = block_size
    q_bs = check_int("block_size", q_bs, minimum=1)
    kv_bs = check_int("block_size", kv_bs, minimum=1)
    return q_bs, kv_bs


def _freeze(value: Any) -> Hashable:
    """A hashable stand-in for a parameter value (lists and tensors become tuples)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.tolist()))
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


_BY_HAND_TOKENS = itertools.count()


@dataclass(frozen=True, eq=False)
class MaskSpec:
    """An attention mask by name and parameters, ready for flex_attention, SDPA or a picture.

    Attributes:
        name: the registry name (``"causal-frame"``) or a combination (``"(a & b)"``).
        params: the parameters it was made with (read-only).
        q_len: number of query tokens.
        kv_len: number of key/value tokens.
        num_patches_per_frame: tokens per frame, when the mask has frames (used for pictures and
            frame positions); ``None`` otherwise.
        description: one line saying what the mask does.
        relation: the closed-form structure, when the mask has one (see ``closed_form``).
        frame_times: the time of each frame, when it is not the frame's index (timestamp-causal:
            its timestamps; packed videos: the frame index inside each video). Frame positions
            (rotary embeddings) follow it.
        origin: where the spec comes from, part of :attr:`cache_key`: set by ``get_mask`` (the
            registration that built it) and by ``&`` / ``|`` (the two operands); ``None`` for a
            spec built by hand, which then shares cached masks with no other spec.

    Example:
        >>> from flexframe import get_mask
        >>> spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=2)
        >>> spec.to_dense().int().tolist()[2]
        [1, 1, 1, 1, 0, 0]
        >>> (spec.q_len, spec.kv_len)
        (6, 6)
    """

    name: str
    params: Mapping[str, Any]
    q_len: int
    kv_len: int
    mod_factory: ModFactory = field(repr=False)
    num_patches_per_frame: int | None = None
    description: str = ""
    relation: IntervalRelation | None = field(default=None, repr=False)
    _mods: dict[torch.device, MaskMod] = field(default_factory=dict, repr=False, compare=False)
    origin: Hashable | None = field(default=None, repr=False, compare=False)
    frame_times: tuple[int, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    # -- the three forms --------------------------------------------------------------------
    @property
    def mask_mod(self) -> MaskMod:
        """The ``(b, h, q_idx, kv_idx) -> bool`` function for ``flex_attention`` (CPU tensors).

        Use :meth:`mask_mod_for` for another device when the mask closes over tensors.
        """
        return self.mask_mod_for("cpu")

    def mask_mod_for(self, device: torch.device | str) -> MaskMod:
        """The mask_mod with any tensors it reads placed on ``device`` (built once per device)."""
        device = _resolve_device(device)
        mod = self._mods.get(device)
        if mod is None:
            mod = self.mod_factory(device)
            if getattr(mod, "__name__", "<lambda>") in ("<lambda>", "mask_mod"):
                try:
                    mod.__name__ = self.name  # titles plots and compile logs
                except (AttributeError, TypeError):
                    pass
            self._mods[device] = mod
        return mod

    def to_dense(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The mask as a ``[q_len, kv_len]`` bool tensor, True where a query may attend.

        This materializes ``q_len * kv_len`` booleans: meant for SDPA at modest lengths, tests and
        pictures. ``device`` defaults to the CPU. Invert it (``~mask``) for ``nn.Transformer``,
        whose masks mean "may not attend".
        """
        device = torch.device("cpu") if device is None else _resolve_device(device)
        dense = create_mask(self.mask_mod_for(device), 1, 1, self.q_len, self.kv_len, device)
        return dense[0, 0].to(torch.bool)

    def block_mask(
        self,
        device: torch.device | str | None = None,
        block_size: BlockSize = 128,
        builder: Builder = "auto",
    ) -> BlockMask:
        """The mask as a torch ``BlockMask`` (cached; built once per key).

        Args:
            device: where to build it; defaults to the current accelerator, else the CPU.
            block_size: an int, or ``(q_block, kv_block)``.
            builder: ``"auto"`` (closed form when the mask has a frame structure, else torch's
                ``create_block_mask``), or one of the two by name.

        Returns:
            A BlockMask of batch and head size 1 (it broadcasts) with the true sequence lengths.

        The cache key is (name, params, lengths, device, block size, builder); the cache holds
        the ``block_mask_cache_size()`` most recently used masks.
        """
        device = _resolve_device(device)
        bs = _normalize_block_size(block_size)
        if builder not in ("auto", "closed-form", "create_block_mask"):
            raise ValueError(
                f"builder must be 'auto', 'closed-form' or 'create_block_mask', got {builder!r}"
            )
        if builder == "closed-form" and self.relation is None:
            raise ValueError(
                f"mask {self.name!r} has no closed-form builder; use builder='auto' or "
                "'create_block_mask'"
            )
        use_closed = self.relation is not None and builder != "create_block_mask"
        key = (self.cache_key, str(device), bs, use_closed)
        cached = _BLOCK_MASK_CACHE.get(key)
        if cached is not None:
            return cached
        mod = self.mask_mod_for(device)
        if use_closed:
            block_mask = build_block_mask(self.relation, mod, bs, device)
        else:
            block_mask = _create_block_mask_generic(mod, self.q_len, self.kv_len, device, bs)
        _BLOCK_MASK_CACHE.put(key, block_mask)
        return block_mask

    # -- identity and combination ------------------------------------------------------------
    @property
    def cache_key(self) -> Hashable:
        """What identifies this mask: name, parameters, lengths and origin.

        Two ``get_mask`` calls with the same name and parameters give equal keys (they share
        cached BlockMasks); re-registering the name changes the origin, so masks built by the old
        factory are never served for the new one. A spec built by hand (no origin) is keyed by
        its own identity.
        """
        key = self.__dict__.get("_cache_key")
        if key is not None:  # worked out once: a training step looks it up every call
            return key
        origin = self.origin
        if origin is None:
            origin = ("by-hand", next(_BY_HAND_TOKENS))
        key = (self.name, _freeze(dict(self.params)), self.q_len, self.kv_len, origin)
        object.__setattr__(self, "_cache_key", key)
        return key

    def sparsity(self, block_size: BlockSize = 128) -> float:
        """Share of blocks skipped entirely, in percent (torch's ``BlockMask.sparsity``)."""
        return float(self.block_mask("cpu", block_size).sparsity())

    def _combine(self, other: MaskSpec, op: str) -> MaskSpec:
        if not isinstance(other, MaskSpec):
            return NotImplemented
        if (self.q_len, self.kv_len) != (other.q_len, other.kv_len):
            raise ValueError(
                f"cannot combine masks of different shapes: {self.name!r} is "
                f"[{self.q_len}, {self.kv_len}], {other.name!r} is [{other.q_len}, {other.kv_len}]"
            )
        combine = and_masks if op == "&" else or_masks
        a, b = self, other

        def factory(device: torch.device) -> MaskMod:
            return combine(a.mask_mod_for(device), b.mask_mod_for(device))

        same_frames = a.num_patches_per_frame == b.num_patches_per_frame
        # Explicit frame times win over implicit ones (the frame index); two that disagree
        # leave the combination without times.
        times = a.frame_times if b.frame_times in (None, a.frame_times) else None
        if a.frame_times is None:
            times = b.frame_times
        return MaskSpec(
            name=f"({a.name} {op} {b.name})",
            params={"left": dict(a.params), "right": dict(b.params)},
            q_len=a.q_len,
            kv_len=a.kv_len,
            mod_factory=factory,
            num_patches_per_frame=a.num_patches_per_frame if same_frames else None,
            description=f"{a.name} {'and' if op == '&' else 'or'} {b.name}",
            origin=(op, a.cache_key, b.cache_key),
            frame_times=times if same_frames else None,
        )

    def __and__(self, other: MaskSpec) -> MaskSpec:
        return self._combine(other, "&")

    def __or__(self, other: MaskSpec) -> MaskSpec:
        return self._combine(other, "|")

    # -- Jupyter ---------------------------------------------------------------------------------
    # Pictures live in flexframe.viz, which depends on this module; the import is deferred to
    # the call so that masks stay importable without drawing anything.
    def _repr_png_(self) -> tuple[bytes, dict[str, int]]:
        # The PNG may hold more pixels than the figure's size (every cell gets whole pixels);
        # the metadata asks Jupyter to show it at the figure's size.
        from flexframe.viz import mask_to_png_with_size

        return mask_to_png_with_size(self)

    def _repr_markdown_(self) -> str:
        from flexframe.viz import mask_summary

        return "```\n" + mask_summary(self) + "\n```"

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"MaskSpec({self.name}: {params}; q_len={self.q_len}, kv_len={self.kv_len})"


# -- the generic builder and the cache ---------------------------------------------------------
_compiled_create_block_mask: Callable[..., BlockMask] | None = None


def _create_block_mask_generic(
    mod: MaskMod, q_len: int, kv_len: int, device: torch.device, block_size: tuple[int, int]
) -> BlockMask:
    """torch's ``create_block_mask``; compiled on GPUs so that it never holds the N x N mask.

    The eager builder materializes ``[q_len, kv_len]`` (128 GiB at 128K tokens); the compiled one
    fuses the mask evaluation into the block reduction. On the CPU compilation costs more than
    it saves at the lengths a CPU handles, so the eager builder is used there.
    """
    global _compiled_create_block_mask
    if device.type == "cpu":
        return create_block_mask(mod, 1, 1, q_len, kv_len, device=device, BLOCK_SIZE=block_size)
    if _compiled_create_block_mask is None:
        _compiled_create_block_mask = torch.compile(create_block_mask)
    return _compiled_create_block_mask(
        mod, 1, 1, q_len, kv_len, device=device, BLOCK_SIZE=block_size
    )


class _LRUCache:
    """A small thread-safe least-recently-used map."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, BlockMask] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> BlockMask | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: BlockMask) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            self._evict()

    def resize(self, maxsize: int) -> None:
        with self._lock:
            self.maxsize = maxsize
            self._evict()

    def _evict(self) -> None:
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def clear(self, name: str | None = None) -> None:
        with self._lock:
            if name is None:
                self._data.clear()
            else:
                for key in [k for k in self._data if k[0][0] == name]:
                    del self._data[key]

    def __len__(self) -> int:
        return len(self._data)


_BLOCK_MASK_CACHE = _LRUCache(maxsize=64)


def clear_block_mask_cache(name: str | None = None) -> None:
    """Forget cached BlockMasks: all of them, or those of one mask name.

    Example:
        >>> from flexframe import clear_block_mask_cache
        >>> clear_block_mask_cache()
    """
    _BLOCK_MASK_CACHE.clear(name)


def set_block_mask_cache_size(maxsize: int) -> None:
    """Bound the BlockMask cache to ``maxsize`` entries (default 64); 0 disables caching.

    Example:
        >>> from flexframe import set_block_mask_cache_size
        >>> set_block_mask_cache_size(64)
    """
    _BLOCK_MASK_CACHE.resize(check_int("maxsize", maxsize, minimum=0))


def block_mask_cache_info() -> dict[str, int]:
    """Hits, misses, current size and bound of the BlockMask cache.

    Example:
        >>> from flexframe import block_mask_cache_info
        >>> sorted(block_mask_cache_info())
        ['hits', 'maxsize', 'misses', 'size']
    """
    c = _BLOCK_MASK_CACHE
    return {"hits": c.hits, "misses": c.misses, "size": len(c), "maxsize": c.maxsize}
