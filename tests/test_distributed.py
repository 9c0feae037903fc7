"""torchrun with gloo on the CPU: two processes train as one does; a killed run resumes exactly;
the command under torchrun prints from rank 0 only and refuses what it cannot do before training."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from flexframe.cli import main
from flexframe.data import write_video
from flexframe.distributed import (
    DistributedEnv,
    global_batches,
    load_checkpoint,
    rank_slice,
    read_checkpoint_info,
    save_checkpoint,
)
from flexframe.experiment import (
    ABLATION_CONFIGURATIONS,
    AblationConfig,
    RunStopped,
    prepare_ablation,
    train_run,
)

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["+Frame Mask", "Full"]  # one all-frames and one fast/slow configuration
SETTINGS = {
    "num_frames": 16,
    "image_size": 16,
    "num_clips_train": 8,
    "num_clips_test": 4,
    "patch_size": 8,
    "hidden_size": 16,
    "predictor_dim": 16,
    "predictor_depth": 2,
    "fast_slow_preset": "medium",
    "steps": 4,
    "batch_size": 4,
    "warmup_steps": 1,
    "seeds": [0],
    "device": "cpu",
    "quiet": True,
}


def run_here(**overrides) -> dict:
    """One process, in this interpreter: {configuration: {"state", "losses", "run"}}."""
    config = AblationConfig.from_dict({**SETTINGS, **overrides})
    configurations = [c for c in ABLATION_CONFIGURATIONS if c.name in NAMES]
    setup = prepare_ablation(config, configurations=configurations, log=lambda message: None)
    out = {}
    for configuration in configurations:
        run, step = train_run(setup, configuration, config.seeds[0])
        out[run.configuration] = {"state": step.state_dict(), "run": run.to_dict()}
    return out


def run_torchrun(tmp_path: Path, nproc: int, tag: str, **overrides) -> dict | None:
    """``torchrun --nproc_per_node nproc`` in a subprocess; None when the run stopped early."""
    config_path, out_path = tmp_path / f"{tag}.json", tmp_path / f"{tag}.pt"
    config_path.write_text(json.dumps({**SETTINGS, **overrides, "_configurations": NAMES}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
        "--master_port", str(29600 + os.getpid() % 300), "--rdzv_backend", "c10d",
        "--rdzv_endpoint", f"127.0.0.1:{29600 + os.getpid() % 300}",
        str(ROOT / "tests" / "_dist_worker.py"), str(config_path), str(out_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out_path, weights_only=False) if out_path.exists() else None


def torchrun_cli(tmp_path: Path, nproc: int, *args: str, **settings) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node nproc -m flexframe ablate`` with ``SETTINGS``
    (updated by ``settings``) in a config file, then ``args``."""
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({**SETTINGS, **settings}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(nproc), "-m", "flexframe", "ablate", "--config", str(config),
           *args]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def assert_no_worker_traceback(stderr: str) -> None:
    """torchrun reports a failed worker with its own traceback (of torch/distributed/run.py);
    none may come from a worker: no frame of flexframe, no exception of its."""
    assert "flexframe/" not in stderr.replace("flexframe FAILED", ""), stderr[-4000:]
    assert "[rank0]" not in stderr and "[rank1]" not in stderr, stderr[-4000:]
    assert "ValueError" not in stderr and "FileNotFoundError" not in stderr, stderr[-4000:]


def assert_same_training(got: dict, want: dict, atol: float = 1e-5) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        a, b = got[name]["state"], want[name]["state"]
        assert sorted(a) == sorted(b)
        for key in b:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=atol, msg=f"{name}: {key}")
        torch.testing.assert_close(
            torch.tensor(got[name]["run"]["loss_curve"]),
            torch.tensor(want[name]["run"]["loss_curve"]),
            rtol=1e-4,
            atol=1e-6,
        )


@pytest.fixture(scope="module")
def single_process() -> dict:
    return run_here()


def test_two_ddp_processes_train_like_one_over_the_same_global_batch(single_process, tmp_path):
    """Each rank trains on its half of every global batch: parameters and losses end as one
    process's over the whole batch. A wrong split (both ranks on the same half, or on halves of
    other batches) averages other gradients and moves the parameters elsewhere. FSDP2 is held
    to the same result by the killed-and-resumed FSDP run below."""
    got = run_torchrun(tmp_path, 2, "ddp", parallel="ddp")
    for name in NAMES:
        assert (got[name]["run"]["world_size"], got[name]["run"]["parallel"]) == (2, "ddp")
    assert_same_training(got, single_process)
    # The runs did train: the parameters moved away from their initial values.
    fresh = run_here(steps=1, warmup_steps=1)
    key = "encoder.embed.weight"
    assert not torch.allclose(got["Full"]["state"][key], fresh["Full"]["state"][key])


