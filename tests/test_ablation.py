"""``flexframe ablate`` and its pieces: the config (file, flags, errors), the data (moving digits
and video files), the fairness of the four runs, and the files it writes.

The end-to-end runs are tiny (4 clips of 16 frames at 16x16, a few steps) so that the whole file
stays well under a minute on two CPU cores. Expected numbers (copy-baseline errors, which frames
each configuration predicts, which masks leak) are computed here by hand or by brute force, not
through the code under test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.colors import to_rgb
from strategies import reference_dense

from flexframe import get_mask
from flexframe.cli import main
from flexframe.data import write_video
from flexframe.experiment import (
    ABLATION_CONFIGURATIONS,
    AblationConfig,
    FrameEncoder,
    build_models,
    leak_free,
    load_ablation_config,
    load_ablation_data,
    prepare_ablation,
    run_ablation,
)
from flexframe.experiment.configurations import LEAK_CONFIGURATIONS, configurations_for
from flexframe.experiment.data import clip_views, transform_clips
from flexframe.experiment.models import build_train_step
from flexframe.viz import ATTEND_COLOR, MASKED_COLOR

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["Baseline", "+Frame Mask", "+Fast-Slow", "Full"]

# A tiny setup: T = 16 frames of 16x16, patches of 8 (P = 4 tokens a frame); fast frames 12..15,
# slow frames 8, 10, 12, 14 (window 4 * 2 = 8 frames ending at the clip's end).
T, P = 16, 4
FAST, SLOW = [12, 13, 14, 15], [8, 10, 12, 14]
TINY = {
    "num_frames": T,
    "image_size": 16,
    "num_clips_train": 4,
    "num_clips_test": 2,
    "num_fast": 4,
    "num_slow": 4,
    "fast_stride": 1,
    "slow_stride": 2,
    "hidden_size": 16,
    "predictor_dim": 16,
    "predictor_heads": 2,
    "batch_size": 2,
    "steps": 3,
    "warmup_steps": 1,
    "eval_batch_size": 2,
    "seeds": [0],
    "quiet": True,
}


def write_config(path: Path, **values) -> Path:
    path.write_text(yaml.safe_dump({**TINY, **values}))
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def features(clips: torch.Tensor) -> torch.Tensor:
    """``[N, T, 1, 16, 16]`` -> ``[N, T, 4, 64]`` pixel-patch features in [-1, 1], by loops."""
    n, t = clips.shape[:2]
    out = torch.empty(n, t, 4, 64)
    for i, (r, c) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8)]):
        out[:, :, i] = clips[:, :, 0, r : r + 8, c : c + 8].reshape(n, t, 64) * 2 - 1
    return out


def copy_error(feat: torch.Tensor, pairs: list[tuple[int, int]]) -> float:
    """MSE of 'next frame = this frame' over (frame, next frame) pairs, every pair equal size."""
    return float(torch.stack([(feat[:, a] - feat[:, b]).pow(2).mean() for a, b in pairs]).mean())


def color_share(png, color: str) -> float:
    img = mpimg.imread(png)[..., :3]
    return float((np.abs(img - np.asarray(to_rgb(color))).max(axis=-1) <= 3 / 255).mean())


# -- the whole command on moving digits ----------------------------------------------------------
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One run of the command: a config file, overridden by two flags."""
    root = tmp_path_factory.mktemp("ablate")
    config = write_config(root / "tiny.yaml", steps=2, out=str(root / "from_file"))
    out = root / "out"
    stdout, stderr = io.StringIO(), io.StringIO()  # capsys is per test; this fixture is shared
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(
            ["ablate", "--config", str(config), "--steps", "6", "--seeds", "0,1", "--out", str(out)]
        )
    return {
        "code": code,
        "out": out,
        "stdout": stdout.getvalue(),
        "stderr": stderr.getvalue(),
        "results": json.loads((out / "results.json").read_text()) if code == 0 else None,
        "config": load_ablation_config(config),
    }


