"""An example world model on moving digits, rolled out frame by frame with the frame KV cache.

:class:`WorldModel` reads the patches of each frame of a clip and predicts the next frame's
patches: patches in, a linear embedding, a :class:`~flexframe.FlexFrameDecoder` under a frame
mask (``sliding-window`` by default, or ``causal-frame``), a linear head that predicts the change
of each patch. It trains on the bundled moving digits (:func:`flexframe.data.make_moving_digits`)
in a few minutes on a CPU (:func:`train_world_model`; the sdpa backend there, FlexAttention has
no backward pass on the CPU). :func:`rollout` then generates frames from a prefix one at a time:
with the cache (:class:`~flexframe.nn.FrameKVCache`, built from the training mask; a
sliding window keeps a ring of a few frames, however long the rollout), or by recomputing the
whole sequence under the training mask at every step. The two agree (``tests``).
:func:`save_rollout_strip` draws the true and the generated frames side by side, and
``flexframe rollout`` does all of it from the command line (:func:`add_rollout_command`).

Generated frames are clamped to the pixel range [0, 1] before they are fed back (a prediction a
little outside it would otherwise drift over a long rollout).

Example:
    >>> cfg = RolloutConfig(dim=32, depth=1, num_heads=2, steps=2, train_clips=8, batch_size=4,
    ...                     train_seconds=None, image_size=16, digit_size=8, rollout_frames=3)
    >>> model, _ = train_world_model(cfg)
    >>> clip = make_moving_digits(1, num_frames=7, image_size=16, digit_size=8, split="test")
    >>> rollout(model, clip[:, :4], 3).shape  # [B, frames, C, H, W]
    torch.Size([1, 3, 1, 16, 16])
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flexframe._checks import check_int, resolve_device
from flexframe._config import check_settings, from_mapping, setting
from flexframe.data import make_moving_digits
from flexframe.masks import MaskSpec, get_mask
from flexframe.nn import FlexFrameDecoder, FrameKVCache

__all__ = [
    "ROLLOUT_MASKS",
    "RolloutConfig",
    "RolloutResult",
    "TrainResult",
    "WorldModel",
    "add_rollout_command",
    "evaluate_rollout",
    "held_out_clip",
    "rollout",
    "save_rollout_strip",
    "strip_image",
    "train_world_model",
]

ROLLOUT_MASKS: tuple[str, ...] = ("sliding-window", "causal-frame")
"""The world model's masks: a window of frames (a ring cache), or all earlier frames."""


