"""The ``flexframe`` command: ``masks``, ``show``, help, and clear errors for what users mistype.

Commands run in-process through ``flexframe.cli.main`` (fast); one subprocess checks that
``python -m flexframe`` is wired up. Pictures are checked by their pixels against masks built
from the brute-force definitions in ``tests/strategies.py``; block counts likewise.
"""

from __future__ import annotations

import os
import re
import string
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.colors import to_rgb
from strategies import reference_dense

from flexframe import get_mask, get_mask_entry, list_masks
from flexframe.cli import UsageError, main, parse_mask_params
from flexframe.viz import (
    ATTEND_COLOR,
    FULL_BLOCK_COLOR,
    MASKED_COLOR,
    PARTIAL_BLOCK_COLOR,
    SKIPPED_BLOCK_COLOR,
    mask_summary,
)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def color_share(png, color: str) -> float:
    """Share of the image's pixels within 3/255 of ``color``."""
    img = mpimg.imread(png)[..., :3]
    return float((np.abs(img - np.asarray(to_rgb(color))).max(axis=-1) <= 3 / 255).mean())


def blocks_of(dense: torch.Tensor, block: int) -> tuple[int, int, int]:
    """(full, partial, skipped) blocks of a dense mask, by looping over blocks; padded cells
    count as masked, as FlexAttention pads them."""
    n_q, n_k = dense.shape
    full = partial = skipped = 0
    for q0 in range(0, n_q, block):
        for k0 in range(0, n_k, block):
            tile = torch.zeros(block, block, dtype=torch.bool)
            part = dense[q0 : q0 + block, k0 : k0 + block]
            tile[: part.shape[0], : part.shape[1]] = part
            if tile.all():
                full += 1
            elif tile.any():
                partial += 1
            else:
                skipped += 1
    return full, partial, skipped


