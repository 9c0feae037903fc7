"""Add flexframe's next-frame reconstruction loss to your own FSDP2 training loop.

Run on one machine with N processes (GPUs use NCCL, the CPU uses gloo):

    torchrun --nproc_per_node 2 examples/fsdp_training.py --steps 20

Without torchrun it runs in one process. The "LLM" here is a stand-in (a linear map from pixel
patches to hidden states); in a real model the hidden states come from the LLM's video tokens,
laid out as ``module.frame_layout(T)`` says, and the reconstruction loss is added to the
language-model loss.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from flexframe import create_autoregressive_reconstruction_module
from flexframe.data import MovingDigits
from flexframe.distributed import (
    all_reduce_mean,
    exit_process,
    global_batches,
    init_distributed,
    rank_slice,
    shutdown_distributed,
    under_torchrun,
    wrap_model,
)


class VideoLM(nn.Module):
    """A stand-in for a video LLM plus its auxiliary reconstruction loss."""

    def __init__(self, patch: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.patch = patch
        self.llm = nn.Linear(patch * patch, hidden)  # your LLM goes here
        self.reconstruction = create_autoregressive_reconstruction_module(
            "pixels",
            hidden,
            {"embedding_dim": patch * patch, "patch_size": patch, "predictor_dim": 64,
             "loss_weight": 0.1, "use_fast_slow_frames": True, "preset": "medium"},
        )  # fmt: skip

    def forward(self, video: torch.Tensor) -> torch.Tensor:  # video: [B, T, 1, H, W]
        layout = self.reconstruction.frame_layout(video.shape[1])
        frames = video[:, layout.frame_indices.to(video.device)]  # the frames the LLM sees
        b, f, c, h, w = frames.shape
        p = self.patch
        patches = frames.reshape(b, f, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
        hidden = self.llm(patches.reshape(b, -1, c * p * p))  # [B, F * P, hidden]
        lm_loss = hidden.pow(2).mean() * 0.0  # your language-model loss goes here
        aux = self.reconstruction.compute_autoregressive_loss(
            hidden_states=hidden, video_frames=video
        )
        return lm_loss + aux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8, help="global batch (all ranks)")
    args = parser.parse_args()

    env = init_distributed()
    torch.manual_seed(0)  # the same initial weights on every rank
    model = wrap_model(VideoLM().to(env.device), env, "fsdp")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    clips = MovingDigits(64, num_frames=32, image_size=32)
    batches = global_batches(len(clips), args.batch_size, seed=0)
    for step in range(args.steps):
        rows = rank_slice(next(batches), env)  # this rank's share of the global batch
        video = torch.stack([clips[i] for i in rows]).to(env.device)
        loss = model(video)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        mean_loss = all_reduce_mean(loss.detach(), env)
        if env.is_main and (step % 5 == 0 or step == args.steps - 1):
            print(f"step {step:3d}  loss {mean_loss:.4f}  ({env.world_size} process(es))")
    shutdown_distributed()


if __name__ == "__main__":
    main()
    if under_torchrun():  # gloo can abort a finished CPU worker during interpreter teardown
        exit_process(0)
