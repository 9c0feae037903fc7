"""One training step of a Qwen2-VL with frame-masked attention and the reconstruction loss.

A tiny random-weight Qwen2-VL (built from a config, nothing downloaded) reads a batch of two
prompts, ``text | video | text``, left-padded. Three lines turn it into a frame-level model:

1. ``enable_frame_masks(model, "causal-frame")``: the text decoder attends with the prompt mask
   (text token-causal, each video token its whole temporal patch and everything before it);
2. ``reconstruction_from_model(model, config)``: the next-frame reconstruction loss on the
   model's own frames (a frame is a temporal patch of 2 raw frames), with the features the model
   computed for its video tokens as targets;
3. ``loss = out.loss + recon(inputs)``: the language-model loss plus the reconstruction loss.

Run: ``python examples/qwen2_vl_frame_masks.py`` (a few seconds on a CPU). For a real model,
load it and its processor instead of ``tiny_model`` and keep the rest.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from flexframe.integrations.transformers import (  # noqa: E402
    enable_frame_masks,
    reconstruction_from_model,
    tiny_model,
)


def main() -> dict[str, float]:
    torch.manual_seed(0)
    model, inputs = tiny_model("qwen2_vl", batch=2, frames=4, padding="left")
    model.train()
    recon = reconstruction_from_model(
        model, {"predictor_dim": 32, "predictor_depth": 1, "loss_weight": 0.1}
    )
    optimizer = torch.optim.AdamW([*model.parameters(), *recon.parameters()], lr=1e-3)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)

    with enable_frame_masks(model, "causal-frame", backend="auto") as handle:
        out = model(**inputs, labels=labels)
        aux = recon(inputs, video=inputs.video)  # video: only checked against the model's frames
        loss = out.loss + aux
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    result = {"lm_loss": out.loss.item(), "reconstruction_loss": aux.item()}
    print(
        f"{handle.mask} on {handle.backend}: language-model loss {result['lm_loss']:.4f}, "
        f"reconstruction loss {result['reconstruction_loss']:.4f}"
    )
    return result


if __name__ == "__main__":
    main()