@dataclass
class RolloutConfig:
    """Settings of the example world model, its training and its rollout.

    Example:
        >>> RolloutConfig(patch_size=5)
        Traceback (most recent call last):
        ...
        ValueError: patch_size must divide image_size, got patch_size=5 and image_size=32
    """

    image_size: int = setting(32, "height and width of a frame", "int", minimum=2)
    patch_size: int = setting(8, "pixels per patch side", "int", minimum=1)
    num_digits: int = setting(1, "digits per clip", "int", minimum=1)
    digit_size: int = setting(12, "pixels per digit side", "int", minimum=1)
    train_frames: int = setting(10, "frames of a training clip", "int", minimum=2)
    train_clips: int = setting(2048, "training clips", "int", minimum=1)
    dim: int = setting(96, "model width", "int", minimum=1)
    depth: int = setting(3, "decoder layers", "int", minimum=1)
    num_heads: int = setting(4, "attention heads", "int", minimum=1)
    mask: str = setting("sliding-window", "the frame mask", "choice", choices=ROLLOUT_MASKS)
    window_size: int = setting(3, "frames back a frame sees (sliding-window)", "int", minimum=0)
    sink_frames: int = setting(0, "first frames always seen (sliding-window)", "int", minimum=0)
    steps: int = setting(600, "optimizer steps", "int", minimum=0)
    train_seconds: float | None = setting(
        300.0, "stop training after this many seconds (None: no limit)", "float?", low=0.0
    )
    batch_size: int = setting(32, "clips a step", "int", minimum=1)
    lr: float = setting(
        2e-3, "peak learning rate (AdamW, cosine)", "float", low=0.0, strict_low=True
    )
    seed: int = setting(0, "seed of the weights, the data and the batches", "int", minimum=0)
    prefix_frames: int = setting(4, "true frames given to the rollout", "int", minimum=1)
    rollout_frames: int = setting(16, "frames the rollout generates", "int", minimum=1)
    device: str = setting("auto", "cpu, cuda or auto", "device")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size must divide image_size, got patch_size={self.patch_size} and "
                f"image_size={self.image_size}"
            )
        if self.digit_size >= self.image_size:
            raise ValueError(
                f"digit_size must be below image_size so digits can move, got "
                f"digit_size={self.digit_size} and image_size={self.image_size}"
            )
        if self.sink_frames and self.mask != "sliding-window":
            raise ValueError(f"sink_frames is a sliding-window setting, got mask={self.mask!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RolloutConfig:
        """A config from ``{setting: value}`` (an unknown key names the closest setting)."""
        return from_mapping(cls, values)

    @property
    def num_patches_per_frame(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class WorldModel(nn.Module):
    """Next-frame prediction over patches: ``[B, F, 1, H, W]`` frames in, ``[B, F, 1, H, W]``
    predictions of the frames after them out.

    Each frame becomes ``P = (H / patch_size) ** 2`` patch tokens (a linear embedding); the
    decoder's attention follows the configured frame mask (rotary frame and patch positions tell
    it when and where each token is); the head predicts each patch's change to the next frame.

    Example:
        >>> model = WorldModel(RolloutConfig(dim=32, depth=1, num_heads=2, image_size=8,
        ...                                  patch_size=4, digit_size=4)).eval()
        >>> with torch.no_grad():
        ...     model(torch.rand(2, 3, 1, 8, 8)).shape
        torch.Size([2, 3, 1, 8, 8])
    """

    def __init__(self, config: RolloutConfig) -> None:
        super().__init__()
        self.config = config
        patch_dim = config.patch_size**2
        self.embed = nn.Linear(patch_dim, config.dim)
        self.decoder = FlexFrameDecoder(
            dim=config.dim, depth=config.depth, num_heads=config.num_heads
        )
        self.head = nn.Linear(config.dim, patch_dim)
        nn.init.zeros_(self.head.weight)  # start at "the next frame is this frame"
        nn.init.zeros_(self.head.bias)

    def mask(self, num_frames: int) -> MaskSpec:
        """The training mask over ``num_frames`` frames."""
        cfg = self.config
        p = cfg.num_patches_per_frame
        if cfg.mask == "causal-frame":
            return get_mask("causal-frame", num_frames=num_frames, num_patches_per_frame=p)
        return get_mask(
            "sliding-window",
            num_frames=num_frames,
            num_patches_per_frame=p,
            window_size=cfg.window_size,
            sink_frames=min(cfg.sink_frames, num_frames),
        )

    def _patches(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, F, 1, H, W]`` -> ``[B, F * P, patch_size ** 2]``."""
        b, f, c, h, w = frames.shape
        s = self.config.patch_size
        if c != 1 or h != self.config.image_size or w != self.config.image_size:
            size = self.config.image_size
            raise ValueError(f"frames must be [B, F, 1, {size}, {size}], got {list(frames.shape)}")
        grid = frames.reshape(b, f, h // s, s, w // s, s).permute(0, 1, 2, 4, 3, 5)
        return grid.reshape(b, f * (h // s) * (w // s), s * s)

    def _frames(self, patches: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The inverse of :meth:`_patches`."""
        b = patches.shape[0]
        s, size = self.config.patch_size, self.config.image_size
        n = size // s
        grid = patches.reshape(b, num_frames, n, n, s, s).permute(0, 1, 2, 4, 3, 5)
        return grid.reshape(b, num_frames, 1, size, size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Predict frame ``t + 1`` from frames ``0 .. t`` (as the mask allows), for every t."""
        patches = self._patches(frames)
        h = self.decoder(self.embed(patches), self.mask(frames.shape[1]))
        return self._frames(patches + self.head(h), frames.shape[1])

    def new_cache(self, batch_size: int, max_frames: int) -> FrameKVCache:
        """A frame KV cache for streaming this model (the training mask's layout)."""
        return FrameKVCache.for_mask(
            self.mask(max_frames), self.decoder, batch_size, max_frames=max_frames
        )

    def step(self, frames: torch.Tensor, cache: FrameKVCache) -> torch.Tensor:
        """Predictions after each of ``frames`` ``[B, c, 1, H, W]``, the frames appended to the
        cache; returns ``[B, c, 1, H, W]``."""
        patches = self._patches(frames)
        h = self.decoder(self.embed(patches), cache=cache)
        return self._frames(patches + self.head(h), frames.shape[1])


def rollout(
    model: WorldModel, prefix: torch.Tensor, num_frames: int, *, use_cache: bool = True
) -> torch.Tensor:
    """Generate ``num_frames`` frames after ``prefix`` ``[B, F0, 1, H, W]``, one at a time.

    With the cache, each frame runs once through the model (the prefix too, frame by frame) and
    its keys and values are kept as the training mask says; without it, the whole sequence so far
    is recomputed under the training mask for every new frame. Each generated frame is clamped to
    [0, 1] and fed back. Returns ``[B, num_frames, 1, H, W]``.

    Example:
        >>> model = WorldModel(RolloutConfig(dim=32, depth=1, num_heads=2, image_size=8,
        ...                                  patch_size=4, digit_size=4)).eval()
        >>> prefix = torch.rand(1, 2, 1, 8, 8)
        >>> a, b = rollout(model, prefix, 3), rollout(model, prefix, 3, use_cache=False)
        >>> a.shape, bool((a - b).abs().max() < 1e-5)
        (torch.Size([1, 3, 1, 8, 8]), True)
    """
    n = check_int("num_frames", num_frames, minimum=1)
    if prefix.dim() != 5 or prefix.shape[1] < 1:
        raise ValueError(f"prefix must be [B, F0 >= 1, 1, H, W], got {list(prefix.shape)}")
    generated = []
    with torch.no_grad():
        if use_cache:
            cache = model.new_cache(prefix.shape[0], prefix.shape[1] + n)
            for t in range(prefix.shape[1]):
                prediction = model.step(prefix[:, t : t + 1], cache)
            for k in range(n):
                frame = prediction.clamp(0.0, 1.0)
                generated.append(frame)
                if k + 1 < n:
                    prediction = model.step(frame, cache)
        else:
            sequence = prefix
            for _ in range(n):
                frame = model(sequence)[:, -1:].clamp(0.0, 1.0)
                generated.append(frame)
                sequence = torch.cat([sequence, frame], dim=1)
    return torch.cat(generated, dim=1)


# -- training ----------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What training did: ``losses`` per step (mean squared error), its time and its steps."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0


def train_world_model(
    config: RolloutConfig, progress: Callable[[int, float], None] | None = None
) -> tuple[WorldModel, TrainResult]:
    """Train a :class:`WorldModel` on moving digits for ``config.steps`` steps or
    ``config.train_seconds`` seconds, whichever ends first; returns it in eval mode.

    The loss is the mean squared error of every next-frame prediction of a
    ``train_frames``-frame clip (AdamW, a cosine learning rate over ``steps``, gradients clipped
    at norm 1). ``progress(step, loss)`` is called after each step.
    """
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = WorldModel(config).to(device).train()
    clips = make_moving_digits(
        config.train_clips,
        num_frames=config.train_frames,
        image_size=config.image_size,
        num_digits=config.num_digits,
        digit_size=config.digit_size,
        seed=config.seed,
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / max(config.steps, 1))),
    )
    batches = torch.Generator().manual_seed(config.seed)
    result = TrainResult()
    start = time.perf_counter()
    for step in range(config.steps):
        if config.train_seconds is not None and time.perf_counter() - start > config.train_seconds:
            break
        index = torch.randint(len(clips), (config.batch_size,), generator=batches)
        batch = clips[index.to(device)]
        prediction = model(batch[:, :-1])
        loss = F.mse_loss(prediction, batch[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        result.losses.append(float(loss.detach()))
        result.steps = step + 1
        if progress is not None:
            progress(step, result.losses[-1])
    result.seconds = time.perf_counter() - start
    return model.eval(), result


# -- evaluation and the picture ----------------------------------------------------------------
@dataclass
class RolloutResult:
    """A rollout on one held-out clip against the truth and against recomputation.

    Attributes:
        true: ``[prefix + rollout, 1, H, W]`` the clip's frames.
        generated: ``[rollout, 1, H, W]`` the frames generated with the cache.
        model_mse: per generated frame, its mean squared error against the true frame.
        copy_mse: the same for "every later frame is the last prefix frame".
        max_difference: largest pixel difference between the cached and the recomputed rollout.
        cache_ms, recompute_ms: wall-clock milliseconds per generated frame, each way.
    """

    true: torch.Tensor
    generated: torch.Tensor
    model_mse: list[float]
    copy_mse: list[float]
    max_difference: float
    cache_ms: float
    recompute_ms: float

    def markdown(self) -> str:
        """The per-frame errors as a Markdown table."""
        lines = ["| frame | model MSE | copy-last-frame MSE |", "|---|---|---|"]
        start = self.true.shape[0] - self.generated.shape[0]
        for k, (m, c) in enumerate(zip(self.model_mse, self.copy_mse, strict=True)):
            lines.append(f"| {start + k} | {m:.4f} | {c:.4f} |")
        return "\n".join(lines) + "\n"


def held_out_clip(config: RolloutConfig) -> torch.Tensor:
    """The ``[prefix_frames + rollout_frames, C, H, W]`` moving-digits clip a rollout is scored
    on: the test split (digit images the model never trained on), drawn with ``config.seed``.

    Example:
        >>> held_out_clip(RolloutConfig(prefix_frames=2, rollout_frames=3)).shape[0]
        5
    """
    return make_moving_digits(
        1,
        num_frames=config.prefix_frames + config.rollout_frames,
        image_size=config.image_size,
        num_digits=config.num_digits,
        digit_size=config.digit_size,
        seed=config.seed,
        split="test",
    )[0]


def evaluate_rollout(model: WorldModel, clip: torch.Tensor, prefix_frames: int) -> RolloutResult:
    """Roll ``model`` out from the first ``prefix_frames`` frames of ``clip`` ``[T, 1, H, W]``
    over the rest of it, with the cache and by recomputation, and score it.

    Example:
        >>> model = WorldModel(RolloutConfig(dim=32, depth=1, num_heads=2, image_size=8,
        ...                                  patch_size=4, digit_size=4)).eval()
        >>> result = evaluate_rollout(model, torch.rand(5, 1, 8, 8), prefix_frames=3)
        >>> result.generated.shape, len(result.model_mse), result.max_difference < 1e-5
        (torch.Size([2, 1, 8, 8]), 2, True)
    """
    t = clip.shape[0]
    f0 = check_int("prefix_frames", prefix_frames, minimum=1)
    if f0 >= t:
        raise ValueError(f"prefix_frames must be below the clip's {t} frames, got {f0}")
    device = next(model.parameters()).device
    clip = clip.to(device)
    prefix = clip[None, :f0]
    rollout(model, prefix, 1)  # warm-up: first calls allocate and build masks
    rollout(model, prefix, 1, use_cache=False)
    start = time.perf_counter()
    cached = rollout(model, prefix, t - f0)[0]
    cache_ms = (time.perf_counter() - start) * 1e3 / (t - f0)
    start = time.perf_counter()
    recomputed = rollout(model, prefix, t - f0, use_cache=False)[0]
    recompute_ms = (time.perf_counter() - start) * 1e3 / (t - f0)
    truth = clip[f0:]
    per_frame = ((cached - truth) ** 2).flatten(1).mean(1)
    copy = ((clip[f0 - 1 : f0] - truth) ** 2).flatten(1).mean(1)
    return RolloutResult(
        true=clip.cpu(),
        generated=cached.cpu(),
        model_mse=per_frame.tolist(),
        copy_mse=copy.tolist(),
        max_difference=float((cached - recomputed).abs().max()),
        cache_ms=cache_ms,
        recompute_ms=recompute_ms,
    )


STRIP_GAP = 2
"""Pixels between frames (and between the two rows) in :func:`strip_image`."""
STRIP_BACKGROUND = 0.5
"""The gray between frames and where the generated row has no frame (under the prefix)."""
LABEL_MARGIN = 64
"""Pixels left of the strip in :func:`save_rollout_strip`, for the row labels."""


def strip_image(true: torch.Tensor, generated: torch.Tensor, scale: int = 3) -> np.ndarray:
    """The strip of true (top) and generated (bottom) frames as one gray ``[H, W]`` array.

    ``true`` ``[T, 1, h, w]`` holds the whole clip, ``generated`` ``[G, 1, h, w]`` its last ``G``
    frames as generated; the bottom row is empty under the prefix. Each frame is ``scale`` times
    larger (nearest neighbour), frames and rows :data:`STRIP_GAP` pixels apart: true frame ``k``
    starts at row ``STRIP_GAP``, column ``STRIP_GAP + k * (scale * w + STRIP_GAP)``, and the
    generated row ``scale * h + STRIP_GAP`` further down.

    Example:
        >>> strip = strip_image(torch.ones(3, 1, 2, 2), torch.zeros(1, 1, 2, 2), scale=1)
        >>> strip.shape, float(strip[2, 2]), float(strip[6, 10]), float(strip[6, 2])
        ((10, 14), 1.0, 0.0, 0.5)
    """
    s = check_int("scale", scale, minimum=1)
    t, g = true.shape[0], generated.shape[0]
    if g > t or true.shape[1:] != generated.shape[1:] or true.dim() != 4 or true.shape[1] != 1:
        raise ValueError(
            f"true must be [T, 1, h, w] and generated [G <= T, 1, h, w], got {list(true.shape)} "
            f"and {list(generated.shape)}"
        )
    h, w = true.shape[-2] * s, true.shape[-1] * s
    out = np.full(
        (STRIP_GAP + 2 * (h + STRIP_GAP), STRIP_GAP + t * (w + STRIP_GAP)), STRIP_BACKGROUND
    )

    def big(frame: torch.Tensor) -> np.ndarray:
        return np.kron(frame[0].float().cpu().numpy(), np.ones((s, s)))

    for k in range(t):
        x = STRIP_GAP + k * (w + STRIP_GAP)
        out[STRIP_GAP : STRIP_GAP + h, x : x + w] = big(true[k])
        if k >= t - g:
            y = 2 * STRIP_GAP + h
            out[y : y + h, x : x + w] = big(generated[k - (t - g)])
    return out


def save_rollout_strip(
    path: str | Path, true: torch.Tensor, generated: torch.Tensor, scale: int = 3, dpi: int = 100
) -> Path:
    """Write :func:`strip_image` as a PNG, pixel for pixel, with "true" and "generated" written
    in a margin on its left; returns the path.

    The strip's pixels are placed unresampled (``Figure.figimage``) right of a
    ``LABEL_MARGIN``-pixel margin, so the picture's pixels are the array's gray values.

    Example:
        >>> import tempfile
        >>> p = save_rollout_strip(Path(tempfile.mkdtemp()) / "r.png", torch.rand(4, 1, 8, 8),
        ...                        torch.rand(2, 1, 8, 8))
        >>> p.suffix
        '.png'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    strip = strip_image(true, generated, scale)
    height, width = strip.shape
    fig = Figure(figsize=((width + LABEL_MARGIN) / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    gray = np.repeat(strip[:, :, None], 3, axis=2)
    fig.figimage(gray, xo=LABEL_MARGIN, yo=0, origin="upper", vmin=0.0, vmax=1.0)
    row = (height - STRIP_GAP) / 2
    for i, label in enumerate(("true", "generated")):
        y = 1 - (STRIP_GAP + row * (i + 0.5)) / height
        fig.text(4 / (width + LABEL_MARGIN), y, label, va="center", ha="left", fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path


# -- the command line --------------------------------------------------------------------------
def add_rollout_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``rollout`` to a ``flexframe`` argparse subparsers object; returns its parser.

    ``flexframe rollout`` trains the example world model for a few minutes (or loads one with
    ``--load``), rolls it out on a held-out clip with the KV cache and by recomputation, prints
    the per-frame errors against copying the last prefix frame, and writes the strip picture.

    Example:
        >>> parser = argparse.ArgumentParser(prog="flexframe")
        >>> _ = add_rollout_command(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["rollout", "--steps", "5"]).steps
        5
    """
    p = subparsers.add_parser(
        "rollout",
        help="train the example world model and roll it out with the KV cache",
        description="Train a small next-frame world model on moving digits (a few minutes on a "
        "CPU), roll it out frame by frame from a prefix with the frame KV cache driven by its "
        "training mask, check it against recomputing the sequence at every step, and draw the "
        "true and generated frames.",
    )
    defaults = RolloutConfig.__dataclass_fields__
    for name in (
        "steps", "train_seconds", "train_clips", "batch_size", "seed", "prefix_frames",
        "rollout_frames", "mask", "window_size", "sink_frames", "dim", "depth", "device",
    ):  # fmt: skip
        f = defaults[name]
        kind = f.metadata["kind"]
        flag = "--" + name.replace("_", "-")
        kwargs: dict[str, Any] = {"default": None, "help": f"{f.metadata['help']} (default: "
                                  f"{f.default})"}  # fmt: skip
        if kind == "int":
            kwargs["type"] = int
        elif kind.startswith("float"):
            kwargs["type"] = float
        elif kind == "choice":
            kwargs["choices"] = f.metadata["choices"]
        p.add_argument(flag, **kwargs)
    p.add_argument("--out", default="rollout.png", help="PNG to write (default: rollout.png)")
    p.add_argument("--load", default=None, help="load a model saved with --save (no training)")
    p.add_argument("--save", default=None, help="save the trained model here")
    p.add_argument("--quiet", action="store_true", help="no training progress")
    p.set_defaults(handler=run_rollout_command)
    return p


def run_rollout_command(args: argparse.Namespace) -> int:
    """The handler of ``flexframe rollout``; returns the exit status (2 for bad input)."""
    settings = {
        k: v
        for k, v in vars(args).items()
        if k in RolloutConfig.__dataclass_fields__ and v is not None
    }
    try:
        if args.load is not None:
            model = load_world_model(args.load, device=settings.get("device"))
            config = dataclasses.replace(
                model.config, **{k: v for k, v in settings.items() if k in _ROLLOUT_ONLY}
            )
        else:
            config = RolloutConfig.from_dict(settings)
        out = Path(args.out)
        if out.parent != Path("") and not out.parent.is_dir():
            raise ValueError(f"--out: folder {str(out.parent)!r} does not exist")
    except (TypeError, ValueError, FileNotFoundError) as err:
        print(f"flexframe rollout: error: {err}", file=sys.stderr)
        return 2
    if args.load is None:
        every = max(1, config.steps // 20)

        def progress(step: int, loss: float) -> None:
            if not args.quiet and (step % every == 0 or step + 1 == config.steps):
                print(f"step {step + 1}: loss {loss:.5f}", file=sys.stderr, flush=True)

        model, trained = train_world_model(config, progress)
        print(
            f"trained {trained.steps} steps in {trained.seconds:.0f} s, last loss "
            f"{trained.losses[-1] if trained.losses else float('nan'):.5f}",
            file=sys.stderr,
        )
        if args.save is not None:
            save_world_model(model, args.save)
    result = evaluate_rollout(model, held_out_clip(config), config.prefix_frames)
    print(result.markdown(), end="")
    print(
        f"cache: {result.cache_ms:.1f} ms a frame, recomputation: {result.recompute_ms:.1f} ms a "
        f"frame, largest difference {result.max_difference:.2e}"
    )
    save_rollout_strip(out, result.true, result.generated)
    print(f"wrote {out}", file=sys.stderr)
    return 0


_ROLLOUT_ONLY = ("prefix_frames", "rollout_frames", "seed", "device")
"""Settings a loaded model may change (the rest shape its weights or its mask)."""


def save_world_model(model: WorldModel, path: str | Path) -> None:
    """Save the model's settings and weights to ``path`` (``torch.save``)."""
    torch.save({"config": dataclasses.asdict(model.config), "state": model.state_dict()}, path)


def load_world_model(path: str | Path, device: str | None = None) -> WorldModel:
    """A :class:`WorldModel` saved by :func:`save_world_model`, in eval mode."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--load: no model file {str(p)!r}")
    saved = torch.load(p, map_location="cpu", weights_only=True)
    config = RolloutConfig.from_dict(
        {**saved["config"], **({"device": device} if device is not None else {})}
    )
    model = WorldModel(config)
    model.load_state_dict(saved["state"])
    return model.to(resolve_device(config.device)).eval()