# -- the command and its help --------------------------------------------------------------------
def test_python_dash_m_flexframe_prints_help_with_the_three_subcommands():
    result = subprocess.run(
        [sys.executable, "-m", "flexframe", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: flexframe")
    for command in ("masks", "show", "ablate"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "command, expected",
    [
        ("masks", ["PATTERN", "wildcard"]),
        ("show", ["KEY=VALUE", "--out", "--block-size", "num_frames=3"]),
        ("ablate", ["--config", "--videos", "--steps", "--out", "--seeds", "--num-clips-train"]),
    ],
)
def test_every_subcommand_has_help(capsys, command, expected):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: flexframe {command}")
    for word in expected:
        assert word in out, word


def test_no_subcommand_is_a_usage_error(capsys):
    code, _, err = run(capsys)
    assert code == 2
    assert "COMMAND" in err


# -- masks ---------------------------------------------------------------------------------------
def test_masks_lists_every_registered_mask_with_its_parameters_and_description(capsys):
    code, out, _ = run(capsys, "masks")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 * len(list_masks())
    for name, (head, desc) in zip(
        list_masks(), zip(lines[::2], lines[1::2], strict=True), strict=True
    ):
        entry = get_mask_entry(name)
        assert head.startswith(f"{name}(")
        for p in entry.parameters:
            assert p.name in head
        assert desc.strip() == entry.description and desc.strip()
    # every required parameter of causal-frame is shown; the default of timestamp-causal too
    assert "causal-frame(num_frames: int, num_patches_per_frame: int)" in lines
    assert any("within_frame" in line and "'full'" in line for line in lines)


def test_masks_filters_by_wildcard(capsys):
    code, out, _ = run(capsys, "masks", "*frame*")
    heads = [line.split("(")[0] for line in out.splitlines()[::2]]
    assert code == 0
    assert heads == ["causal-frame", "packed-causal-frame", "prompt-causal-frame"]


def test_masks_with_a_pattern_that_matches_nothing_is_an_error(capsys):
    code, out, err = run(capsys, "masks", "casual*")
    assert code == 2 and out == ""
    assert "no registered mask matches 'casual*'" in err


# -- show ----------------------------------------------------------------------------------------
def test_show_writes_both_pictures_and_prints_summary_and_block_sparsity(capsys, tmp_path):
    out = tmp_path / "pics" / "m.png"
    code, stdout, err = run(
        capsys,
        "show",
        "causal-frame",
        "num_frames=4",
        "num_patches_per_frame=2",
        "--out",
        str(out),
        "--block-size",
        "2",
    )
    assert code == 0, err
    dense = reference_dense("causal-frame", {"num_frames": 4, "num_patches_per_frame": 2})
    full, partial, skipped = blocks_of(dense, 2)
    assert (full, partial, skipped) == (10, 0, 6)  # the reference itself, by hand
    # The summary, once (its block line included), then the files: no second block line.
    summary = mask_summary(
        get_mask("causal-frame", num_frames=4, num_patches_per_frame=2), block_size=2
    )
    assert stdout.startswith(summary + "\n") and stdout.count(summary) == 1
    assert stdout[len(summary) + 1 :].splitlines() == [
        f"wrote {out} (every token) and {out.with_name('m_blocks.png')} (2x2 blocks)"
    ]
    block_lines = [line for line in summary.splitlines() if "2x2" in line]
    assert len(block_lines) == 1, summary
    numbers = re.findall(r"\d+", block_lines[0].replace(",", ""))
    assert {str(full), str(skipped), "16"} <= set(numbers), block_lines  # the brute-force counts
    assert "causal-frame" in stdout and "num_frames=4" in stdout
    # element picture: attend vs masked cells in the proportion of the brute-force mask
    attend, masked = color_share(out, ATTEND_COLOR), color_share(out, MASKED_COLOR)
    assert attend > 0.1 and masked > 0.05
    assert attend / (attend + masked) == pytest.approx(dense.float().mean().item(), abs=0.01)
    # block picture: full vs skipped blocks in the proportion counted above, no partial block
    blocks = out.with_name("m_blocks.png")
    assert blocks.exists()
    f_share = color_share(blocks, FULL_BLOCK_COLOR)
    s_share = color_share(blocks, SKIPPED_BLOCK_COLOR)
    assert f_share / (f_share + s_share) == pytest.approx(full / (full + skipped), abs=0.01)
    assert color_share(blocks, PARTIAL_BLOCK_COLOR) < 0.005  # the legend swatch at most
    assert mpimg.imread(out).shape[2] in (3, 4)


def test_show_draws_the_mask_it_was_asked_for(capsys, tmp_path):
    """Another mask, another picture: token-causal attends in 21/36 cells, not causal-frame's."""
    out = tmp_path / "t.png"
    code, _, err = run(capsys, "show", "token-causal", "seq_len=6", "--out", str(out))
    assert code == 0, err
    attend, masked = color_share(out, ATTEND_COLOR), color_share(out, MASKED_COLOR)
    want = reference_dense("token-causal", {"seq_len": 6}).float().mean().item()
    assert want == pytest.approx(21 / 36)
    assert attend / (attend + masked) == pytest.approx(want, abs=0.01)


def test_show_reads_list_values_and_defaults_to_name_png(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(
        capsys, "show", "timestamp-causal", "timestamps=[0,4,2]", "num_patches_per_frame=1"
    )
    assert code == 0, err
    assert (tmp_path / "timestamp-causal.png").exists()
    assert (tmp_path / "timestamp-causal_blocks.png").exists()
    assert "timestamps=[0, 4, 2]" in out


@pytest.mark.parametrize(
    "argv, needles",
    [
        (
            ["show", "casual-frame", "num_frames=3", "num_patches_per_frame=3"],
            ["unknown mask 'casual-frame'", "Did you mean 'causal-frame'"],
        ),
        (
            ["show", "causal-frame", "num_frams=3", "num_patches_per_frame=3"],
            ["unknown parameter num_frams=3", "Did you mean 'num_frames'"],
        ),
        (["show", "causal-frame", "num_frames=3"], ["missing", "num_patches_per_frame"]),
        (["show", "causal-frame", "num_frames=0", "num_patches_per_frame=3"], ["num_frames", "0"]),
        (
            ["show", "causal-frame", "num_frames=three", "num_patches_per_frame=3"],
            ["num_frames must be an int", "'three'"],
        ),
        (
            ["show", "causal-frame", "num_frames", "num_patches_per_frame=3"],
            ["KEY=VALUE", "'num_frames'"],
        ),
        (
            ["show", "causal-frame", "num_frames=3", "num_frames=4", "num_patches_per_frame=3"],
            ["'num_frames' is given twice"],
        ),
        (["show", "causal-frame", "--num-frames", "3"], ["KEY=VALUE", "num_frames=3"]),
        (["show", "token-causal", "seq_len=4", "--out", "m.jpg"], ["--out", ".png", "m.jpg"]),
        (["ablate", "--stesp", "3"], ["--stesp", "Did you mean '--steps'"]),
        (["ablate", "--steps", "many"], ["--steps", "invalid int value: 'many'"]),
        (["masks", "a", "b"], ["unrecognized", "b"]),
    ],
)
def test_mistakes_print_one_clear_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, needles):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not list(tmp_path.glob("*.png"))  # nothing drawn for a bad request


@pytest.mark.parametrize("size", ["0", "-4"])
def test_show_with_a_block_size_below_1_is_one_usage_line(capsys, tmp_path, monkeypatch, size):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "show", "token-causal", "seq_len=4", "--block-size", size)
    assert (code, out) == (2, "")
    assert err == f"flexframe show: error: --block-size must be an int >= 1, got {size}\n"
    assert not list(tmp_path.glob("*.png"))


# -- parameter parsing ---------------------------------------------------------------------------
KEYS = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12).filter(lambda k: k.strip("_"))
VALUES = st.one_of(
    st.integers(-(10**6), 10**6),
    st.lists(st.integers(0, 1000), max_size=6),
    st.sampled_from(["full", "causal", "concat"]),
    st.booleans(),
)


