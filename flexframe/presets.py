"""Fast/slow sampling presets: the seed design's tuning table, by name or by clip length.

:func:`preset_for_num_frames` picks one for a clip of ``T`` frames; a preset's
:meth:`~FastSlowPreset.sampler_kwargs` are the arguments of ``flexframe.sampling``'s
:func:`~flexframe.sampling.fast_slow_indices` and
:func:`~flexframe.sampling.sample_fast_slow_frames` (which re-exports every name here)::

    name     clip length T    num_fast  num_slow  fast_stride  slow_stride
    short    T < 30           -         -         -            -            (all frames, no split)
    medium   30 <= T <= 60    8         8         1            4
    long     T > 60           16        8         2            8

Example:
    >>> preset_for_num_frames(45).sampler_kwargs()
    {'fast_stride': 1, 'slow_stride': 4, 'num_fast': 8, 'num_slow': 8}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from flexframe._checks import check_choice, check_int
from flexframe._vocab import FAST_SLOW_KEYS, PRESET_NAMES

__all__ = [
    "FAST_SLOW_PRESETS",
    "FastSlowPreset",
    "get_fast_slow_preset",
    "preset_for_num_frames",
]

_PRESET_FIELDS = FAST_SLOW_KEYS


@dataclass(frozen=True)
class FastSlowPreset:
    """A named fast/slow sampling configuration from the seed design's tuning table.

    A preset either splits the clip (``use_fast_slow_frames=True``, all four ints set) or uses
    every frame (``use_fast_slow_frames=False``, all four ints ``None``); mixing is refused at
    construction, so a preset can't half-apply.

    Attributes:
        name: Preset name, e.g. ``"medium"``.
        use_fast_slow_frames: Whether to split the clip into fast and slow frames.
        num_fast: Number of fast frames, or ``None`` when using all frames.
        num_slow: Number of slow frames, or ``None`` when using all frames.
        fast_stride: Spacing of the fast frames, or ``None`` when using all frames.
        slow_stride: Spacing of the slow frames, or ``None`` when using all frames.

    Example:
        >>> preset = get_fast_slow_preset("long")
        >>> preset.sampler_kwargs()
        {'fast_stride': 2, 'slow_stride': 8, 'num_fast': 16, 'num_slow': 8}
        >>> print(get_fast_slow_preset("short").sampler_kwargs())
        None
    """

    name: str
    use_fast_slow_frames: bool
    num_fast: int | None = None
    num_slow: int | None = None
    fast_stride: int | None = None
    slow_stride: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {self.name!r}")
        if not isinstance(self.use_fast_slow_frames, bool):
            raise TypeError(
                f"use_fast_slow_frames must be a bool, got {self.use_fast_slow_frames!r}"
            )
        if self.use_fast_slow_frames:
            for field in _PRESET_FIELDS:
                check_int(f"FastSlowPreset.{field}", getattr(self, field), minimum=1)
            return
        given = {f: getattr(self, f) for f in _PRESET_FIELDS if getattr(self, f) is not None}
        if given:
            raise ValueError(
                f"preset {self.name!r} uses all frames (use_fast_slow_frames=False), so "
                f"{', '.join(_PRESET_FIELDS)} must be None, got {given}; "
                "set use_fast_slow_frames=True to sample fast/slow frames"
            )

    def sampler_kwargs(self) -> dict[str, int] | None:
        """Keyword arguments for :func:`~flexframe.sampling.fast_slow_indices` /
        :func:`~flexframe.sampling.sample_fast_slow_frames`.

        Returns ``None`` (not ``{}``) for a preset that uses all frames: ``{}`` would make
        ``fast_slow_indices(T, **kwargs)`` silently fall back to the defaults, whereas ``**None``
        fails loudly.

        Returns:
            ``{"fast_stride", "slow_stride", "num_fast", "num_slow"}`` as ints, or ``None``.

        Example:
            >>> kwargs = get_fast_slow_preset("medium").sampler_kwargs()
            >>> kwargs
            {'fast_stride': 1, 'slow_stride': 4, 'num_fast': 8, 'num_slow': 8}
            >>> from flexframe.sampling import fast_slow_indices
            >>> fast_slow_indices(45, **kwargs)[1].tolist()
            [13, 17, 21, 25, 29, 33, 37, 41]
        """
        if not self.use_fast_slow_frames:
            return None
        return {key: check_int(key, getattr(self, key)) for key in FAST_SLOW_KEYS}


FAST_SLOW_PRESETS: Mapping[str, FastSlowPreset] = MappingProxyType(
    {
        "short": FastSlowPreset("short", use_fast_slow_frames=False),
        "medium": FastSlowPreset(
            "medium",
            use_fast_slow_frames=True,
            num_fast=8,
            num_slow=8,
            fast_stride=1,
            slow_stride=4,
        ),
        "long": FastSlowPreset(
            "long", use_fast_slow_frames=True, num_fast=16, num_slow=8, fast_stride=2, slow_stride=8
        ),
    }
)
"""Read-only ``{"short", "medium", "long"}`` -> :class:`FastSlowPreset` (see the module table)."""

# Clip lengths (in frames) bounding the "medium" preset, both inclusive.
_MEDIUM_MIN_FRAMES = 30
_MEDIUM_MAX_FRAMES = 60


def get_fast_slow_preset(name: str) -> FastSlowPreset:
    """Look up a preset of :data:`FAST_SLOW_PRESETS` by name.

    Args:
        name: ``"short"``, ``"medium"`` or ``"long"``.

    Returns:
        The preset.

    Raises:
        ValueError: ``name`` is not a preset; the message lists the valid names.

    Example:
        >>> preset = get_fast_slow_preset("medium")
        >>> preset.num_fast, preset.num_slow, preset.fast_stride, preset.slow_stride
        (8, 8, 1, 4)
    """
    return FAST_SLOW_PRESETS[check_choice("name", name, PRESET_NAMES)]


def preset_for_num_frames(num_frames: int) -> FastSlowPreset:
    """Pick the preset for a clip of ``num_frames`` frames.

    ``T < 30`` gives ``"short"`` (all frames), ``30 <= T <= 60`` gives ``"medium"`` and
    ``T > 60`` gives ``"long"``.

    Args:
        num_frames: Number of frames ``T`` in the clip, ``>= 1``.

    Returns:
        The preset for that clip length.

    Raises:
        TypeError: ``num_frames`` is not an int.
        ValueError: ``num_frames < 1``.

    Example:
        >>> [preset_for_num_frames(t).name for t in (29, 30, 60, 61)]
        ['short', 'medium', 'medium', 'long']
    """
    t = check_int("num_frames", num_frames, minimum=1)
    if t < _MEDIUM_MIN_FRAMES:
        return FAST_SLOW_PRESETS["short"]
    if t <= _MEDIUM_MAX_FRAMES:
        return FAST_SLOW_PRESETS["medium"]
    return FAST_SLOW_PRESETS["long"]