@given(st.integers(1, 40), st.integers(1, 4), st.integers(1, 6), st.integers(0, 99))
@settings(max_examples=40)
def test_the_ranks_split_every_global_batch_into_disjoint_contiguous_shares(
    num_samples, world_size, share, seed
):
    """What makes W processes one: every step's global batch is cut into W contiguous shares,
    disjoint, in rank order; and every epoch draws each sample once."""
    batch_size = world_size * share
    batches = list(islice(global_batches(num_samples, batch_size, seed), 6))
    for batch in batches:
        shares = [
            rank_slice(batch, DistributedEnv(r, world_size, r, torch.device("cpu")))
            for r in range(world_size)
        ]
        assert sum(shares, []) == batch and all(len(x) == share for x in shares)
    flat = sum(batches, [])
    for epoch in range(len(flat) // num_samples):
        assert sorted(flat[epoch * num_samples : (epoch + 1) * num_samples]) == list(
            range(num_samples)
        )


def test_a_killed_run_resumes_to_the_uninterrupted_result_and_keeps_its_step_times(
    single_process, tmp_path
):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(RunStopped, match="stopped after step 2"):
        run_here(checkpoint_dir=str(ckpt), stop_after_step=2)
    saved = read_checkpoint_info(ckpt / "plus-frame-mask-seed0" / "step-000002")["extra"]
    resumed = run_here(checkpoint_dir=str(ckpt))
    assert_same_training(resumed, single_process, atol=0)
    # The time of the steps before the kill is kept: the report covers all 4 steps.
    run = resumed["+Frame Mask"]["run"]
    assert run["resumed_from_step"] == 2 and len(run["step_seconds"]) == 4
    assert run["step_seconds"][:2] == saved["step_seconds"] and min(run["step_seconds"]) > 0
    assert run["train_seconds"] == pytest.approx(sum(run["step_seconds"]))


def test_a_killed_two_process_fsdp_run_resumes_to_the_uninterrupted_result(
    single_process, tmp_path
):
    ckpt = str(tmp_path / "ckpt")
    assert (
        run_torchrun(tmp_path, 2, "stop", parallel="fsdp", checkpoint_dir=ckpt, stop_after_step=2)
        is None
    )
    # One process cannot resume what two saved (each rank restores its own RNG file): refused,
    # before anything is loaded or trained.
    with pytest.raises(ValueError, match=r"saved by 2 process\(es\), but this run has 1"):
        run_here(parallel="fsdp", checkpoint_dir=ckpt)
    resumed = run_torchrun(tmp_path, 2, "resume", parallel="fsdp", checkpoint_dir=ckpt)
    # The stop ended the whole job inside its first run, as a kill would: that run resumes at
    # step 2, the next one had not started.
    assert [resumed[name]["run"]["resumed_from_step"] for name in NAMES] == [2, 0]
    assert [resumed[name]["run"]["parallel"] for name in NAMES] == ["fsdp", "fsdp"]
    assert_same_training(resumed, single_process)


def test_batch_size_must_split_over_the_processes():
    config = AblationConfig.from_dict({**SETTINGS, "batch_size": 3})
    with pytest.raises(ValueError, match="batch_size=3 does not split over 2 processes"):
        prepare_ablation(config, world_size=2)


def test_the_fsdp_example_trains_under_torchrun():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29700 + os.getpid() % 90),
           str(ROOT / "examples" / "fsdp_training.py"), "--steps", "2"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "step   1  loss" in proc.stdout and "(2 process(es))" in proc.stdout


def test_rerunning_a_stopped_run_resumes_it_to_the_end_and_stops_the_next_one(
    single_process, tmp_path
):
    """stop_after_step applies to runs that start before that step: the same call, repeated,
    finishes the stopped run, stops the next one at the same step, and then finishes too."""
    settings = {"checkpoint_dir": str(tmp_path / "ckpt"), "stop_after_step": 2}
    with pytest.raises(RunStopped, match=r"^\+Frame Mask \(seed 0\) stopped after step 2 "):
        run_here(**settings)
    with pytest.raises(RunStopped, match=r"^Full \(seed 0\) stopped after step 2 ") as stopped:
        run_here(**settings)
    assert (stopped.value.step, stopped.value.folder) == (2, tmp_path / "ckpt" / "full-seed0")
    resumed = run_here(**settings)  # both runs resume at step 2, past the stop: to the end
    assert_same_training(resumed, single_process, atol=0)