def table_lines(text: str) -> list[list[str]]:
    """The rows of the first Markdown table in ``text``, as cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.split("|")[1:-1]])
    return rows


def test_ablate_runs_and_prints_a_four_row_table_with_distinct_columns(digits_run):
    assert digits_run["code"] == 0, digits_run["stderr"]
    rows = table_lines(digits_run["stdout"])
    assert len(rows) == 2 + 4  # header, separator, one row per configuration
    assert [row[0] for row in rows[2:]] == NAMES
    header = rows[0]
    assert len(set(header)) == len(header), header  # no two columns share a name
    for column in ("Mask", "Train loss", "Held-out error", "Held-out copy error",
                   "Held-out / copy", "Last-frame error", "Last-frame copy error",
                   "Last-frame / copy", "Step (ms)"):  # fmt: skip
        assert column in header, column
    # 64 tokens are one block of 128: the block-sparsity figure says nothing there, and the
    # notes say why it is left out.
    assert "Block sparsity" not in header
    assert "Block sparsity is left out" in digits_run["stdout"]
    assert "1 steps" not in digits_run["stdout"] and "6 steps of batch 2" in digits_run["stdout"]
    md = (digits_run["out"] / "results.md").read_text()
    assert table_lines(md) == rows


def test_flags_override_the_config_file_and_the_file_sets_the_rest(digits_run):
    config = digits_run["results"]["config"]
    assert config["steps"] == 6 and config["seeds"] == [0, 1]  # flags
    assert config["out"] == str(digits_run["out"])  # flag, not the file's from_file
    assert not (digits_run["out"].parent / "from_file").exists()
    for key in ("num_frames", "image_size", "num_clips_train", "batch_size", "hidden_size"):
        assert config[key] == TINY[key], key  # the file
    assert digits_run["config"].steps == 2  # what the file alone says


def test_results_json_has_every_run_and_summary_field(digits_run):
    results = digits_run["results"]
    runs, summary = results["runs"], results["summary"]
    assert [(r["configuration"], r["seed"]) for r in runs] == [
        (n, s) for s in (0, 1) for n in NAMES
    ]
    for r in runs:
        assert len(r["loss_curve"]) == 6
        assert all(np.isfinite(r["loss_curve"]))
        assert r["final_train_loss"] == pytest.approx(r["loss_curve"][-1])  # last 10% of 6 = 1
        for key in ("test_error", "copy_error", "last_frame_error", "last_frame_copy_error"):
            assert r[key] > 0 and np.isfinite(r[key]), key
        assert r["train_seconds"] > 0
        assert r["leak_free"] is True
    assert [row["configuration"] for row in summary] == NAMES
    for row in summary:
        seeds = [r["test_error"] for r in runs if r["configuration"] == row["configuration"]]
        assert row["test_error_mean"] == pytest.approx(np.mean(seeds))
        assert row["test_error_std"] == pytest.approx(np.std(seeds, ddof=1))
        assert row["num_seeds"] == 2
    data = results["data"]
    assert (data["source"], data["num_train_clips"], data["num_test_clips"]) == (
        "moving-digits",
        4,
        2,
    )
    assert data["clip_shape"] == [T, 1, 16, 16]
    assert results["device"] == "cpu" and results["attention_backend"] == "sdpa"


def test_each_configuration_has_its_mask_frames_and_tokens(digits_run):
    by_name = {row["configuration"]: row for row in digits_run["results"]["summary"]}
    assert by_name["Baseline"]["mask"] == "token-causal"
    assert by_name["+Frame Mask"]["mask"] == "causal-frame"
    assert by_name["Full"]["mask"] == "timestamp-causal"
    assert by_name["+Fast-Slow"]["mask"].startswith("timestamp-causal (token-causal within")
    for name in ("Baseline", "+Frame Mask"):
        assert (by_name[name]["num_layout_frames"], by_name[name]["num_tokens"]) == (T, T * P)
    for name in ("+Fast-Slow", "Full"):
        assert (by_name[name]["num_layout_frames"], by_name[name]["num_tokens"]) == (8, 8 * P)
    runs = digits_run["results"]["runs"]
    fast_slow = next(r for r in runs if r["configuration"] == "Full")["layout_frame_indices"]
    assert sorted(fast_slow) == sorted(FAST + SLOW)
    # At most 64 tokens: every mask is one partial 128x128 block, none skipped.
    assert all(row["block_sparsity"] == 0.0 for row in by_name.values())


def test_copy_baselines_match_a_hand_computation(digits_run):
    """The trivial predictor's errors, from the held-out clips and the frame pairs by hand."""
    config = AblationConfig.from_dict({**TINY, "steps": 6})
    feat = features(load_ablation_data(config).test)
    all_pairs = [(t, t + 1) for t in range(T - 1)]
    fast_slow_pairs = list(zip(FAST, FAST[1:], strict=False)) + list(
        zip(SLOW, SLOW[1:], strict=False)
    )
    last = copy_error(feat, [(T - 2, T - 1)])
    for row in digits_run["results"]["summary"]:
        pairs = all_pairs if row["num_layout_frames"] == T else fast_slow_pairs
        assert row["copy_error"] == pytest.approx(copy_error(feat, pairs), rel=1e-5)
        assert row["last_frame_copy_error"] == pytest.approx(last, rel=1e-5)
    assert copy_error(feat, all_pairs) != pytest.approx(copy_error(feat, fast_slow_pairs), rel=1e-3)


def test_the_four_runs_of_a_seed_start_equal_and_read_the_same_batches(digits_run):
    runs = digits_run["results"]["runs"]
    for seed in (0, 1):
        mine = [r for r in runs if r["seed"] == seed]
        for key in ("init_checksum", "batch_order_checksum", "num_parameters"):
            assert len({r[key] for r in mine}) == 1, (seed, key)
    assert runs[0]["init_checksum"] != runs[4]["init_checksum"]  # seeds do differ
    assert runs[0]["batch_order_checksum"] != runs[4]["batch_order_checksum"]


def test_the_four_configurations_build_identical_weights():
    """Independently of the checksums: same seed, same tensors, whatever the configuration."""
    config = AblationConfig.from_dict(TINY)
    built = [build_models(config, c, seed=3) for c in ABLATION_CONFIGURATIONS]
    reference = {
        **built[0][0].state_dict(),
        **{f"m.{k}": v for k, v in built[0][1].state_dict().items()},
    }
    for encoder, module in built[1:]:
        state = {**encoder.state_dict(), **{f"m.{k}": v for k, v in module.state_dict().items()}}
        assert state.keys() == reference.keys()
        for key, value in state.items():
            assert torch.equal(value, reference[key]), key
    other_seed = build_models(config, ABLATION_CONFIGURATIONS[0], seed=4)[0]
    assert not torch.equal(other_seed.embed.weight, built[0][0].embed.weight)


