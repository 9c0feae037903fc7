"""torchrun with gloo on the CPU: two processes train as one does; a killed run resumes exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flexframe.experiment import ABLATION_CONFIGURATIONS, AblationConfig, run_ablation
from flexframe.experiment.ablation import RunStopped

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
    """One process, in this interpreter: {configuration: (state, losses)}."""
    config = AblationConfig.from_dict({**SETTINGS, **overrides})
    configurations = [c for c in ABLATION_CONFIGURATIONS if c.name in NAMES]
    result = run_ablation(
        config, configurations=configurations, keep_state=True, progress=False,
        log=lambda message: None,
    )  # fmt: skip
    return {
        r["configuration"]: {"state": r["_state"], "losses": r["loss_curve"]} for r in result.runs
    }


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


def assert_same_training(got: dict, want: dict, atol: float = 1e-5) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        a, b = got[name]["state"], want[name]["state"]
        assert sorted(a) == sorted(b)
        for key in b:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=atol, msg=f"{name}: {key}")
        torch.testing.assert_close(
            torch.tensor(got[name]["losses"]),
            torch.tensor(want[name]["losses"]),
            rtol=1e-4,
            atol=1e-6,
        )


@pytest.fixture(scope="module")
def single_process() -> dict:
    return run_here()


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_train_like_one_over_the_same_global_batch(
    parallel, single_process, tmp_path
):
    got = run_torchrun(tmp_path, 2, parallel, parallel=parallel)
    for name in NAMES:
        assert got[name]["world_size"] == 2 and got[name]["parallel"] == parallel
    assert_same_training(got, single_process)
    # Each step's global batch was split: the two ranks saw disjoint halves that make it up.
    for name in NAMES:
        rank0, rank1 = got[name]["rows_seen_by_rank"]
        for step, batch in enumerate(got[name]["global_batches"]):
            assert not set(rank0[step]) & set(rank1[step])
            assert rank0[step] + rank1[step] == batch
    # The runs did train: the parameters moved away from their initial values.
    fresh = run_here(steps=1, warmup_steps=1)
    key = "encoder.embed.weight"
    assert not torch.allclose(got["Full"]["state"][key], fresh["Full"]["state"][key])


def test_a_killed_run_resumes_to_the_uninterrupted_result(single_process, tmp_path):
    with pytest.raises(RunStopped, match="stopped after step 2"):
        run_here(checkpoint_dir=str(tmp_path / "ckpt"), stop_after_step=2)
    resumed = run_here(checkpoint_dir=str(tmp_path / "ckpt"))
    assert_same_training(resumed, single_process, atol=0)


def test_a_killed_two_process_fsdp_run_resumes_to_the_uninterrupted_result(
    single_process, tmp_path
):
    ckpt = str(tmp_path / "ckpt")
    assert (
        run_torchrun(tmp_path, 2, "stop", parallel="fsdp", checkpoint_dir=ckpt, stop_after_step=2)
        is None
    )
    resumed = run_torchrun(tmp_path, 2, "resume", parallel="fsdp", checkpoint_dir=ckpt)
    # The stop ended the whole job inside its first run, as a kill would: that run resumes at
    # step 2, the next one had not started.
    assert [resumed[name]["resumed_from_step"] for name in NAMES] == [2, 0]
    assert_same_training(resumed, single_process)


def test_batch_size_must_split_over_the_processes(tmp_path):
    config_path = tmp_path / "c.json"
    config_path.write_text(json.dumps({**SETTINGS, "batch_size": 3, "_configurations": NAMES}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29900 + os.getpid() % 90),
           str(ROOT / "tests" / "_dist_worker.py"), str(config_path), str(tmp_path / "o.pt")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "batch_size=3 does not split over 2 processes" in proc.stderr


def test_the_fsdp_example_trains_under_torchrun():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29700 + os.getpid() % 90),
           str(ROOT / "examples" / "fsdp_training.py"), "--steps", "2"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "step   1  loss" in proc.stdout and "(2 process(es))" in proc.stdout
