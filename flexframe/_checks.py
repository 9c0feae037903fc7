"""Argument checks shared across flexframe: each error names the argument and the value given."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable, Sequence


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int, or raise naming ``name`` and the value.

    Bools are refused: ``True`` as a frame count is almost always a bug in a config.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        # Integral floats from YAML ("8.0") are still refused: a silent cast could hide a typo.
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_int_sequence(name: str, value: object, *, minimum: int | None = None) -> tuple[int, ...]:
    """Return a non-empty sequence of ints (list, tuple or 1-D integer tensor) as a tuple."""
    try:
        import torch

        if isinstance(value, torch.Tensor):
            if value.dim() != 1 or value.dtype.is_floating_point or value.dtype == torch.bool:
                raise TypeError(
                    f"{name} must be a 1-D integer tensor or a sequence of ints, "
                    f"got a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
                )
            value = value.tolist()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, Iterable)):
        raise TypeError(f"{name} must be a sequence of ints, got {value!r}")
    items = tuple(value)
    if not items:
        raise ValueError(f"{name} must not be empty, got {value!r}")
    out = []
    for i, item in enumerate(items):
        out.append(check_int(f"{name}[{i}]", item, minimum=minimum))
    return tuple(out)


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Candidates that look like ``word``, best first; tolerant of '_' for '-' and case."""
    candidates = list(candidates)

    def norm(s: str) -> str:
        return s.lower().replace("_", "-").replace(" ", "-")

    by_norm = {norm(c): c for c in candidates}
    hits = difflib.get_close_matches(norm(word), list(by_norm), n=n, cutoff=0.6)
    return [by_norm[h] for h in hits]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix for an error message, or '' when nothing is close."""
    hits = close_matches(word, candidates)
    if not hits:
        return ""
    return " Did you mean " + " or ".join(repr(h) for h in hits) + "?"
