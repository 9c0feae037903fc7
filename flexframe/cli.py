"""The ``flexframe`` command: list masks, draw one, run the ablation, roll out a world model.

Four subcommands (``flexframe SUBCOMMAND --help`` for each)::

    flexframe masks [PATTERN]                        the registered masks and their parameters
    flexframe show NAME KEY=VALUE ... [--out FILE]   draw a mask (every token, and its blocks)
    flexframe ablate [--config FILE] [--videos ...]  train the configurations, print a table
    flexframe rollout [--steps N] [--out FILE]       train a small world model, stream it out

``python -m flexframe`` is the same command; ``flexframe --version`` prints the version. Every
mistake in what was typed (an unknown mask, a bad parameter, a missing file, a flag argparse
cannot read) prints one line on stderr and exits with status 2; Ctrl-C exits with 130 after
saying what was kept. Under ``torchrun`` only rank 0 prints.

A subcommand is one function that adds its parser (and sets ``handler``) plus its handler;
:data:`SUBCOMMANDS` lists the adders in ``--help`` order.

Example:
    >>> main(["masks", "token-*"])
    token-causal(seq_len: int)
        ...
    0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from flexframe._checks import close_matches, did_you_mean

__all__ = ["SUBCOMMANDS", "UsageError", "build_parser", "main", "parse_mask_params"]

PROG = "flexframe"
INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""


class UsageError(Exception):
    """Something the user typed is wrong; printed as one line, exit status 2.

    ``rank_local``: the cause may lie in this process's machine alone (a file missing on one
    node), so under torchrun every rank that hits it prints it, marked with its rank; errors in
    the settings themselves are the same on every rank and rank 0 alone prints them.
    """

    def __init__(self, message: str, rank_local: bool = False) -> None:
        super().__init__(message)
        self.rank_local = rank_local


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (a :class:`UsageError`), not the usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _is_main_process() -> bool:
    """Whether this process may print: always without torchrun, rank 0 alone under it."""
    return int(os.environ.get("RANK", "0")) == 0


def _say(message: str) -> None:
    """One line on stderr, from rank 0 only."""
    if _is_main_process():
        print(message, file=sys.stderr, flush=True)


# -- masks ---------------------------------------------------------------------------------------
def _cmd_masks(args: argparse.Namespace) -> int:
    from flexframe.masks import get_mask_entry, list_masks

    names = list_masks(args.pattern)
    if not names:
        hint = did_you_mean(args.pattern, list_masks())
        raise UsageError(
            f"no registered mask matches {args.pattern!r}.{hint} Registered masks: "
            f"{', '.join(list_masks())}"
        )
    for name in names:
        entry = get_mask_entry(name)
        print(entry.signature())
        print(f"    {entry.description}")
    return 0


def _add_masks(sub: Any) -> None:
    masks = sub.add_parser(
        "masks",
        help="list the registered masks",
        description="List the registered masks: signature (parameters and defaults) and a "
        "one-line description.",
    )
    masks.add_argument("pattern", nargs="?", default=None, metavar="PATTERN",
                       help="wildcard filter, e.g. '*causal*' (quote it)")  # fmt: skip
    masks.set_defaults(handler=_cmd_masks)


# -- show ----------------------------------------------------------------------------------------
def _read_value(text: str) -> Any:
    """``text`` read as YAML (``3`` an int, ``[0,4,2]`` a list, ``full`` a string), or as JSON
    where PyYAML is not installed; text neither can read stays text."""
    try:
        import yaml
    except ImportError:
        try:
            return json.loads(text)
        except ValueError:
            return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_mask_params(items: Sequence[str]) -> dict[str, Any]:
    """Mask parameters from ``KEY=VALUE`` words: ``["num_frames=3"]`` -> ``{"num_frames": 3}``.

    Each value is read as YAML, so ``3`` is an int, ``[0, 4, 2]`` a list, ``full`` a string and
    ``true`` a bool; a value YAML cannot read stays a string.

    Raises:
        UsageError: an item without ``=``, an empty key, or a key given twice.

    Example:
        >>> parse_mask_params(["num_frames=3", "timestamps=[0,4,2]", "within_frame=full"])
        {'num_frames': 3, 'timestamps': [0, 4, 2], 'within_frame': 'full'}
    """
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(
                f"mask parameters are KEY=VALUE (for example num_frames=3), got {item!r}"
            )
        if key in params:
            raise UsageError(f"mask parameter {key!r} is given twice: {params[key]!r} and {text!r}")
        params[key] = _read_value(text) if text.strip() else text
    return params


def _cmd_show(args: argparse.Namespace) -> int:
    import flexframe.viz as viz
    from flexframe.masks import get_mask

    if args.block_size < 1:
        raise UsageError(f"--block-size must be an int >= 1, got {args.block_size}")
    params = parse_mask_params(args.params)
    try:
        spec = get_mask(args.name, **params)
    except KeyError as exc:  # KeyError's str() adds quotes; the message is args[0]
        raise UsageError(exc.args[0]) from None
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out) if args.out is not None else Path(f"{args.name}.png")
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out must name a .png file, got '{args.out}'")
    blocks_out = out.with_name(f"{out.stem}_blocks{out.suffix}")
    out.parent.mkdir(parents=True, exist_ok=True)
    print(viz.mask_summary(spec, block_size=args.block_size))  # its block counts included
    viz.visualize_mask(spec, path=out, block_size=args.block_size)
    viz.plot_block_sparsity(spec, args.block_size, path=blocks_out)
    size = f"{args.block_size}x{args.block_size}"
    print(f"wrote {out} (every token) and {blocks_out} ({size} blocks)")
    return 0


def _add_show(sub: Any) -> None:
    show = sub.add_parser(
        "show",
        help="draw a mask to PNG and print its summary",
        description="Build a registered mask, print its summary (with its block counts), and "
        "draw it twice: every token (FILE) and FlexAttention's blocks (FILE_blocks.png).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  flexframe show causal-frame num_frames=3 num_patches_per_frame=3 --out m.png\n"
        "  flexframe show timestamp-causal timestamps=[0,4,2] num_patches_per_frame=2\n"
        "values are read as YAML: 3 is an int, [0,4,2] a list, full a string",
    )
    show.add_argument("name", help="the mask's registry name (see `flexframe masks`)")
    show.add_argument("params", nargs="*", metavar="KEY=VALUE",
                      help="the mask's parameters, e.g. num_frames=3")  # fmt: skip
    show.add_argument("--out", metavar="FILE", default=None,
                      help="PNG to write (default: NAME.png)")  # fmt: skip
    show.add_argument("--block-size", type=int, default=128, metavar="N",
                      help="FlexAttention block size for the block picture and counts "
                      "(default: 128)")  # fmt: skip
    show.set_defaults(handler=_cmd_show)


# -- ablate --------------------------------------------------------------------------------------
def _seeds_arg(text: str) -> int | list[int]:
    """``3`` (a count), ``0,1,2`` or ``[0, 1, 2]`` (a list)."""
    words = text.strip().removeprefix("[").removesuffix("]").split(",")
    try:
        values = [int(w) for w in words]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count or a list like 0,1,2, got {text!r}"
        ) from None
    return values[0] if len(values) == 1 and "," not in text and "[" not in text else values


def _optional_int(text: str) -> int | None:
    if text.lower() in ("none", "null", "preset"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or 'none', got {text!r}") from None


_FLAG_TYPES: dict[str, dict[str, Any]] = {
    "int": {"type": int, "metavar": "N"},
    "int?": {"type": _optional_int, "metavar": "N"},
    "float": {"type": float, "metavar": "X"},
    "bool": {"action": argparse.BooleanOptionalAction},
    "seeds": {"type": _seeds_arg, "metavar": "N|LIST"},
    "paths?": {"nargs": "+", "metavar": "PATH_OR_GLOB"},
    "path": {"metavar": "DIR"},
    "path?": {"metavar": "DIR"},
    "device": {"metavar": "DEVICE"},
}


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``AblationConfig`` field, grouped by section, absent unless given."""
    from flexframe.experiment.config import CONFIG_SECTIONS, AblationConfig

    defaults = AblationConfig()
    groups = {s: parser.add_argument_group(f"{s} settings") for s in CONFIG_SECTIONS}
    for f in dataclasses.fields(AblationConfig):
        meta = f.metadata
        default = getattr(defaults, f.name)
        kw: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": f"{meta['help']} (default: {'none' if default is None else default})",
        }
        if meta["kind"] == "choice":
            kw["choices"] = meta["choices"]
        else:
            kw.update(_FLAG_TYPES[meta["kind"]])
        groups[meta["section"]].add_argument("--" + f.name.replace("_", "-"), **kw)


