"""Token-level masks: the ordinary causal mask (the ablation baseline) and the full mask."""

from __future__ import annotations

from flexframe._checks import check_int
from flexframe.masks.closed_form import IntervalRelation
from flexframe.masks.piecewise import PiecewiseKey
from flexframe.masks.registry import register_mask
from flexframe.masks.spec import MaskMod, MaskSpec


def causal_mask_mod(b, h, q_idx, kv_idx):
    """Token-causal: a query sees itself and every earlier token."""
    return kv_idx <= q_idx


def full_mask_mod(b, h, q_idx, kv_idx):
    """Everything visible."""
    return (q_idx >= 0) & (kv_idx >= 0)


def _constant(mod: MaskMod):
    return lambda device: mod


@register_mask("token-causal")
def token_causal_mask(seq_len: int) -> MaskSpec:
    """The ordinary token-level causal mask: a token sees itself and all earlier tokens.

    This is the ablation's baseline: inside a frame, patch 4 sees patch 3 but not patch 5,
    an order that patches of one frame do not have.

    Example:
        >>> token_causal_mask(3).to_dense().int().tolist()
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    n = check_int("seq_len", seq_len, minimum=1)
    key = PiecewiseKey.position(n)
    return MaskSpec(
        name="token-causal",
        params={"seq_len": n},
        q_len=n,
        kv_len=n,
        mod_factory=_constant(causal_mask_mod),
        description="ordinary token-level causal mask (the baseline)",
        relation=IntervalRelation(kv_key=key, q_hi=key),
    )


@register_mask("full")
def full_mask(seq_len: int, kv_len: int | None = None) -> MaskSpec:
    """Everything visible: bidirectional attention, for encoders, cross-attention and reference.

    ``kv_len`` (default ``seq_len``) makes it rectangular, ``[seq_len, kv_len]``, for a
    cross-attention to a memory of another length.

    Example:
        >>> full_mask(2).to_dense().int().tolist()
        [[1, 1], [1, 1]]
        >>> full_mask(1, kv_len=3).to_dense().int().tolist()
        [[1, 1, 1]]
    """
    n = check_int("seq_len", seq_len, minimum=1)
    m = n if kv_len is None else check_int("kv_len", kv_len, minimum=1)
    return MaskSpec(
        name="full",
        params={"seq_len": n} if kv_len is None else {"seq_len": n, "kv_len": m},
        q_len=n,
        kv_len=m,
        mod_factory=_constant(full_mask_mod),
        description="every token sees every token",
        relation=IntervalRelation(
            kv_key=PiecewiseKey.constant(m, 0), q_hi=PiecewiseKey.constant(n, 0)
        ),
    )