def test_save_and_load_checkpoint_restore_the_random_number_generators(tmp_path):
    """Draw right after saving; scramble every generator; load; the same draws come again."""
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    torch.manual_seed(11)
    random.seed(12)
    np.random.seed(13)
    torch.rand(5), random.random(), np.random.rand(5)  # somewhere inside each stream
    save_checkpoint(tmp_path / "ckpt", model, optimizer, step=1)

    def draw() -> tuple:
        return (
            torch.rand(6).tolist(),
            [random.random() for _ in range(3)],
            np.random.rand(4).tolist(),
        )

    after_save = draw()
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    scrambled = draw()
    for got, want in zip(scrambled, after_save, strict=True):
        assert got != want  # the generators did move away
    load_checkpoint(tmp_path / "ckpt", model, optimizer)
    assert draw() == after_save


def test_a_checkpoint_of_one_process_is_refused_by_two_with_one_clear_line(tmp_path, capsys):
    ckpt = str(tmp_path / "ckpt")
    config = tmp_path / "one.yaml"
    config.write_text(yaml.safe_dump(SETTINGS))
    argv = ["ablate", "--config", str(config), "--checkpoint-dir", ckpt, "--out", str(tmp_path)]
    assert main([*argv, "--stop-after-step", "2"]) == 0  # the first run stops, saved by 1
    assert "stopped after step 2" in capsys.readouterr().err
    proc = torchrun_cli(tmp_path, 2, "--checkpoint-dir", ckpt, "--out", str(tmp_path / "two"))
    assert proc.returncode != 0
    message = "was saved by 1 process(es), but this run has 2; resume it with 1 process(es)"
    assert proc.stderr.count(message) == 1, proc.stderr[-4000:]  # rank 0 alone says it
    assert "flexframe ablate: error: checkpoint '" in proc.stderr
    assert_no_worker_traceback(proc.stderr)
    assert not (tmp_path / "two").exists()  # refused before training, nothing written


def test_a_batch_that_does_not_split_is_one_usage_error_under_torchrun(tmp_path):
    proc = torchrun_cli(tmp_path, 2, "--batch-size", "3", "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    message = (
        "flexframe ablate: error: batch_size=3 does not split over 2 processes; choose a "
        "multiple of the number of processes"
    )
    assert proc.stderr.count(message) == 1, proc.stderr[-4000:]
    assert_no_worker_traceback(proc.stderr)
    assert not (tmp_path / "out").exists()


def test_under_torchrun_only_rank_0_prints(tmp_path):
    frames = torch.linspace(0, 1, 20).view(20, 1, 1, 1).expand(20, 3, 16, 16).contiguous()
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "b", "c"):
        write_video(videos / f"{name}.mp4", frames)
    (videos / "broken.mp4").write_bytes(b"not a video" * 100)
    proc = torchrun_cli(
        tmp_path, 2, "--videos", str(videos / "*.mp4"), "--out", str(tmp_path / "out"),
        steps=2, quiet=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    err, out = proc.stderr, proc.stdout
    assert err.count("skipped video") == 1 and "broken.mp4: unreadable" in err, err
    assert err.count("data: 3 of 4 video(s) used (1 skipped)") == 1, err
    assert err.count("running 4 configurations") == 1, err
    for name in ("Baseline", "Full"):
        assert err.count(f"  {name:<12} seed 0: train loss") == 1, err
    assert err.count("wrote ") == 1, err
    rows = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")]
    one_table = ["Configuration", "Baseline", "+Frame Mask", "+Fast-Slow", "Full"]
    assert rows == one_table * 2, out  # the results and the paired verdicts, printed once
    assert (tmp_path / "out" / "results.json").is_file()


def test_exit_process_flushes_and_skips_interpreter_teardown():
    # What a finished torchrun worker calls last: its output and log lines arrive, its exit status
    # is the one given, and nothing of the interpreter's teardown (atexit) runs.
    script = (
        "import atexit, logging, sys\n"
        "from flexframe.distributed import exit_process\n"
        "atexit.register(lambda: print('teardown ran'))\n"
        "logging.basicConfig(stream=sys.stderr)\n"
        "print('out', end='')\n"
        "sys.stderr.write('err')\n"
        "logging.getLogger('x').warning('logged')\n"
        "exit_process(3)\n"
        "print('after')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered stdout
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 3
    assert proc.stdout == "out"
    assert proc.stderr.startswith("err") and "logged" in proc.stderr