def test_pictures_are_valid_pngs_with_the_right_content(digits_run):
    out = digits_run["out"]
    curves = mpimg.imread(out / "loss_curves.png")
    assert curves.ndim == 3 and curves.shape[0] > 200 and curves.shape[1] > 400
    for i in range(4):  # one line (and bar) colour per configuration, matplotlib's C0..C3
        assert color_share(out / "loss_curves.png", f"C{i}") > 1e-4, i
    masks = out / "masks.png"
    img = mpimg.imread(masks)
    assert img.shape[1] > 2 * img.shape[0]  # four panels side by side
    # Equal panels, so the attend share of the picture is the mean of the four masks' shares.
    layout = digits_run["results"]["runs"][3]["layout_frame_indices"]
    shares = [
        reference_dense("token-causal", {"seq_len": T * P}),
        reference_dense("causal-frame", {"num_frames": T, "num_patches_per_frame": P}),
        reference_dense("timestamp-causal", {"timestamps": layout, "num_patches_per_frame": P,
                                             "within_frame": "causal"}),
        reference_dense("timestamp-causal", {"timestamps": layout, "num_patches_per_frame": P}),
    ]  # fmt: skip
    want = float(np.mean([s.float().mean().item() for s in shares]))
    attend, masked = color_share(masks, ATTEND_COLOR), color_share(masks, MASKED_COLOR)
    assert attend / (attend + masked) == pytest.approx(want, abs=0.02)


def test_progress_goes_to_stderr_and_not_as_a_bar_when_not_a_terminal(digits_run):
    err = digits_run["stderr"]
    assert "it/s" not in err and "\r" not in err  # no tqdm bar: stderr is not a terminal
    assert "wrote" in err and "results.json" in err
    assert "|" not in err.replace("loss_curves", "")  # the table is on stdout only


# -- videos --------------------------------------------------------------------------------------
def ramp(num_frames: int, start: int = 0) -> torch.Tensor:
    """``[T, 3, 16, 16]`` flat frames; frame t has brightness (10 + 5 t) / 255."""
    values = torch.tensor([(10 + 5 * (start + t)) / 255 for t in range(num_frames)])
    return values.view(-1, 1, 1, 1).expand(num_frames, 3, 16, 16).clone()


def frame_numbers(clips: torch.Tensor) -> torch.Tensor:
    """The frame number each clip frame shows, read back from its brightness."""
    return ((clips.mean(dim=(2, 3, 4)) * 255 - 10) / 5).round().long()


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    for name in ("a", "b", "c"):
        write_video(root / f"{name}.mp4", ramp(20))
    write_video(root / "short.mp4", ramp(8))
    (root / "broken.mp4").write_bytes(b"\x00\x01 not a video" * 300)
    return root