def _check_out_folder(out: str, flag: str) -> None:
    """Create ``out`` and write a probe file in it, so that an unwritable folder fails now and
    not after training."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} must be a folder, but '{out}' is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ValueError(f"{flag}: cannot write into '{out}' ({exc.strerror or exc})") from None


def _ablate_setup(args: argparse.Namespace) -> Any:
    """The config file, then the flags, checked and loaded once (``prepare_ablation``)."""
    from flexframe.experiment import AblationConfig, load_ablation_config, prepare_ablation

    config = load_ablation_config(args.config) if args.config else AblationConfig()
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(AblationConfig)
             if hasattr(args, f.name)}  # fmt: skip
    if flags:
        config = config.updated(**flags)
    name = "--videos" if "videos" in flags else "videos"  # errors name what the user wrote
    setup = prepare_ablation(config, log=_say, videos_name=name)
    # Rank 0 alone writes the files, but every rank checks: a rank that returned here alone
    # would leave the others waiting for it in the process group.
    _check_out_folder(config.out, "--out" if "out" in flags else "out")
    return setup


def _save_partial(result: Any, out: str) -> str:
    """Write the finished runs of a stopped ablation; the clause that says where."""
    if result is None or not result.runs or not _is_main_process():
        return "no run had finished, so nothing was written"
    paths = result.save(out)
    runs = f"{len(result.runs)} finished run(s)"
    return f"wrote the {runs} to {paths['json']} and {paths['markdown']}"


def _cmd_ablate(args: argparse.Namespace) -> int:
    from flexframe.distributed import shutdown_distributed
    from flexframe.experiment import AblationInterrupted, RunStopped, run_ablation

    # Under torchrun the ranks other than 0 print nothing, warnings included.
    with warnings.catch_warnings():
        if not _is_main_process():
            warnings.simplefilter("ignore")
        # Everything the user chose is checked (and the data loaded) before any training, so a
        # mistake is one line; an error during training is a bug and keeps its traceback.
        try:
            setup = _ablate_setup(args)
        except (FileNotFoundError, ImportError) as exc:
            raise UsageError(str(exc), rank_local=True) from None
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        out = setup.config.out
        try:
            result = run_ablation(setup)
        except FloatingPointError as exc:  # a diverging loss: the settings, not the code
            shutdown_distributed(synchronize=False)
            _say(f"{PROG} ablate: error: {exc}")
            return 1
        except RunStopped as exc:  # every rank stops at the same step
            shutdown_distributed()
            if exc.folder is not None:
                then = (
                    "run the same command again to resume it: a run resumed at or past step "
                    f"{exc.step} goes on to the end, and a run that starts before step "
                    f"{exc.step} stops there again"
                )
            else:
                then = "a rerun starts over; give --checkpoint-dir to be able to resume"
            _say(f"{PROG} ablate: {exc}; {then}; {_save_partial(exc.result, out)}")
            return 0
        except AblationInterrupted as exc:
            shutdown_distributed(synchronize=False)
            _say(f"{PROG} ablate: interrupted (Ctrl-C); {_save_partial(exc.result, out)}")
            return INTERRUPTED
        except BaseException:
            shutdown_distributed(synchronize=False)
            raise
        shutdown_distributed()
    if not _is_main_process():
        return 0  # under torchrun, rank 0 alone writes files and prints the table
    paths = result.save(out)
    print(result.markdown(), end="")
    written = ", ".join(str(p) for p in paths.values())
    print(f"wrote {written} ({result.total_seconds:.0f} s in all)", file=sys.stderr)
    return 0


def _add_ablate(sub: Any) -> None:
    ablate = sub.add_parser(
        "ablate",
        help="run the seed design's ablation and print its table",
        description="Train the reconstruction setup under four configurations (Baseline: "
        "token-causal mask, all frames; +Frame Mask; +Fast-Slow; Full) with the same seeds, data "
        "and budget, and report training loss, held-out next-frame error against the 'next "
        "frame = this frame' baseline, and time. Writes results.json, results.md, "
        "loss_curves.png and masks.png into --out. Every setting can come from a YAML file "
        "(--config; see examples/ablation.yaml); flags override it.",
    )
    ablate.add_argument("--config", metavar="FILE", default=None,
                        help="YAML file of settings (flags override it)")  # fmt: skip
    _add_setting_flags(ablate)
    ablate.set_defaults(handler=_cmd_ablate)


def _add_rollout(sub: Any) -> None:
    from flexframe.experiment.rollout import add_rollout_command

    add_rollout_command(sub)


SUBCOMMANDS: list[Callable[[Any], None]] = [_add_masks, _add_show, _add_ablate, _add_rollout]
"""The subcommands' parser adders, in ``--help`` order."""


