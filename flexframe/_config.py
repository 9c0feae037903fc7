"""The one mechanism behind flexframe's config dataclasses: typed settings, checked by field.

A config is a dataclass whose fields are made with :func:`setting`: each says its kind (``int``,
``float``, ``choice``, ...), its limits and a line of help. :func:`check_settings` (called from
``__post_init__``) checks and normalises every field by its kind, :func:`from_mapping` builds a
config from a dict (an unknown key names the closest known one) and :func:`read_yaml` reads a
YAML file of ``setting: value`` lines. The ablation, the reconstruction loss and the decoder are
configured this way, so a mistake in any of them reads the same.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from flexframe._checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    did_you_mean,
    resolve_device,
)

T = TypeVar("T")


def setting(default: Any, help: str, kind: str, *, section: str = "", **limits: Any) -> Any:
    """A dataclass field whose value :func:`check_settings` checks by ``kind``.

    Kinds: ``int`` and ``int?`` (``minimum``), ``float`` and ``float?`` (``low``, ``high``,
    ``strict_low``), ``bool`` and ``bool?``, ``choice`` (``choices``), ``str?``, ``seeds``,
    ``paths``, ``path``, ``path?``, ``device``, ``mapping?``. A trailing ``?`` admits ``None``.

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass
        ... class Demo:
        ...     steps: int = setting(10, "optimizer steps", "int", minimum=1)
        ...     def __post_init__(self):
        ...         check_settings(self)
        >>> Demo(steps=0)
        Traceback (most recent call last):
        ...
        ValueError: steps must be >= 1, got 0
    """
    meta = {"section": section, "help": help, "kind": kind, **limits}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def check_setting(f: dataclasses.Field, value: Any) -> Any:
    """``value`` checked (and normalised) for the field ``f``; errors name the field.

    Example:
        >>> import dataclasses
        >>> f = dataclasses.field(metadata={"kind": "seeds"}); f.name = "seeds"
        >>> check_setting(f, 3)
        [0, 1, 2]
    """
    meta, name = f.metadata, f.name
    kind = meta["kind"]
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    if kind == "int":
        return check_int(name, value, minimum=meta.get("minimum"))
    if kind == "float":
        if isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise TypeError(f"{name} must be a number, got {value!r} (str)") from None
        return check_number(
            name,
            value,
            low=meta.get("low"),
            high=meta.get("high"),
            strict_low=meta.get("strict_low", False),
        )
    if kind == "bool":
        return check_bool(name, value)
    if kind == "choice":
        return check_choice(name, value, meta["choices"])
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name} must be a non-empty string, got {value!r}")
        return value
    if kind == "seeds":
        return _check_seeds(value)
    if kind == "paths":
        if isinstance(value, (str, os.PathLike)):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise TypeError(f"{name} must be a path, a glob or a list of them, got {value!r}")
        for i, v in enumerate(value):
            if not isinstance(v, (str, os.PathLike)) or not str(v):
                raise TypeError(f"{name}[{i}] must be a path or glob, got {v!r}")
        return [os.fspath(v) for v in value]
    if kind == "path":
        if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
            raise TypeError(f"{name} must be a path, got {value!r}")
        return os.fspath(value)
    if kind == "device":
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string like 'cpu' or 'cuda:0', got {value!r}")
        if value != "auto":
            try:
                import torch

                torch.device(value)
            except RuntimeError:
                resolve_device(value, name)  # raises the one device message
        return value
    if kind == "mapping":
        if not isinstance(value, Mapping):
            raise TypeError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    raise AssertionError(f"unhandled setting kind {kind!r}")  # pragma: no cover


def _check_seeds(value: Any) -> list[int]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"seeds must be a count >= 1 or a list of seeds, got {value}")
        return list(range(int(value)))
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(f"seeds must be a count >= 1 or a non-empty list of ints, got {value!r}")
    out = []
    for i, s in enumerate(value):
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise ValueError(f"seeds[{i}] must be an int >= 0, got {s!r}")
        out.append(int(s))
    if len(set(out)) != len(out):
        raise ValueError(f"seeds must be distinct, got {out}")
    return out


def check_settings(config: Any) -> None:
    """Check and normalise every field of ``config`` made with :func:`setting`."""
    for f in dataclasses.fields(config):
        if "kind" in f.metadata:
            setattr(config, f.name, check_setting(f, getattr(config, f.name)))


def from_mapping(cls: type[T], values: Mapping[str, Any], source: str = "the config") -> T:
    """A ``cls`` from ``{field: value}``: an unknown key names the closest field, and every
    error says where the value came from (``source``).

    Example:
        >>> from flexframe.experiment import AblationConfig
        >>> from_mapping(AblationConfig, {"stpes": 5})
        Traceback (most recent call last):
        ...
        ValueError: unknown setting 'stpes' in the config. Did you mean 'steps' or 'seeds'? ...
    """
    if not isinstance(values, Mapping):
        raise TypeError(
            f"{source} must be a mapping of setting names to values, got {type(values).__name__}"
        )
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in values:
        if key not in known:
            raise ValueError(
                f"unknown setting {key!r} in {source}.{did_you_mean(str(key), known)} "
                f"Settings: {', '.join(known)}"
            )
    try:
        return cls(**dict(values))
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{exc} in {source}") from None


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML file of ``setting: value`` lines (empty file: ``{}``).

    Raises:
        FileNotFoundError: no such file, or a folder (the message names it).
        ValueError: not YAML, or not a mapping.
        ImportError: PyYAML is not installed (``pip install "flexframe[cli]"``).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise FileNotFoundError(f"config file '{path}' {what}")
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - yaml comes with the cli extra
        raise ImportError(
            'reading a YAML config needs PyYAML: pip install "flexframe[cli]"'
        ) from exc
    try:
        values = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"config file '{path}' is not valid YAML: {exc}") from None
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ValueError(
            f"config file '{path}' must hold a mapping of setting: value lines, got "
            f"{type(values).__name__}"
        )
    return dict(values)


def field_names(cls: type, section: str | None = None) -> Sequence[str]:
    """The names of ``cls``'s settings, optionally those of one ``section``."""
    return [
        f.name
        for f in dataclasses.fields(cls)
        if "kind" in f.metadata and (section is None or f.metadata.get("section") == section)
    ]
