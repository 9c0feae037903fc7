"""`MaskSpec`: one attention mask with its parameters, lengths, mask_mod and builders.

A spec is what the registry hands out (``get_mask("causal-frame", num_frames=8, ...)``) and what
the decoder, the pictures and the loss take. It knows how to become:

- a ``mask_mod(b, h, q_idx, kv_idx) -> bool`` for ``flex_attention`` (True = may attend);
- a dense ``[q_len, kv_len]`` bool tensor (True = may attend), for SDPA and inspection;
- a ``BlockMask``, built in closed form when the mask has a frame structure and through torch's
  ``create_block_mask`` otherwise, and cached (``flexframe.masks.cache``).

Size limits: a dense mask holds ``q_len * kv_len`` bytes, and torch's eager ``create_block_mask``
(the CPU builder for masks without a closed form) about :data:`EAGER_BYTES_PER_CELL` bytes per
cell of the padded block grid. Both are refused above :data:`MAX_DENSE_BYTES` (4 GiB), with the
byte count and what to use instead; ``to_dense(max_bytes=...)`` goes past it on purpose.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

import torch
from torch.nn.attention.flex_attention import (
    BlockMask,
    _mask_mod_signature,
    and_masks,
    create_block_mask,
    create_mask,
    or_masks,
)

from flexframe._checks import check_choice, check_int, normalize_block_size, resolve_device
from flexframe._vocab import BUILDERS, DEFAULT_BLOCK_SIZE, Builder
from flexframe.masks.blocks import grids_from_block_mask
from flexframe.masks.cache import BLOCK_MASKS, DENSE_MASKS
from flexframe.masks.closed_form import IntervalRelation, build_block_mask

MaskMod = _mask_mod_signature
BlockSize = int | tuple[int, int]

# A spec's mask_mod may close over tensors (timestamps, video ids); flex_attention needs them on
# the device of q, so a spec keeps a factory and builds one mask_mod per device.
ModFactory = Callable[[torch.device], MaskMod]

MAX_DENSE_BYTES = 4 << 30
"""The largest dense mask (or eager ``create_block_mask`` grid) built without ``max_bytes``."""
EAGER_BYTES_PER_CELL = 12
"""What torch's eager ``create_block_mask`` holds per cell of its padded grid (measured: 2.9 GB
for a 16K x 16K grid on the CPU, torch 2.13)."""


def _check_size(what: str, nbytes: int, max_bytes: int | None, instead: str) -> None:
    limit = MAX_DENSE_BYTES if max_bytes is None else check_int("max_bytes", max_bytes, minimum=0)
    if nbytes > limit:
        raise ValueError(
            f"{what} would hold {nbytes:,} bytes ({nbytes / 2**30:.1f} GiB), above the "
            f"{limit / 2**30:.1f} GiB limit; {instead}"
        )


def _freeze(value: Any) -> Hashable:
    """A hashable stand-in for a parameter value (lists and tensors become tuples)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.tolist()))
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


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
        device = resolve_device(device)
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

    def to_dense(
        self, device: torch.device | str | None = None, *, max_bytes: int | None = None
    ) -> torch.Tensor:
        """The mask as a ``[q_len, kv_len]`` bool tensor, True where a query may attend.

        This materializes ``q_len * kv_len`` booleans: meant for SDPA at modest lengths, tests and
        pictures, and refused above :data:`MAX_DENSE_BYTES` unless ``max_bytes`` allows it.
        ``device`` defaults to the CPU. Invert it (``~mask``) for ``nn.Transformer``, whose masks
        mean "may not attend".
        """
        _check_size(
            f"the dense mask of {self.name!r} ([{self.q_len}, {self.kv_len}])",
            self.q_len * self.kv_len,
            max_bytes,
            "use block_mask() (O(blocks)) for attention and pictures by block, or pass "
            f"max_bytes={self.q_len * self.kv_len} to build it anyway",
        )
        device = torch.device("cpu") if device is None else resolve_device(device)
        dense = create_mask(self.mask_mod_for(device), 1, 1, self.q_len, self.kv_len, device)
        return dense[0, 0].to(torch.bool)

    def dense(self, device: torch.device | str | None = None) -> torch.Tensor:
        """:meth:`to_dense`, cached (``flexframe.masks.cache.DENSE_MASKS``): the sdpa backend's
        mask. Do not write into it."""
        device = torch.device("cpu") if device is None else resolve_device(device)
        key = (self.cache_key, "dense", str(device))
        dense = DENSE_MASKS.get(key)
        if dense is None:
            dense = self.to_dense(device)
            DENSE_MASKS.put(key, dense)
        return dense

    def block_mask(
        self,
        device: torch.device | str | None = None,
        block_size: BlockSize = DEFAULT_BLOCK_SIZE,
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
        the ``block_mask_cache_info()["maxsize"]`` most recently used masks.
        """
        device = resolve_device(device)
        bs = normalize_block_size(block_size)
        check_choice("builder", builder, BUILDERS)
        if builder == "closed-form" and self.relation is None:
            raise ValueError(
                f"mask {self.name!r} has no closed-form builder; use builder='auto' or "
                "'create_block_mask'"
            )
        use_closed = self.relation is not None and builder != "create_block_mask"
        key = (self.cache_key, str(device), bs, use_closed)
        cached = BLOCK_MASKS.get(key)
        if cached is not None:
            return cached
        mod = self.mask_mod_for(device)
        if use_closed:
            assert self.relation is not None
            block_mask = build_block_mask(self.relation, mod, bs, device)
        else:
            block_mask = self._create_block_mask(mod, device, bs)
        BLOCK_MASKS.put(key, block_mask)
        return block_mask

    def _create_block_mask(
        self, mod: MaskMod, device: torch.device, bs: tuple[int, int]
    ) -> BlockMask:
        """torch's ``create_block_mask``; compiled on GPUs so that it never holds the N x N mask.

        The eager builder materializes the padded ``[Q_BLOCKS * BLOCK_Q, KV_BLOCKS * BLOCK_KV]``
        grid (128 GiB at 128K tokens), hence the size check; the compiled one fuses the mask
        evaluation into the block reduction. On the CPU compilation costs more than it saves at
        the lengths a CPU handles, so the eager builder is used there.
        """
        if device.type == "cpu":
            cells = -(-self.q_len // bs[0]) * bs[0] * (-(-self.kv_len // bs[1]) * bs[1])
            _check_size(
                f"torch's create_block_mask for {self.name!r} (no closed form) at block size "
                f"{bs} (a padded grid of {cells:,} cells, {EAGER_BYTES_PER_CELL} bytes each)",
                cells * EAGER_BYTES_PER_CELL,
                None,
                "build it on a GPU (compiled, no N x N memory), or use masks with a closed form",
            )
            return create_block_mask(
                mod, 1, 1, self.q_len, self.kv_len, device=device, BLOCK_SIZE=bs
            )
        return _compiled_create_block_mask()(
            mod, 1, 1, self.q_len, self.kv_len, device=device, BLOCK_SIZE=bs
        )

    def block_grids(
        self, block_size: BlockSize = DEFAULT_BLOCK_SIZE, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(partial, full)`` ``[Q_BLOCKS, KV_BLOCKS]`` bool grids: the blocks the kernel runs.

        From the closed form when the mask has one (O(blocks)), else from its BlockMask. A block
        that reaches into the padding past ``q_len`` or ``kv_len`` is never full, as in torch.

        Example:
            >>> from flexframe import get_mask
            >>> spec = get_mask("causal-frame", num_frames=2, num_patches_per_frame=3)
            >>> [g.int().tolist() for g in spec.block_grids(block_size=4)]
            [[[1, 1], [1, 1]], [[0, 0], [0, 0]]]
        """
        bs = normalize_block_size(block_size)
        if self.relation is not None:
            return self.relation.block_grids(*bs, device=resolve_device(device))
        return grids_from_block_mask(self.block_mask(device, bs))

    # -- identity and combination ------------------------------------------------------------
    @cached_property
    def cache_key(self) -> Hashable:
        """What identifies this mask: name, parameters, lengths and origin.

        Two ``get_mask`` calls with the same name and parameters give equal keys (they share
        cached BlockMasks); re-registering the name changes the origin, so masks built by the old
        factory are never served for the new one. A spec built by hand (no origin) is keyed by
        a token of its own, which the key holds (so it is never reused while the key lives).
        """
        origin = self.origin if self.origin is not None else ("by-hand", object())
        return (self.name, _freeze(dict(self.params)), self.q_len, self.kv_len, origin)

    def sparsity(self, block_size: BlockSize = DEFAULT_BLOCK_SIZE) -> float:
        """Share of blocks skipped entirely, in percent (0 to 100).

        Unlike torch's ``BlockMask.sparsity()``, which compares the computed blocks' area with
        ``q_len * kv_len`` and so turns negative when padding outweighs the skipped blocks, this
        counts blocks of the grid.

        Example:
            >>> from flexframe import get_mask
            >>> get_mask("causal-frame", num_frames=4, num_patches_per_frame=1).sparsity(1)
            37.5
        """
        partial, full = self.block_grids(block_size)
        return 100.0 * (1.0 - float((partial | full).sum()) / partial.numel())

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

        # A mask without frames (token-causal, full) keeps the other's frames and times; two
        # frame layouts that disagree leave the combination without either.
        frames = (a.num_patches_per_frame, b.num_patches_per_frame)
        if None in frames or frames[0] == frames[1]:
            p = frames[0] if frames[0] is not None else frames[1]
            times = _combined_times(a, b)
        else:
            p, times = None, None
        return MaskSpec(
            name=f"({a.name} {op} {b.name})",
            params={"left": dict(a.params), "right": dict(b.params)},
            q_len=a.q_len,
            kv_len=a.kv_len,
            mod_factory=factory,
            num_patches_per_frame=p,
            description=f"{a.name} {'and' if op == '&' else 'or'} {b.name}",
            origin=(op, a.cache_key, b.cache_key),
            frame_times=times,
        )

    def __and__(self, other: MaskSpec) -> MaskSpec:
        return self._combine(other, "&")

    def __or__(self, other: MaskSpec) -> MaskSpec:
        return self._combine(other, "|")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"MaskSpec({self.name}: {params}; q_len={self.q_len}, kv_len={self.kv_len})"


def _combined_times(a: MaskSpec, b: MaskSpec) -> tuple[int, ...] | None:
    """Explicit frame times win over implicit ones (the frame index); two that disagree leave
    the combination without times."""
    if a.frame_times is None:
        return b.frame_times
    if b.frame_times is None or b.frame_times == a.frame_times:
        return a.frame_times
    return None


@functools.cache
def _compiled_create_block_mask() -> Callable[..., BlockMask]:
    """torch's ``create_block_mask`` compiled once per process (the GPU builder)."""
    return torch.compile(create_block_mask)