# -- the parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``flexframe`` argument parser with its subcommands.

    Example:
        >>> build_parser().parse_args(["show", "token-causal", "seq_len=4"]).params
        ['seq_len=4']
    """
    from flexframe._version import __version__

    parser = _Parser(
        prog=PROG,
        description="Frame-level attention masks for video models: list them, draw them, and "
        "run the seed design's ablation.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _unknown_flags_message(command: str, extras: list[str], parser: argparse.ArgumentParser) -> str:
    flags = [
        s
        for action in parser._actions  # argparse keeps no public list of a parser's flags
        for s in action.option_strings
    ]
    first = extras[0]
    if command == "show" and first.startswith("--"):
        key = first[2:].split("=")[0].replace("-", "_")
        return (
            f"unrecognized argument {first!r}: mask parameters are given as KEY=VALUE, e.g. {key}=3"
        )
    hits = close_matches(first.split("=")[0], flags) if first.startswith("-") else []
    hint = f" Did you mean {hits[0]!r}?" if hits else ""
    return f"unrecognized argument(s): {' '.join(extras)}.{hint}"


def _print_usage_error(command: str | None, exc: UsageError) -> None:
    line = f"{PROG} {command}: error: {exc}" if command else f"{PROG}: error: {exc}"
    if exc.rank_local and not _is_main_process():
        print(f"[rank {os.environ['RANK']}] {line}", file=sys.stderr, flush=True)
    else:
        _say(line)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flexframe`` command with ``argv`` (default: ``sys.argv[1:]``); the exit status.

    Example:
        >>> main(["masks", "full"])
        full(seq_len: int, kv_len: int | None = None)
            Everything visible: ...
        0
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # argparse keeps no public handle on its subcommands' parsers
    parsers: dict[str, argparse.ArgumentParser] = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr,assignment]
    command = next((a for a in argv if a in parsers), None)
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            raise UsageError(_unknown_flags_message(args.command, extras, parsers[args.command]))
        return args.handler(args)
    except SystemExit as exc:  # --help and --version (0), printed by argparse
        return int(exc.code or 0)
    except UsageError as exc:
        _print_usage_error(command, exc)
        return 2
    except KeyboardInterrupt:
        _say(f"{PROG}{' ' + command if command else ''}: interrupted (Ctrl-C)")
        return INTERRUPTED
