"""The mask registry: masks by name, so that a config file can choose one.

``@register_mask("name")`` registers a factory that takes the mask's parameters and returns a
:class:`MaskSpec`; ``get_mask("name", **params)`` is the single front door; ``list_masks()``
lists what is there. Built-in masks register themselves the same way users' masks do.
"""

from __future__ import annotations

import fnmatch
import inspect
import itertools
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flexframe._checks import close_matches, did_you_mean
from flexframe.masks.cache import clear_block_mask_cache
from flexframe.masks.spec import MaskSpec

MaskFactory = Callable[..., MaskSpec]


@dataclass(frozen=True)
class MaskParameter:
    """One parameter of a registered mask: its name, whether it is required, and its default."""

    name: str
    required: bool
    default: Any = None
    annotation: str = ""

    def __str__(self) -> str:
        kind = f": {self.annotation}" if self.annotation else ""
        return f"{self.name}{kind}" if self.required else f"{self.name}{kind} = {self.default!r}"


@dataclass(frozen=True)
class MaskEntry:
    """A registered mask: its name, the factory that builds it, a one-line description and
    its parameters (read from the factory's signature).

    Example:
        >>> from flexframe import get_mask_entry
        >>> [p.name for p in get_mask_entry("sliding-window").parameters]
        ['num_frames', 'num_patches_per_frame', 'window_size', 'sink_frames']
    """

    name: str
    factory: MaskFactory
    description: str
    parameters: tuple[MaskParameter, ...]
    version: int = field(default=0, compare=False)
    """Which registration of the name this is: part of its specs' cache keys."""

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def signature(self) -> str:
        """``name(param, param = default, ...)``, as ``flexframe masks`` prints it."""
        return f"{self.name}({', '.join(str(p) for p in self.parameters)})"


def _annotation(hint: Any, raw: Any) -> str:
    """How ``flexframe masks`` shows a parameter's type: a Literal by its values."""
    if typing.get_origin(hint) is typing.Literal:
        return " | ".join(repr(v) for v in typing.get_args(hint))
    if isinstance(raw, str):
        return raw
    return getattr(raw, "__name__", str(raw))


def _parameters_of(factory: MaskFactory) -> tuple[MaskParameter, ...]:
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # an annotation that cannot be resolved: show it as written
        hints = {}
    params = []
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(
                f"mask factory {factory.__name__} takes *{p.name}: registered masks need "
                "named parameters so that a config can be checked against them"
            )
        annotation = ""
        if p.annotation is not inspect.Parameter.empty:
            annotation = _annotation(hints.get(p.name), p.annotation)
        required = p.default is inspect.Parameter.empty
        params.append(MaskParameter(p.name, required, None if required else p.default, annotation))
    return tuple(params)


def _first_sentence(doc: str | None) -> str:
    if not doc:
        return ""
    text = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split()).replace("``", "")
    # A sentence ends at a period followed by a capital or the end ("f - 2 .. f" is no end).
    match = re.match(r"(.+?[.!?])(\s+[A-Z]|$)", text)
    return match.group(1) if match else text


