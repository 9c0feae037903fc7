"""The models of one ablation run: a stand-in LLM and the reconstruction module, as one step.

Two stand-ins turn each frame's patches into the hidden states the reconstruction module reads
(``stand_in``): :class:`FrameEncoder` works token by token and mixes nothing, so all temporal
modelling (and any leak) is the predictor's; :class:`CausalTransformerLM` is a small
transformer that, like a video LLM, attends over the video tokens under the module's
``llm_mask`` (token-causal in time order, timestamp-causal over a fast/slow layout, so it does
not leak either). :func:`build_models` builds the stand-in and the module right after
``torch.manual_seed(seed)``, so every leak-free configuration of a seed starts from the same
weights (the mask and the sampling add no parameters).

Example:
    >>> enc = FrameEncoder(patch_size=4, channels=1, hidden_size=16, tokens_per_frame=4)
    >>> enc(torch.rand(2, 3, 1, 8, 8)).shape          # [B, F, C, H, W] -> [B, F * P, hidden]
    torch.Size([2, 12, 16])
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from flexframe.experiment.config import AblationConfig
from flexframe.experiment.configurations import AblationConfiguration
from flexframe.experiment.objective import Objective
from flexframe.nn import FlexFrameDecoder

if TYPE_CHECKING:
    from flexframe.reconstruction.module import AutoregressiveReconstructionModule

__all__ = [
    "CausalTransformerLM",
    "FrameEncoder",
    "SelfMemoryDecoder",
    "TrainStep",
    "build_models",
    "build_train_step",
    "module_config",
    "patchify",
]


def patchify(frames: Tensor, patch_size: int) -> Tensor:
    """``[B, F, C, H, W]`` -> ``[B, F, P, C * patch_size**2]``, patches in row-major order.

    Example:
        >>> patchify(torch.arange(16).view(1, 1, 1, 4, 4), 2)[0, 0].tolist()
        [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    """
    b, f, c, h, w = frames.shape
    p = patch_size
    x = frames.reshape(b, f, c, h // p, p, w // p, p)
    return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, f, (h // p) * (w // p), c * p * p)


class FrameEncoder(nn.Module):
    """A small per-frame encoder standing in for the LLM: patches -> hidden states.

    Each patch goes through a linear embedding plus a learned position of the patch within its
    frame, then ``depth`` residual MLP blocks applied token by token. Nothing here mixes tokens,
    so what a hidden state knows about time comes only from the predictor's attention (and its
    mask).

    Args:
        patch_size: pixels per patch side.
        channels: image channels ``C``.
        hidden_size: width of the hidden states.
        tokens_per_frame: patches per frame ``P``.
        depth: residual MLP blocks after the embedding.

    Example:
        >>> enc = FrameEncoder(patch_size=2, channels=3, hidden_size=8, tokens_per_frame=4)
        >>> enc(torch.rand(1, 5, 3, 4, 4)).shape
        torch.Size([1, 20, 8])
    """

    def __init__(
        self,
        patch_size: int,
        channels: int,
        hidden_size: int,
        tokens_per_frame: int,
        depth: int = 1,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tokens_per_frame = tokens_per_frame
        self.embed = nn.Linear(channels * patch_size**2, hidden_size)
        self.patch_position = nn.Parameter(torch.randn(tokens_per_frame, hidden_size) * 0.02)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(hidden_size),
                nn.Linear(hidden_size, 2 * hidden_size),
                nn.GELU(),
                nn.Linear(2 * hidden_size, hidden_size),
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(hidden_size)

    def embed_patches(self, frames: Tensor) -> Tensor:
        """``[B, F, C, H, W]`` -> ``[B, F, P, hidden_size]``: embedding plus patch position."""
        patches = patchify(frames, self.patch_size)  # [B, F, P, C * p * p]
        if patches.shape[2] != self.tokens_per_frame:
            raise ValueError(
                f"frames of {tuple(frames.shape[-2:])} pixels give {patches.shape[2]} patches of "
                f"{self.patch_size}, but this encoder was built for {self.tokens_per_frame}"
            )
        return self.embed(patches) + self.patch_position

    def forward(self, frames: Tensor, llm_mask: Any = None) -> Tensor:
        """``[B, F, C, H, W]`` frames -> ``[B, F * P, hidden_size]`` hidden states.

        ``llm_mask`` is accepted for the stand-ins' common signature and not used: nothing here
        attends.
        """
        x = self.embed_patches(frames)
        for block in self.blocks:
            x = x + block(x)
        return self.norm(x).flatten(1, 2)


class CausalTransformerLM(nn.Module):
    """A small transformer standing in for a video LLM: token-causal over the video tokens.

    Patches are embedded as in :class:`FrameEncoder`, then ``depth`` pre-norm decoder layers
    (a :class:`~flexframe.FlexFrameDecoder`, frame+patch rotary positions) attend under
    ``llm_mask``: the reconstruction module's ``llm_mask(num_frames, tokens_per_frame)``, which
    is the LLM's token-causal mask on a layout in time order and timestamp-causal (token-causal
    within a timestamp) over a fast/slow layout, so no hidden state reads a later frame.

    Args:
        patch_size, channels, hidden_size, tokens_per_frame: as :class:`FrameEncoder`.
        depth: transformer layers (at least 1).
        num_heads: attention heads (``hidden_size / num_heads`` a multiple of 4).
        attention_backend: ``flex`` or ``sdpa`` (``auto``: flex on CUDA).

    Example:
        >>> from flexframe import get_mask
        >>> lm = CausalTransformerLM(2, 1, 16, 4, depth=1, num_heads=2)
        >>> lm(torch.rand(1, 3, 1, 4, 4), get_mask("token-causal", seq_len=12)).shape
        torch.Size([1, 12, 16])
    """

    def __init__(
        self,
        patch_size: int,
        channels: int,
        hidden_size: int,
        tokens_per_frame: int,
        depth: int = 1,
        num_heads: int = 4,
        attention_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.embedding = FrameEncoder(patch_size, channels, hidden_size, tokens_per_frame, 0)
        self.decoder = FlexFrameDecoder(
            dim=hidden_size,
            depth=depth,
            num_heads=num_heads,
            attention_backend=attention_backend,
        )

    def forward(self, frames: Tensor, llm_mask: Any) -> Tensor:
        """``[B, F, C, H, W]`` frames -> ``[B, F * P, hidden_size]`` under ``llm_mask``."""
        x = self.embedding.embed_patches(frames).flatten(1, 2)  # [B, F * P, hidden]
        return self.decoder(x, llm_mask)


class SelfMemoryDecoder(FlexFrameDecoder):
    """The seed design's predictor, for its leaking row: ``predictor(tgt=x, memory=x)``.

    A :class:`~flexframe.FlexFrameDecoder` with cross-attention whose memory is its own input,
    with the memory mask given explicitly as ``get_mask("full", ...)`` (the decoder refuses an
    unmasked cross-attention under a causal mask): every query reads every frame, the future
    included, whatever the self-attention mask. Never leak-free; built only for the row that
    measures what this leak does to the loss.

    Example:
        >>> from flexframe import get_mask
        >>> dec = SelfMemoryDecoder(dim=16, depth=1, num_heads=2, cross_attention=True).eval()
        >>> x = torch.zeros(1, 4, 16)
        >>> y = x.clone(); y[0, 3] = 1.0              # change the last token only
        >>> mask = get_mask("token-causal", seq_len=4)
        >>> with torch.no_grad():
        ...     torch.equal(dec(x, mask)[0, 0], dec(y, mask)[0, 0])  # the first token reads it
        False
    """

    def forward(  # type: ignore[override]
        self, x: Tensor, mask: Any, memory: Tensor | None = None, memory_mask: Any = None,
        **kwargs: Any,
    ) -> Tensor:  # fmt: skip
        """The decoder on ``x`` ``[B, N, dim]``, its cross-attention reading ``x`` unmasked."""
        from flexframe.masks import get_mask

        full = get_mask("full", seq_len=x.shape[1], kv_len=x.shape[1])
        return super().forward(x, mask, x, full, **kwargs)


def module_config(
    config: AblationConfig, configuration: AblationConfiguration, channels: int, backend: str
) -> dict[str, Any]:
    """The ``config`` dict for ``create_autoregressive_reconstruction_module`` of one run.

    Only the configuration's switches depend on ``configuration``; everything else is shared.

    Example:
        >>> from flexframe.experiment.configurations import ABLATION_CONFIGURATIONS
        >>> cfg = module_config(AblationConfig(), ABLATION_CONFIGURATIONS[0], 1, "sdpa")
        >>> cfg["embedding_dim"], cfg["use_frame_causal_mask"], cfg["num_fast"]
        (64, False, 8)
    """
    return {
        "embedding_dim": config.patch_size**2 * channels,
        "patch_size": config.patch_size,
        "loss_weight": 1.0,
        "use_frame_causal_mask": configuration.use_frame_causal_mask,
        "use_fast_slow_frames": configuration.use_fast_slow_frames,
        **config.fast_slow_settings(),
        "merge_strategy": config.merge_strategy,
        "predictor_depth": config.predictor_depth,
        "predictor_heads": config.predictor_heads,
        "predictor_dim": config.predictor_dim,
        "attention_backend": backend,
        "loss_type": config.loss_type,
        "activation_checkpointing": config.activation_checkpointing,
        **({"mask": configuration.mask} if configuration.mask is not None else {}),
    }


def build_models(
    config: AblationConfig,
    configuration: AblationConfiguration,
    seed: int,
    channels: int = 1,
    device: torch.device | str = "cpu",
    backend: str = "sdpa",
) -> tuple[nn.Module, AutoregressiveReconstructionModule]:
    """The stand-in LLM and the reconstruction module of one run, seeded with ``seed``.

    Both are built right after ``torch.manual_seed(seed)``, stand-in first, so two leak-free
    configurations with the same seed start from the same weights. With ``predict_residual``
    the module's output projection starts at zero: the untrained model copies. The
    ``memory=x`` row's predictor is a :class:`SelfMemoryDecoder` that starts from the built
    predictor's weights; only its cross-attention is new.

    Example:
        >>> from flexframe.experiment.configurations import ABLATION_CONFIGURATIONS
        >>> cfg = AblationConfig(hidden_size=16, predictor_dim=16)
        >>> enc, _ = build_models(cfg, ABLATION_CONFIGURATIONS[0], seed=0)
        >>> enc2, _ = build_models(cfg, ABLATION_CONFIGURATIONS[3], seed=0)
        >>> torch.equal(enc.embed.weight, enc2.embed.weight)
        True
    """
    from flexframe.reconstruction import create_autoregressive_reconstruction_module

    torch.manual_seed(seed)
    size = (config.patch_size, channels, config.hidden_size, config.tokens_per_frame)
    encoder: nn.Module
    if config.stand_in == "transformer":
        encoder = CausalTransformerLM(*size, config.encoder_depth, config.encoder_heads, backend)
    else:
        encoder = FrameEncoder(*size, config.encoder_depth)
    module = create_autoregressive_reconstruction_module(
        vision_tower="pixels",
        hidden_size=config.hidden_size,
        config=module_config(config, configuration, channels, backend),
    )
    if config.predict_residual:
        # An output of zero is copying the frame: start there, so that training moves away
        # from copying only as far as the training clips pay for it.
        nn.init.zeros_(module.output_proj.weight)
        nn.init.zeros_(module.output_proj.bias)
    if configuration.memory_is_input:
        leaking = SelfMemoryDecoder(dataclasses.replace(module.predictor.config,
                                                        cross_attention=True))  # fmt: skip
        missing, unexpected = leaking.load_state_dict(module.predictor.state_dict(), strict=False)
        assert not unexpected and all(".cross_attn." in k or ".norm_cross." in k for k in missing)
        module.predictor = leaking
    with warnings.catch_warnings():
        # The seed's fast-slow mask leaks, and its row says so: the module's warning adds
        # nothing. The mask is built (and cached) here, once.
        warnings.filterwarnings("ignore", message="mask 'fast-slow' leaks the future")
        module.mask_spec(num_frames=config.num_frames, tokens_per_frame=config.tokens_per_frame)
    return encoder.to(device), module.to(device)


def build_train_step(
    config: AblationConfig,
    configuration: AblationConfiguration,
    seed: int,
    channels: int = 1,
    device: torch.device | str = "cpu",
    backend: str = "sdpa",
) -> TrainStep:
    """:func:`build_models` as one :class:`TrainStep`, with the run's :class:`Objective` (its
    ``scale`` still 1: :meth:`Objective.fitted` sets it from the training clips).

    Example:
        >>> from flexframe.experiment.configurations import ABLATION_CONFIGURATIONS
        >>> cfg = AblationConfig(hidden_size=16, predictor_dim=16, image_size=16)
        >>> step = build_train_step(cfg, ABLATION_CONFIGURATIONS[1], seed=0)
        >>> step.objective.residual, step(torch.rand(2, 32, 1, 16, 16)).shape
        (True, torch.Size([]))
    """
    encoder, module = build_models(config, configuration, seed, channels, device, backend)
    previous = None
    if config.uses_motion_scale:
        nxt = module.frame_layout(num_frames=config.num_frames).next_index.tolist()
        prev = [-1] * len(nxt)
        for f, n in enumerate(nxt):
            if n >= 0:
                prev[n] = f
        previous = tuple(prev)
    objective = Objective(
        residual=config.predict_residual,
        next_position_targets=configuration.next_position_targets,
        loss_type=config.loss_type,
        previous=previous,
    )
    return TrainStep(encoder, module, objective)


class TrainStep(nn.Module):
    """The stand-in LLM and the reconstruction module as one module whose ``forward`` is the
    loss, so that DDP and FSDP2 see (and synchronise) every trainable parameter in one call.

    The loss is the :class:`Objective`'s, on the reconstruction module's outputs.

    Example:
        >>> from flexframe.experiment.configurations import ABLATION_CONFIGURATIONS
        >>> cfg = AblationConfig(hidden_size=16, predictor_dim=16, image_size=16)
        >>> step = TrainStep(*build_models(cfg, ABLATION_CONFIGURATIONS[1], seed=0))
        >>> loss, out = step(torch.rand(2, 32, 1, 16, 16), return_outputs=True)
        >>> loss.shape, tuple(out.predictions.shape)  # [B, F, P, E]
        (torch.Size([]), (2, 32, 4, 64))
    """

    def __init__(
        self,
        encoder: nn.Module,
        module: AutoregressiveReconstructionModule,
        objective: Objective | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.module: AutoregressiveReconstructionModule = module
        self.objective = objective or Objective()
        self._llm_masks: dict[tuple[int, int], Any] = {}

    def llm_mask(self, num_frames: int, tokens_per_frame: int) -> Any:
        """The stand-in LLM's mask: the module's ``llm_mask`` (built once per shape)."""
        key = (num_frames, tokens_per_frame)
        if key not in self._llm_masks:
            self._llm_masks[key] = self.module.llm_mask(num_frames, tokens_per_frame)
        return self._llm_masks[key]

    def read_masks(self, num_frames: int, tokens_per_frame: int) -> list[Any]:
        """Every attention mask a prediction reads through, each ``[F * P, F * P]``: the
        predictor's, the transformer stand-in's ``llm_mask``, and the ``memory=x`` row's
        cross-attention mask (``full``); what the leak check runs on."""
        from flexframe.masks import get_mask

        spec = self.module.mask_spec(num_frames=num_frames, tokens_per_frame=tokens_per_frame)
        masks = [spec]
        if isinstance(self.encoder, CausalTransformerLM):
            masks.append(self.llm_mask(num_frames, tokens_per_frame))
        if isinstance(self.module.predictor, SelfMemoryDecoder):
            masks.append(get_mask("full", seq_len=spec.q_len, kv_len=spec.kv_len))
        return masks

    def forward(self, video: Tensor, return_outputs: bool = False) -> Any:
        """The loss on ``video`` ``[B, T, C, H, W]`` (and the module's outputs if asked)."""
        t = video.shape[1]
        layout = self.module.frame_layout(num_frames=t)
        frames = video[:, layout.frame_indices.to(video.device)]  # [B, F, C, H, W]
        p = (frames.shape[-2] // self.module.config.patch_size) * (
            frames.shape[-1] // self.module.config.patch_size
        )
        hidden = self.encoder(frames, self.llm_mask(t, p))  # [B, F * P, hidden]
        _, out = self.module.compute_autoregressive_loss(
            hidden_states=hidden, video_frames=video, return_outputs=True
        )
        loss = self.objective.loss(out)
        return (loss, out) if return_outputs else loss
