"""The ablation beats copying on camera-like video (issue #18): ``motion_scale`` on videos."""

from __future__ import annotations

from flexframe.data import write_video
from flexframe.experiment import AblationConfig
from flexframe.experiment.camera import synthetic_camera_frames
from flexframe.experiment.configurations import ABLATION_CONFIGURATIONS
from flexframe.experiment.prepare import prepare_ablation
from flexframe.experiment.train import train_run


def _camera_videos(folder, count=4, frames=40):
    return [str(write_video(folder / f"cam{i}.mp4",
                            synthetic_camera_frames(frames, size=32, seed=i, speed=3.0)))
            for i in range(count)]  # fmt: skip


def test_motion_scale_is_auto_on_for_videos_only():
    assert not AblationConfig().uses_motion_scale
    assert AblationConfig(videos=["a.mp4"]).uses_motion_scale
    assert not AblationConfig(videos=["a.mp4"], motion_scale="off").uses_motion_scale
    assert not AblationConfig(motion_scale="on", normalize_targets=False).uses_motion_scale


def test_a_short_run_beats_copying_on_camera_like_clips(tmp_path):
    # Held-out next-frame error below copying the current frame, on clips of a moving camera.
    config = AblationConfig(videos=_camera_videos(tmp_path), num_frames=16, clips_per_video=16,
                            fast_slow_preset="medium", steps=60, seeds=[0], quiet=True,
                            device="cpu")  # fmt: skip
    setup = prepare_ablation(config, configurations=ABLATION_CONFIGURATIONS[:1])
    run, step = train_run(setup, ABLATION_CONFIGURATIONS[0], seed=0)
    assert step.objective.previous is not None and step.objective.motion_floor > 0
    assert run.test_error < 0.995 * run.copy_error, (run.test_error, run.copy_error)