def test_ablate_on_videos_skips_broken_and_short_files_by_name(capsys, tmp_path, video_dir):
    config = write_config(tmp_path / "v.yaml", quiet=False)
    code, out, err = run(
        capsys, "ablate", "--config", config, "--videos", str(video_dir / "*.mp4"),
        "--steps", "2", "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    assert re.search(r"skipped video .*broken\.mp4: unreadable", err)
    assert re.search(r"skipped video .*short\.mp4: too short: 8 frames, need at least 16", err)
    assert "3 of 5 video(s) used (2 skipped)" in err
    data = json.loads((tmp_path / "out" / "results.json").read_text())["data"]
    assert [Path(p).name for p in data["videos_used"]] == ["a.mp4", "b.mp4", "c.mp4"]
    assert sorted(Path(s["path"]).name for s in data["videos_skipped"]) == [
        "broken.mp4",
        "short.mp4",
    ]
    # 20 frames give 5 windows of 16 (starts 0..4); a and b train, c is held out
    assert (data["num_train_clips"], data["num_test_clips"]) == (10, 5)
    assert data["clip_shape"] == [T, 3, 16, 16]
    assert len(table_lines(out)) == 6


def test_video_clips_are_consecutive_windows_of_the_files(video_dir):
    config = AblationConfig.from_dict(
        {**TINY, "videos": [str(video_dir / f"{n}.mp4") for n in "abc"]}
    )
    data = load_ablation_data(config, log=lambda _: None)
    numbers = frame_numbers(data.train)
    want = torch.tensor([[s + t for t in range(T)] for s in range(5)])
    assert torch.equal(numbers, torch.cat([want, want]))
    assert torch.equal(frame_numbers(data.test), want)


def test_a_single_video_is_split_in_time_without_sharing_frames(tmp_path):
    path = write_video(tmp_path / "one.mp4", ramp(40))
    config = AblationConfig.from_dict({**TINY, "videos": str(path), "test_fraction": 0.5})
    data = load_ablation_data(config, log=lambda _: None)
    train, test = frame_numbers(data.train), frame_numbers(data.test)
    assert int(train.max()) < 20 <= int(test.min())  # train on frames 0..19, test on 20..39
    assert torch.equal(train[:, 0], torch.arange(5)) and torch.equal(
        test[:, 0], torch.arange(20, 25)
    )
    short = write_video(tmp_path / "short_one.mp4", ramp(24))
    config = AblationConfig.from_dict({**TINY, "videos": str(short)})
    with pytest.raises(ValueError, match=r"only one usable video .*short_one\.mp4.*24 frames"):
        load_ablation_data(config, log=lambda _: None)


# -- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, needles",
    [
        (["--config", "{tmp}/nope.yaml"], ["config file", "nope.yaml", "does not exist"]),
        (
            ["--videos", "{tmp}/missing/*.mp4"],
            ["--videos: the pattern", "missing/*.mp4", "matches no file"],
        ),
        (["--videos", "{tmp}/clip.mp4"], ["--videos: no such file", "clip.mp4"]),
        (["--config", "{tmp}/videos.yaml"], ["error: videos: the pattern", "missing/*.mp4"]),
        (["--videos", "{tmp}/bad/*.mp4"], ["no usable video", "junk.mp4", "unreadable"]),
        (
            ["--config", "{tmp}/typo.yaml"],
            ["unknown setting 'stpes'", "Did you mean 'steps'", "typo.yaml"],
        ),
        (
            ["--config", "{tmp}/badvalue.yaml"],
            ["batch_size must be an int", "'eight'", "badvalue.yaml"],
        ),
        (["--config", "{tmp}/list.yaml"], ["must hold a mapping", "list"]),
        (["--config", "{tmp}/notyaml.yaml"], ["not valid YAML", "notyaml.yaml"]),
        (["--image-size", "20"], ["image_size must be a multiple of patch_size", "20"]),
        (["--num-frames", "16"], ["preset 'short'", "num_fast"]),
        (["--seeds", "0,0"], ["seeds must be distinct"]),
        (["--num-fast", "1"], ["num_fast must be >= 2", "got num_fast=1"]),
        (["--test-fraction", "0"], ["test_fraction", "0.0"]),
        (["--loss-type", "l2"], ["--loss-type", "invalid choice: 'l2'"]),
        (["--device", "tpu"], ["device='tpu' is not a device"]),
        (["--out", "{tmp}/afile/out"], ["--out: cannot write into", "afile/out"]),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(capsys, tmp_path, args, needles):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "junk.mp4").write_bytes(b"junk" * 100)
    (tmp_path / "typo.yaml").write_text("stpes: 3\n")
    (tmp_path / "badvalue.yaml").write_text("batch_size: eight\n")
    (tmp_path / "list.yaml").write_text("- steps\n- 3\n")
    (tmp_path / "notyaml.yaml").write_text("steps: [3\n")
    (tmp_path / "afile").write_text("a file, not a folder")
    base = {k: v for k, v in TINY.items() if k not in ("num_fast", "num_slow", "fast_stride",
                                                       "slow_stride")}  # fmt: skip
    config = write_config(tmp_path / "base.yaml")
    config.write_text(yaml.safe_dump(base | {"num_frames": 32}))
    videos = base | {"num_frames": 32, "videos": str(tmp_path / "missing" / "*.mp4")}
    (tmp_path / "videos.yaml").write_text(yaml.safe_dump(videos))
    argv = ["ablate", "--config", config, "--out", tmp_path / "out"]
    argv += [a.format(tmp=tmp_path) for a in args]
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    assert "Traceback" not in err
    assert "running" not in err  # refused before any training
    for needle in needles:
        assert needle in err, (needle, err)
    assert not (tmp_path / "out").exists()


# -- checkpoints: resume only what can be resumed --------------------------------------------
def test_resuming_with_changed_settings_is_refused_naming_them(capsys, tmp_path):
    """The checkpoint remembers what shaped its training; a rerun that differs is refused (and
    trains nothing), a rerun that differs only in bookkeeping resumes."""
    config = write_config(tmp_path / "c.yaml")
    base = ["ablate", "--config", config, "--checkpoint-dir", tmp_path / "ck",
            "--checkpoint-every", "2"]  # fmt: skip
    code, _, err = run(capsys, *base, "--steps", "4", "--out", tmp_path / "first")
    assert code == 0, err
    first = json.loads((tmp_path / "first" / "results.json").read_text())
    folder = tmp_path / "ck" / "baseline-seed0"
    code, out, err = run(capsys, *base, "--steps", "6", "--lr", "0.1", "--out", tmp_path / "o2")
    assert (code, out) == (2, "")
    assert err.startswith(f"flexframe ablate: error: cannot resume the checkpoint in '{folder}'")
    assert (
        "steps=4 in the checkpoint, 6 now" in err and "lr=0.003 in the checkpoint, 0.1 now" in err
    )
    assert "the learning rate decays over all steps" in err
    assert "Traceback" not in err and "running" not in err and not (tmp_path / "o2").exists()
    code, _, err = run(capsys, *base, "--steps", "4", "--data-seed", "1", "--out", tmp_path / "o3")
    assert code == 2
    assert "data_seed=0 in the checkpoint, 1 now" in err and "data_checksum=" in err
    assert "steps=" not in err  # only what differs is named
    code, _, err = run(
        capsys, *base, "--steps", "4", "--parallel", "fsdp", "--out", tmp_path / "o4"
    )
    assert code == 2 and "parallel='ddp' in the checkpoint, 'fsdp' now" in err, err
    # Out, quiet, checkpoint_every, stop_after_step and eval_batch_size are bookkeeping, and
    # device, backend and parallel mode spelled as what "auto" gives on the CPU are the same run,
    # as is recomputing activations: resumed at step 4 of 4, the run trains no further and
    # reports the first run's training.
    code, _, err = run(capsys, *base[:-1], "3", "--steps", "4", "--eval-batch-size", "1",
                       "--stop-after-step", "3", "--device", "cpu", "--attention-backend", "sdpa",
                       "--parallel", "ddp", "--activation-checkpointing",
                       "--out", tmp_path / "again")  # fmt: skip
    assert code == 0, err
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert [r["resumed_from_step"] for r in again["runs"]] == [4, 4, 4, 4]
    assert [r["loss_curve"] for r in again["runs"]] == [r["loss_curve"] for r in first["runs"]]


def test_a_stopped_ablate_says_how_to_resume_and_the_same_command_does(capsys, tmp_path):
    config = write_config(tmp_path / "c.yaml")
    argv = ["ablate", "--config", config, "--steps", "4", "--stop-after-step", "2",
            "--checkpoint-dir", tmp_path / "ck", "--out", tmp_path / "out"]  # fmt: skip
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    folder = tmp_path / "ck" / "baseline-seed0"
    said = (
        f"Baseline (seed 0) stopped after step 2 as asked (stop_after_step=2); its checkpoint is "
        f"in {folder}; run the same command again to resume it"
    )
    assert said in err, err
    code, _, err = run(capsys, *argv)  # Baseline resumes at step 2 and ends; the next run stops
    assert code == 0, err
    assert "+Frame Mask (seed 0) stopped after step 2" in err and "Baseline" not in err, err
    code, _, err = run(capsys, *argv[:7], "--out", tmp_path / "nock")  # no --checkpoint-dir
    assert code == 0, err
    assert "Baseline (seed 0) stopped after step 2" in err and "nothing was saved" in err
    assert "run the same command again" not in err and "give --checkpoint-dir" in err


# -- the config ----------------------------------------------------------------------------------
def test_the_example_config_documents_every_setting_with_its_default():
    path = ROOT / "examples" / "ablation.yaml"
    keys = list(yaml.safe_load(path.read_text()))
    assert keys == [f.name for f in dataclasses.fields(AblationConfig)]
    assert load_ablation_config(path) == AblationConfig()
    text = path.read_text()
    for key in keys:  # every key has a comment, on its line or just above it
        line = next(i for i, s in enumerate(text.splitlines()) if s.startswith(f"{key}:"))
        around = text.splitlines()[line - 1 : line + 1]
        assert any("#" in s for s in around), key


def test_config_values_are_checked_and_normalized():
    assert AblationConfig.from_dict({"seeds": 3}).seeds == [0, 1, 2]
    assert AblationConfig.from_dict({"lr": "1e-3"}).lr == 0.001  # what PyYAML gives for 1e-3
    assert AblationConfig.from_dict({"videos": "a/*.mp4"}).videos == ["a/*.mp4"]
    assert AblationConfig().updated(steps=5).steps == 5
    with pytest.raises(TypeError, match=r"steps must be an int, got 2.5"):
        AblationConfig.from_dict({"steps": 2.5})
    with pytest.raises(TypeError, match=r"quiet must be true or false, got 'yes'"):
        AblationConfig.from_dict({"quiet": "yes"})
    with pytest.raises(
        ValueError, match=r"fast_slow_preset must be one of .*Did you mean 'medium'"
    ):
        AblationConfig.from_dict({"fast_slow_preset": "meduim"})
    with pytest.raises(ValueError, match=r"lr must be > 0.0, got 0.0"):
        AblationConfig.from_dict({"lr": 0})
    with pytest.raises(ValueError, match=r"predictor_dim must be divisible by predictor_heads"):
        AblationConfig.from_dict({"predictor_dim": 30, "predictor_heads": 4})


# -- the pieces ----------------------------------------------------------------------------------
@given(st.integers(0, 4), st.integers(0, 2**31 - 1))
@settings(max_examples=10)
def test_the_stand_in_llm_never_mixes_frames(frame, seed):
    """Changing frame j changes the hidden states of frame j only."""
    torch.manual_seed(0)
    encoder = FrameEncoder(patch_size=4, channels=1, hidden_size=8, tokens_per_frame=4)
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(2, 5, 1, 8, 8, generator=g)
    changed = frames.clone()
    changed[:, frame] = torch.rand(2, 1, 8, 8, generator=g)
    with torch.no_grad():
        a, b = encoder(frames).view(2, 5, 4, 8), encoder(changed).view(2, 5, 4, 8)
    for f in range(5):
        assert torch.equal(a[:, f], b[:, f]) == (f != frame), f


@pytest.mark.parametrize(
    "name, params, frames, targets",
    [
        # [slow | fast] of the tiny setup; the next frame of the own stream is the target
        (
            "timestamp-causal",
            {"timestamps": SLOW + FAST},
            SLOW + FAST,
            [10, 12, 14, -1, 13, 14, 15, -1],
        ),
        (
            "fast-slow",
            {"num_fast_frames": 4, "num_slow_frames": 4},
            SLOW + FAST,
            [10, 12, 14, -1, 13, 14, 15, -1],
        ),
        ("token-causal", {"seq_len": 16}, SLOW + FAST, [10, 12, 14, -1, 13, 14, 15, -1]),
        ("token-causal", {"seq_len": 16}, list(range(8)), [1, 2, 3, 4, 5, 6, 7, -1]),
        ("causal-frame", {"num_frames": 8}, list(range(8)), [1, 2, 3, 4, 5, 6, 7, -1]),
        ("full", {"seq_len": 16}, list(range(8)), [1, 2, 3, 4, 5, 6, 7, -1]),
    ],
)
def test_leak_check_agrees_with_brute_force(name, params, frames, targets):
    p = 2
    if name not in ("token-causal", "full"):
        params = {**params, "num_patches_per_frame": p}
    spec = get_mask(name, **params)
    dense = reference_dense(name, params)
    want = brute_force_leak_free([dense], frames, targets, p)
    got = leak_free(spec, torch.tensor(frames), torch.tensor(targets), p)
    assert got == want
    # the seed design's fast-slow mask and token order over [slow | fast] leak; the others don't
    assert want == (
        name in ("timestamp-causal", "causal-frame")
        or frames == list(range(8))
        and name == "token-causal"
    )


# -- paired comparisons ------------------------------------------------------------------------
T_975_ONE_DF = 12.706204736  # Student's t, 97.5 % quantile, 1 degree of freedom (two seeds)


def test_the_comparisons_pair_each_seeds_runs_with_a_t_interval(digits_run):
    """Each configuration's last-frame error against Baseline's and each held-out error against
    its own copy error, over the two seeds: mean and 95 % interval by hand, and the verdict."""
    results = digits_run["results"]
    runs = {(r["configuration"], r["seed"]): r for r in results["runs"]}
    comparisons = results["comparisons"]

    def check(got: dict, differences: list[float]) -> None:
        mean = sum(differences) / 2
        half = T_975_ONE_DF * abs(differences[0] - differences[1]) / 2  # t * sd / sqrt(2)
        assert got["mean"] == pytest.approx(mean, rel=1e-9, abs=1e-15)
        assert got["low"] == pytest.approx(mean - half, rel=1e-6, abs=1e-12)
        assert got["high"] == pytest.approx(mean + half, rel=1e-6, abs=1e-12)
        want = "better" if mean + half < 0 else "worse" if mean - half > 0 else "no detectable"
        assert got["verdict"].startswith(want)

    assert "Baseline" not in comparisons["last_frame_vs_baseline"]
    for name in NAMES[1:]:
        check(
            comparisons["last_frame_vs_baseline"][name],
            [runs[(name, s)]["last_frame_error"] - runs[("Baseline", s)]["last_frame_error"]
             for s in (0, 1)],
        )  # fmt: skip
    for name in NAMES:
        check(
            comparisons["held_out_vs_copy"][name],
            [runs[(name, s)]["test_error"] - runs[(name, s)]["copy_error"] for s in (0, 1)],
        )
    paired = table_lines(digits_run["stdout"].split("Paired over seeds")[1])
    assert [row[0] for row in paired[2:]] == NAMES
    for row in paired[3:]:  # each verdict shown beside its interval
        assert row[2] == comparisons["last_frame_vs_baseline"][row[0]]["verdict"]
        assert row[4] == comparisons["held_out_vs_copy"][row[0]]["verdict"]


# -- what a prediction builds on ------------------------------------------------------------------
def test_an_untrained_residual_model_copies_each_frame_its_own_features():
    """The prediction of a layout frame is its own frame's features plus the model's output
    (zero before training): the features of the frame it sits at, never of its target."""
    config = AblationConfig.from_dict(TINY)
    video = torch.rand(2, T, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    for configuration in ABLATION_CONFIGURATIONS:
        step = build_train_step(config, configuration, seed=0)
        with torch.no_grad():
            _, out = step(video, return_outputs=True)
        frames = step.module.frame_layout(T).frame_indices
        want = features(video)[:, frames]  # by loops, at the frames the layout holds
        torch.testing.assert_close(step.objective.predictions(out), want, rtol=0, atol=1e-6)
        torch.testing.assert_close(out.features.float(), want, rtol=0, atol=1e-6)


def test_the_target_scale_is_the_rms_change_at_each_layout_position():
    config = AblationConfig.from_dict(TINY)
    clips = load_ablation_data(config).train
    feat = features(clips)
    for configuration in (ABLATION_CONFIGURATIONS[0], ABLATION_CONFIGURATIONS[3],
                          LEAK_CONFIGURATIONS[2]):  # fmt: skip
        step = build_train_step(config, configuration, seed=0)
        fitted = step.objective.fitted(step, clips, batch_size=3, device=torch.device("cpu"))
        layout = step.module.frame_layout(T)
        frames = layout.frame_indices.tolist()
        if configuration.next_position_targets:
            targets = frames[1:] + [-1]  # the seed's: the next position of [slow | fast]
        else:
            targets = [frames[n] if n >= 0 else -1 for n in layout.next_index.tolist()]
        want = [
            float((feat[:, g] - feat[:, f]).pow(2).mean().sqrt()) if g >= 0 else 1.0
            for f, g in zip(frames, targets, strict=True)
        ]
        assert fitted.scale == pytest.approx(want, rel=1e-5), configuration.name


# -- the seed design's leaks, measured ---------------------------------------------------------
LEAK_NAMES = [c.name for c in LEAK_CONFIGURATIONS]


def brute_force_leak_free(denses: list[torch.Tensor], frames: list[int], targets: list[int],
                          p: int) -> bool:  # fmt: skip
    """No query token reaches, through any number of hops over any of the masks, a token of a
    frame at or after its target: a search over tokens."""
    n = denses[0].shape[0]
    union = torch.zeros(n, n, dtype=torch.bool)
    for dense in denses:
        union |= dense
    for q in range(n):
        target = targets[q // p]
        if target < 0:
            continue
        seen, todo = {q}, [q]
        while todo:
            i = todo.pop()
            for k in torch.nonzero(union[i]).flatten().tolist():
                if k not in seen:
                    seen.add(k)
                    todo.append(k)
        if any(frames[k // p] >= target for k in seen):
            return False
    return True


def masks_read(step, configuration, stand_in: str) -> list[torch.Tensor]:
    """Dense masks a prediction reads through, from their written definitions: the predictor's
    (the module's choice), the LLM's (the module's llm_mask, for the transformer stand-in), and
    ``full`` for the seed's cross-attention to its own input."""
    spec = step.module.mask_spec(num_frames=T, tokens_per_frame=P)
    denses = [reference_dense(spec.name, dict(spec.params))]
    if stand_in == "transformer":
        llm = step.module.llm_mask(T, P)
        denses.append(reference_dense(llm.name, dict(llm.params)))
    if configuration.memory_is_input:
        denses.append(torch.ones(spec.q_len, spec.q_len, dtype=torch.bool))
    return denses


@pytest.mark.parametrize("stand_in", ["per-frame", "transformer"])
def test_the_leak_check_says_no_for_the_seed_rows_and_yes_for_the_honest_ones(stand_in):
    config = AblationConfig.from_dict({**TINY, "stand_in": stand_in, "encoder_heads": 2})
    for configuration in (*ABLATION_CONFIGURATIONS, *LEAK_CONFIGURATIONS):
        step = build_train_step(config, configuration, seed=0)
        layout = step.module.frame_layout(T)
        targets = step.objective.target_frames(layout)
        frames = layout.frame_indices
        want = brute_force_leak_free(masks_read(step, configuration, stand_in), frames.tolist(),
                                     targets.tolist(), P)  # fmt: skip
        assert want is (not configuration.leaks), configuration.name
        assert leak_free(step.read_masks(T, P), frames, targets, P) is want, configuration.name


@pytest.mark.parametrize("stand_in", ["per-frame", "transformer"])
def test_no_prediction_moves_when_its_target_and_later_frames_change(stand_in):
    """Perturbation, with finite values: replace every frame from ``g`` on and no prediction
    whose target is ``g`` or earlier may change; the seed rows' predictions do (their leak is
    real)."""
    config = AblationConfig.from_dict({**TINY, "stand_in": stand_in, "encoder_heads": 2})
    gen = torch.Generator().manual_seed(1)
    video = torch.rand(1, T, 1, 16, 16, generator=gen)
    for configuration in (*ABLATION_CONFIGURATIONS, *LEAK_CONFIGURATIONS):
        step = build_train_step(config, configuration, seed=0).eval()
        torch.nn.init.normal_(step.module.output_proj.weight, std=0.5)  # a trained-like output
        targets = step.objective.target_frames(step.module.frame_layout(T))
        leaked = False
        with torch.no_grad():
            base = step.objective.predictions(step(video, return_outputs=True)[1])
            every = sorted({int(x) for x in targets if x >= 0})
            for g in every if len(every) <= 8 else every[::3] + every[-1:]:
                changed = video.clone()
                changed[:, g:] = torch.rand(changed[:, g:].shape, generator=gen)
                moved = step.objective.predictions(step(changed, return_outputs=True)[1])
                blind = targets <= g  # these predictions may not see frame g or later
                blind &= targets >= 0
                diff = (moved - base)[:, blind].abs().max()
                if configuration.leaks:
                    leaked |= bool(diff > 1e-4)
                else:
                    assert diff <= 1e-6, (configuration.name, g, float(diff))
        assert leaked == configuration.leaks, configuration.name


@pytest.fixture(scope="module")
def leak_run():
    """Full and the three leaking rows, 2 seeds, run through run_ablation."""
    config = AblationConfig.from_dict({**TINY, "steps": 4, "seeds": [0, 1], "leak_rows": True})
    rows = [c for c in configurations_for(config) if c.name == "Full" or c.leaks]
    setup = prepare_ablation(config, configurations=rows, log=lambda message: None)
    return run_ablation(setup, log=lambda message: None, progress=False)


def test_leak_rows_are_optional_labelled_and_shown_beside_full(leak_run):
    assert [c.name for c in configurations_for(AblationConfig.from_dict(TINY))] == NAMES
    assert [c.name for c in configurations_for(AblationConfig.from_dict(
        {**TINY, "leak_rows": True}))] == NAMES + LEAK_NAMES  # fmt: skip
    for r in leak_run.runs:
        assert (r.leak is None) is (r.configuration == "Full")
        assert r.leak_free is (r.configuration == "Full"), r.configuration
    md = leak_run.markdown()
    main_rows = table_lines(md)[2:]
    assert [row[0] for row in main_rows] == ["Full"] + [f"{n} (leaks)" for n in LEAK_NAMES]
    leak_table = table_lines(md.split("The seed design's leaks, measured")[1])
    assert [row[0] for row in leak_table[2:]] == LEAK_NAMES
    comparisons = leak_run.comparisons()["leak_vs_leak_free"]
    for row in leak_table[2:]:
        assert row[2] == "**no**" and row[5].endswith("(Full)")
        assert row[7] == comparisons[row[0]].verdict
    # The leaking rows share Full's weights, but for the memory=x row's new cross-attention.
    by = {(r.configuration, r.seed): r for r in leak_run.runs}
    for seed in (0, 1):
        full = by[("Full", seed)]
        for name in ("Leak: fast-slow mask", "Leak: next-position targets"):
            assert by[(name, seed)].init_checksum == full.init_checksum
            assert by[(name, seed)].batch_order_checksum == full.batch_order_checksum
        assert by[("Leak: memory=x", seed)].num_parameters > full.num_parameters


def test_no_honest_configuration_carries_a_leak_label():
    for c in ABLATION_CONFIGURATIONS:
        assert (c.leak, c.leaks, c.mask, c.memory_is_input, c.next_position_targets) == (
            None, False, None, False, False)  # fmt: skip
        assert "leak" not in c.name.lower()
    for c in LEAK_CONFIGURATIONS:
        assert c.leaks and c.compare_with == "Full" and c.name.startswith("Leak: ")


# -- the LLM-like stand-in ------------------------------------------------------------------
@given(st.booleans(), st.integers(0, 8 * P - 1), st.integers(0, 2**31 - 1))
@settings(max_examples=12)
def test_the_transformer_stand_in_never_lets_a_token_see_a_later_one(fast_slow, token, seed):
    """Perturb one token's patch: only the hidden states whose mask row admits that token
    change (and that token's own does), under the token-causal mask in time order and the
    module's fast/slow llm_mask; the gradients of every other hidden state are zero."""
    config = AblationConfig.from_dict({**TINY, "stand_in": "transformer", "encoder_heads": 2,
                                       "encoder_depth": 2})  # fmt: skip
    configuration = ABLATION_CONFIGURATIONS[3 if fast_slow else 1]
    step = build_train_step(config, configuration, seed=0).eval()
    layout = step.module.frame_layout(T)
    frames = layout.frame_indices.tolist()
    f = len(frames)
    token = token % (f * P)
    mask = step.module.llm_mask(T, P)
    if fast_slow:
        dense = reference_dense("timestamp-causal", {"timestamps": frames,
                                                     "num_patches_per_frame": P,
                                                     "within_frame": "causal"})  # fmt: skip
    else:
        dense = reference_dense("token-causal", {"seq_len": f * P})
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, f, 1, 16, 16, generator=gen, requires_grad=True)  # layout frames
    hidden = step.encoder(x, mask)[0]  # [F * P, hidden]
    r, c = divmod(token % P, 2)  # the patch's place: 2 x 2 patches of 8 pixels
    changed = x.detach().clone()
    changed[0, token // P, :, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] += 0.5
    with torch.no_grad():
        moved = (step.encoder(changed, mask)[0] - hidden).abs().amax(dim=-1)
    assert bool(moved[token] > 0)  # the perturbation does reach the model
    assert not bool((moved[~dense[:, token]] > 0).any())
    for i in torch.nonzero(~dense[:, token]).flatten().tolist()[:6]:
        (grad,) = torch.autograd.grad(hidden[i].sum(), x, retain_graph=True)
        assert not bool(grad[0, token // P, :, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8].any())


# -- refusals that name their numbers, and Ctrl-C ---------------------------------------------------
@pytest.mark.parametrize("batch_size, clips", [(5, 4), (1000, 4), (9, 8)])
def test_a_batch_larger_than_the_training_clips_is_refused_naming_both(
    capsys, tmp_path, batch_size, clips
):
    config = write_config(tmp_path / "c.yaml", num_clips_train=clips)
    code, out, err = run(capsys, "ablate", "--config", config, "--batch-size", batch_size,
                         "--out", tmp_path / "out")  # fmt: skip
    assert (code, out) == (2, "") and len(err.splitlines()) == 1, err
    assert f"batch_size={batch_size} is more than the {clips} training clips" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("num_frames, test_fraction", [(16, 0.25), (16, 0.5), (20, 0.1)])
def test_a_single_video_is_refused_below_the_frames_its_split_needs_and_accepted_at_them(
    tmp_path, num_frames, test_fraction
):
    """A lone video is split in time at round(count * (1 - test_fraction)); each side needs
    num_frames. The message names the fewest frames that do it, and that many are accepted."""
    settings_ = {**TINY, "num_frames": num_frames, "test_fraction": test_fraction}
    config = AblationConfig.from_dict(settings_)
    need = next(n for n in range(num_frames, 10_000)
                if round(n * (1 - test_fraction)) >= num_frames
                and n - round(n * (1 - test_fraction)) >= num_frames)  # fmt: skip
    gray = lambda count: torch.full((count, 1, 16, 16), 0.5)  # noqa: E731
    short = write_video(tmp_path / "short.mp4", gray(need - 1))
    with pytest.raises(ValueError, match=rf"{need - 1} frames.*at least {need} frames"):
        load_ablation_data(config.updated(videos=str(short)), log=lambda _: None)
    for count in (need, need + 1):
        path = write_video(tmp_path / f"ok{count}.mp4", gray(count))
        data = load_ablation_data(config.updated(videos=str(path)), log=lambda _: None)
        assert len(data.train) >= 1 and len(data.test) >= 1


def test_ctrl_c_keeps_the_finished_runs_and_says_where_in_one_line(tmp_path):
    config = write_config(tmp_path / "c.yaml", quiet=False, steps=20, seeds=[0, 1, 2])
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flexframe", "ablate", "--config", str(config), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # A shell's background job (`pytest &`) ignores SIGINT, and its children inherit that;
        # the child gets the default back, so that Python turns Ctrl-C into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    lines = []
    for line in proc.stderr:  # wait until one run has finished, then press Ctrl-C
        lines.append(line)
        if "seed 0: train loss" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=120)
    err = "".join(lines) + _
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    said = [line for line in err.splitlines() if "interrupted (Ctrl-C)" in line]
    assert len(said) == 1 and str(out / "results.json") in said[0], err
    saved = json.loads((out / "results.json").read_text())
    assert 1 <= saved["finished_runs"] < saved["planned_runs"] == 12
    assert len(saved["runs"]) == saved["finished_runs"]
    assert "Stopped early" in (out / "results.md").read_text()


# -- augmentation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("view", range(16))
def test_each_view_of_a_clip_moves_every_pixel_where_its_bits_say(view):
    """Pixel (t, y, x) of a view is the clip's pixel read through the view's flips, transpose
    and time reversal, applied one coordinate at a time."""
    clip = torch.randn(1, 3, 2, 4, 4, generator=torch.Generator().manual_seed(view))
    got = transform_clips(clip, torch.tensor([view]))[0]
    t_len, _, h, w = clip.shape[1:]
    for t in range(t_len):
        for y in range(h):
            for x in range(w):
                tt = t_len - 1 - t if view & 8 else t
                yy, xx = (x, y) if view & 4 else (y, x)  # the transpose comes after the flips
                yy = h - 1 - yy if view & 2 else yy
                xx = w - 1 - xx if view & 1 else xx
                assert torch.equal(got[t, :, y, x], clip[0, tt, :, yy, xx]), (view, t, y, x)


def test_augmentation_is_the_same_for_every_configuration_of_a_seed_and_off_on_request():
    views = clip_views(steps=20, batch_size=8, seed=3)
    assert torch.equal(views, clip_views(steps=20, batch_size=8, seed=3))
    assert not torch.equal(views, clip_views(steps=20, batch_size=8, seed=4))
    assert set(views.flatten().tolist()) == set(range(16))  # every view is drawn
    assert not clip_views(steps=20, batch_size=8, seed=3, augment=False).any()
