"""Train the example world model on moving digits, roll it out with the frame KV cache, draw it.

A small next-frame model (patches in, next-frame patches out) trains for a few minutes on a CPU,
then generates frames one at a time from a prefix of true frames. Its decoder attends under a
sliding window of frames, so the KV cache is a ring of a few frames however long the rollout
runs; the rollout is checked against recomputing the whole sequence at every step.

    python examples/world_model_rollout.py --out rollout.png
    python examples/world_model_rollout.py --steps 50 --rollout-frames 8   # a quick look

``flexframe rollout`` runs the same from the command line.
"""

from __future__ import annotations

import argparse

from flexframe.experiment.rollout import (
    RolloutConfig,
    evaluate_rollout,
    held_out_clip,
    save_rollout_strip,
    train_world_model,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="rollout.png", help="PNG to write")
    parser.add_argument("--steps", type=int, default=600, help="training steps")
    parser.add_argument("--train-seconds", type=float, default=300.0, help="training time limit")
    parser.add_argument("--rollout-frames", type=int, default=16, help="frames to generate")
    args = parser.parse_args()

    config = RolloutConfig(
        steps=args.steps, train_seconds=args.train_seconds, rollout_frames=args.rollout_frames
    )

    def progress(step: int, loss: float) -> None:
        if step % 50 == 0:
            print(f"step {step}: loss {loss:.5f}", flush=True)

    model, trained = train_world_model(config, progress)
    print(f"trained {trained.steps} steps in {trained.seconds:.0f} s")
    result = evaluate_rollout(model, held_out_clip(config), config.prefix_frames)
    print(result.markdown(), end="")
    print(
        f"with the cache {result.cache_ms:.1f} ms a frame, by recomputation "
        f"{result.recompute_ms:.1f} ms a frame; largest difference {result.max_difference:.1e}"
    )
    print("wrote", save_rollout_strip(args.out, result.true, result.generated))


if __name__ == "__main__":
    main()