@given(st.dictionaries(KEYS, VALUES, max_size=5))
def test_key_value_words_read_back_as_the_values_written(params):
    def word(value):
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list):
            return "[" + ",".join(str(v) for v in value) + "]"
        return str(value)

    assert parse_mask_params([f"{k}={word(v)}" for k, v in params.items()]) == params


def test_a_value_yaml_cannot_read_stays_text_and_an_equals_sign_may_appear_in_it():
    assert parse_mask_params(["a=[1,", "b=x=y"]) == {"a": "[1,", "b": "x=y"}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_mask_params(["=3"])


def test_a_rank_other_than_0_prints_an_error_of_its_own_machine(tmp_path):
    # A file missing on one node: that rank says so, marked with its rank (rank 0 may be fine).
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    cmd = [sys.executable, "-m", "flexframe", "ablate", "--videos", str(tmp_path / "none*.mp4"),
           "--out", str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("[rank 1] flexframe ablate: error: --videos:"), proc.stderr
    # A mistake in the settings is the same on every rank: rank 0 alone reports it.
    cmd = [sys.executable, "-m", "flexframe", "ablate", "--lr", "-1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (2, "")


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["ablate", "--steps", "five"], ["argument --steps", "invalid int value: 'five'"]),
        (["ablate", "--lr", "fast"], ["argument --lr", "invalid float value: 'fast'"]),
        (["ablate", "--loss-type", "l2"], ["argument --loss-type", "invalid choice: 'l2'"]),
        (["ablate", "--seeds", "a,b"], ["argument --seeds", "'a,b'"]),
        (["ablate", "--steps"], ["argument --steps", "expected one argument"]),
        (["ablat"], ["argument COMMAND", "invalid choice: 'ablat'"]),
        (["show", "full", "seq_len=4", "--block-size", "big"], ["--block-size", "'big'"]),
        ([], ["required: COMMAND"]),
    ],
)
def test_argparse_errors_are_one_line_like_flexframes_own(capsys, argv, needles):
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1, err  # no usage block
    assert err.startswith("flexframe") and ": error: " in err and "usage:" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert "--help" in err  # where the usage is


def test_version_prints_the_package_version(capsys):
    import flexframe

    code, out, _ = run(capsys, "--version")
    assert (code, out) == (0, f"flexframe {flexframe.__version__}\n")