class MaskRegistry:
    """Masks by name. One instance, ``flexframe.masks.registry.REGISTRY``, serves the package.

    Example:
        >>> from flexframe.masks.registry import MaskRegistry
        >>> reg = MaskRegistry()
        >>> len(reg)
        0
    """

    def __init__(self) -> None:
        self._entries: dict[str, MaskEntry] = {}
        self._versions = itertools.count()  # a replaced mask's specs never share cache keys

    def register(
        self, name: str, *, description: str | None = None, overwrite: bool = False
    ) -> Callable[[MaskFactory], MaskFactory]:
        """Decorator: register ``factory`` under ``name``. See :func:`register_mask`."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"mask name must be a non-empty string, got {name!r}")

        def decorator(factory: MaskFactory) -> MaskFactory:
            if name in self._entries and not overwrite:
                raise ValueError(
                    f"a mask named {name!r} is already registered "
                    f"({self._entries[name].factory.__module__}."
                    f"{self._entries[name].factory.__qualname__}); pass overwrite=True to "
                    "replace it"
                )
            entry = MaskEntry(
                name=name,
                factory=factory,
                description=description or _first_sentence(factory.__doc__),
                parameters=_parameters_of(factory),
                version=next(self._versions),
            )
            self._entries[name] = entry
            clear_block_mask_cache(name)  # a replaced mask must not be served from the cache
            return factory

        return decorator

    def unregister(self, name: str) -> None:
        """Remove a mask (mostly for tests and notebooks that register temporary masks)."""
        self.entry(name)
        del self._entries[name]
        clear_block_mask_cache(name)

    def entry(self, name: str) -> MaskEntry:
        """The registered entry of ``name``; an unknown name lists the close matches."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            hint = did_you_mean(str(name), self._entries)
            known = ", ".join(self.list())
            raise KeyError(f"unknown mask {name!r}.{hint} Registered masks: {known}") from None

    def create(self, name: str, **params: Any) -> MaskSpec:
        """Build the spec of ``name`` with ``params``, checking the parameter names first."""
        entry = self.entry(name)
        unknown = [p for p in params if p not in entry.parameter_names]
        if unknown:
            bad = unknown[0]
            hits = close_matches(bad, entry.parameter_names)
            hint = f" Did you mean {hits[0]!r}?" if hits else ""
            raise TypeError(
                f"mask {name!r} got an unknown parameter {bad}={params[bad]!r}.{hint} "
                f"Its parameters: {entry.signature()}"
            )
        missing = [p.name for p in entry.parameters if p.required and p.name not in params]
        if missing:
            raise TypeError(
                f"mask {name!r} is missing the parameter(s) {', '.join(missing)}. "
                f"Its parameters: {entry.signature()}"
            )
        spec = entry.factory(**params)
        if not isinstance(spec, MaskSpec):
            raise TypeError(
                f"the factory of mask {name!r} returned {type(spec).__name__}, not a MaskSpec"
            )
        # The registration that built it (and whatever the factory itself combined) identifies
        # the spec in the BlockMask caches: a re-registered name is never served stale.
        tag = ("registered", name, entry.version)
        if not (isinstance(spec.origin, tuple) and spec.origin[:3] == tag):  # a reused spec
            object.__setattr__(spec, "origin", (*tag, spec.origin))
            spec.__dict__.pop("cache_key", None)  # worked out again from the new origin
        return spec

    def list(self, pattern: str | None = None) -> list[str]:
        """Registered names, sorted, optionally filtered by a wildcard pattern."""
        names = sorted(self._entries)
        if pattern is not None:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


REGISTRY = MaskRegistry()


def register_mask(
    name: str, *, description: str | None = None, overwrite: bool = False
) -> Callable[[MaskFactory], MaskFactory]:
    """Register a mask factory under ``name`` so that :func:`get_mask` serves it.

    The factory takes the mask's parameters by name and returns a :class:`MaskSpec`. Registering
    a name twice raises unless ``overwrite=True`` (which also drops its cached BlockMasks).

    Args:
        name: the registry name, e.g. ``"my-mask"``.
        description: one line for ``list_masks``/``flexframe masks``; defaults to the first
            sentence of the factory's docstring.
        overwrite: replace an existing mask of that name.

    Example:
        >>> from flexframe import MaskSpec, get_mask, register_mask
        >>> @register_mask("first-token-only", overwrite=True)
        ... def first_token_only(seq_len: int) -> MaskSpec:
        ...     '''Every query sees the first token only.'''
        ...     return MaskSpec("first-token-only", {"seq_len": seq_len}, seq_len, seq_len,
        ...                     mod_factory=lambda device: lambda b, h, q, kv: kv == 0)
        >>> get_mask("first-token-only", seq_len=3).to_dense().int().tolist()
        [[1, 0, 0], [1, 0, 0], [1, 0, 0]]
    """
    return REGISTRY.register(name, description=description, overwrite=overwrite)


def get_mask(name: str, **params: Any) -> MaskSpec:
    """The :class:`MaskSpec` registered as ``name``, built with ``params``.

    Raises:
        KeyError: unknown name; the message lists the close matches.
        TypeError: a missing or unknown parameter, named with the value given.
        ValueError: a parameter value out of range, named with the value given.

    Example:
        >>> from flexframe import get_mask
        >>> spec = get_mask("sliding-window", num_frames=4, num_patches_per_frame=1, window_size=1)
        >>> spec.to_dense().int().tolist()
        [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    """
    return REGISTRY.create(name, **params)


def list_masks(pattern: str | None = None) -> list[str]:
    """The registered mask names, sorted; ``pattern`` filters with wildcards (``"*frame*"``).

    Example:
        >>> from flexframe import list_masks
        >>> list_masks("*frame*")
        ['causal-frame', 'packed-causal-frame', 'prompt-causal-frame']
    """
    return REGISTRY.list(pattern)


def get_mask_entry(name: str) -> MaskEntry:
    """The registry entry of ``name``: factory, description and parameters.

    Example:
        >>> from flexframe import get_mask_entry
        >>> get_mask_entry("token-causal").signature()
        'token-causal(seq_len: int)'
    """
    return REGISTRY.entry(name)
