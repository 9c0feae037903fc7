"""Argument checks shared across flexframe: each error names the argument and the value given.

Every validation rule of the package lives here (integers, choices, finite numbers, block sizes,
devices), so that one kind of mistake gets one kind of message wherever it is made.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Sequence

import torch

from flexframe._vocab import DEFAULT_BLOCK_SIZE


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int, or raise naming ``name`` and the value.

    Bools are refused: ``True`` as a frame count is almost always a bug in a config.

    Example:
        >>> check_int("num_frames", 3, minimum=1)
        3
        >>> check_int("num_frames", 2.0)
        Traceback (most recent call last):
        ...
        TypeError: num_frames must be an int, got 2.0 (float)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        # Integral floats from YAML ("8.0") are still refused: a silent cast could hide a typo.
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_int_sequence(name: str, value: object, *, minimum: int | None = None) -> tuple[int, ...]:
    """Return a non-empty sequence of ints (list, tuple or 1-D integer tensor) as a tuple.

    Example:
        >>> check_int_sequence("timestamps", [0, 2, 1])
        (0, 2, 1)
    """
    if isinstance(value, torch.Tensor):
        if value.dim() != 1 or value.dtype.is_floating_point or value.dtype == torch.bool:
            raise TypeError(
                f"{name} must be a 1-D integer tensor or a sequence of ints, "
                f"got a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
            )
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, Iterable)):
        raise TypeError(f"{name} must be a sequence of ints, got {value!r}")
    items = tuple(value)
    if not items:
        raise ValueError(f"{name} must not be empty, got {value!r}")
    if all(type(item) is int for item in items) and (minimum is None or min(items) >= minimum):
        return items  # plain ints in range (the common case): nothing to convert or name
    return tuple(check_int(f"{name}[{i}]", item, minimum=minimum) for i, item in enumerate(items))


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool, else raise naming it.

    Example:
        >>> check_bool("rotary", "yes")
        Traceback (most recent call last):
        ...
        TypeError: rotary must be true or false, got 'yes'
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, got {value!r}")
    return value


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    strict_low: bool = False,
) -> float:
    """Return a real, finite number as a float (not a bool, not nan or inf), within bounds.

    ``low`` is inclusive unless ``strict_low``; ``high`` is exclusive.

    Example:
        >>> check_number("lr", 3e-3, low=0.0, strict_low=True)
        0.003
        >>> check_number("loss_weight", float("nan"))
        Traceback (most recent call last):
        ...
        ValueError: loss_weight must be a finite number, got nan
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    too_low = low is not None and (value <= low if strict_low else value < low)
    too_high = high is not None and value >= high
    if too_low or too_high:
        parts = []
        if low is not None:
            parts.append(f"{'>' if strict_low else '>='} {low}")
        if high is not None:
            parts.append(f"< {high}")
        raise ValueError(f"{name} must be {' and '.join(parts)}, got {value}")
    return value


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise with the close matches.

    Example:
        >>> check_choice("merge_strategy", "interleve", ("concat", "interleave"))
        Traceback (most recent call last):
        ...
        ValueError: merge_strategy must be one of 'concat', 'interleave', got 'interleve'. ...
    """
    if isinstance(value, str) and value in choices:
        return value
    valid = ", ".join(repr(c) for c in choices)
    hint = did_you_mean(value, choices) if isinstance(value, str) else ""
    raise ValueError(f"{name} must be one of {valid}, got {value!r}.{hint}")


def normalize_block_size(block_size: object, name: str = "block_size") -> tuple[int, int]:
    """An int or a ``(q, kv)`` pair as ``(BLOCK_Q, BLOCK_KV)``; ``None`` is the default 128.

    Example:
        >>> normalize_block_size(64), normalize_block_size((128, 64))
        ((64, 64), (128, 64))
    """
    if block_size is None:
        return DEFAULT_BLOCK_SIZE, DEFAULT_BLOCK_SIZE
    if isinstance(block_size, tuple):
        if len(block_size) != 2:
            raise ValueError(f"{name} must be an int or a (q, kv) pair, got {block_size!r}")
        return check_int(name, block_size[0], minimum=1), check_int(name, block_size[1], minimum=1)
    size = check_int(name, block_size, minimum=1)
    return size, size


def resolve_device(device: object = None, name: str = "device") -> torch.device:
    """The ``torch.device`` that ``device`` names; ``None`` or ``"auto"``: CUDA if present.

    A CUDA device always comes back with its index (``cuda`` -> ``cuda:<current>``), so that it
    can key a cache. CUDA asked for where torch sees none, a CUDA index past the last GPU and a
    device string torch cannot read are refused with one line that says what to write instead.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("gpu")
        Traceback (most recent call last):
        ...
        ValueError: device='gpu' is not a device; use 'cpu', 'cuda' or 'cuda:<index>' (or 'auto')
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(
            f"{name} must be a str or torch.device, got {device!r} ({type(device).__name__})"
        )
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"{name}={device!r} is not a device; use 'cpu', 'cuda' or 'cuda:<index>' (or 'auto')"
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no visible GPU"
            raise ValueError(
                f"{name}={device!r}, but torch sees no CUDA GPU (torch {torch.__version__}, "
                f"{build}); use 'cpu' or 'auto'"
            )
        index = torch.cuda.current_device() if resolved.index is None else resolved.index
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"{name}={device!r}, but torch sees {torch.cuda.device_count()} GPU(s) "
                f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
            )
        return torch.device("cuda", index)
    return resolved


def check_rotary_heads(width_name: str, width: int, heads_name: str, heads: int) -> None:
    """Refuse a width that does not split into ``heads`` heads of a multiple of 4 (the frame +
    patch rotary positions rotate head dims in quarters), naming both settings.

    Example:
        >>> check_rotary_heads("predictor_dim", 24, "predictor_heads", 4)
        Traceback (most recent call last):
        ...
        ValueError: predictor_dim must be divisible by predictor_heads into heads whose size is ...
    """
    if width % heads or (width // heads) % 4:
        raise ValueError(
            f"{width_name} must be divisible by {heads_name} into heads whose size is a multiple "
            f"of 4 (frame+patch rotary positions), got {width_name}={width}, {heads_name}={heads}"
        )


def check_weights_dtype(
    name: str,
    x: torch.Tensor,
    weight: torch.Tensor,
    owner: str,
    *,
    verb: str = "is",
    called: str | None = None,
) -> None:
    """Refuse floating-point ``x`` of another dtype than the weights of ``owner`` outside
    autocast (torch's own error names neither), saying the three ways out.

    Example:
        >>> x = torch.zeros(1, dtype=torch.bfloat16)
        >>> check_weights_dtype("x", x, torch.zeros(1), "decoder")
        Traceback (most recent call last):
        ...
        TypeError: x is torch.bfloat16 but the decoder's weights are torch.float32: cast the ...
    """
    if (
        x.is_floating_point()
        and x.dtype != weight.dtype
        and not torch.is_autocast_enabled(x.device.type)
    ):
        raise TypeError(
            f"{name} {verb} {x.dtype} but the {owner}'s weights are {weight.dtype}: cast the "
            f"{owner} ({owner}.to({x.dtype})), cast {called or name} ({name}.to({weight.dtype})), "
            f"or run under torch.autocast('{x.device.type}', dtype={x.dtype})"
        )


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Candidates that look like ``word``, best first; tolerant of '_' for '-' and case.

    Example:
        >>> close_matches("casual-frame", ["causal-frame", "full"])
        ['causal-frame']
    """
    candidates = list(candidates)

    def norm(s: str) -> str:
        return s.lower().replace("_", "-").replace(" ", "-")

    by_norm = {norm(c): c for c in candidates}
    hits = difflib.get_close_matches(norm(word), list(by_norm), n=n, cutoff=0.6)
    return [by_norm[h] for h in hits]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix for an error message, or '' when nothing is close.

    Example:
        >>> did_you_mean("concta", ["concat", "interleave"])
        " Did you mean 'concat'?"
    """
    hits = close_matches(str(word), candidates)
    if not hits:
        return ""
    names = [repr(h) for h in hits]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f" Did you mean {listed}?"
