"""Frame masks inside a HuggingFace video LLM: :func:`enable_frame_masks` and its handle.

Two forward pre-hooks do the work:

- on the multimodal base model (the ``XxxModel`` that ``model(**inputs)`` and ``generate`` call
  with ``input_ids``, the 2-D ``attention_mask`` and the video inputs): the family's layout
  adapter reads the prompt's frame ids, and checks the masks and positions it is given;
- on the text decoder (``language_model``): its 2-D padding mask is replaced by the prompt mask
  of the new tokens against the whole KV cache, in the form the backend needs: a
  ``[B, 1, Q, KV]`` bool tensor for sdpa, an additive float tensor for eager, a ``BlockMask``
  (closed form) for flex. The new tokens are the queries at their own positions
  ``past .. past + Q - 1``; a static cache's empty slots after them are padding. The decoder
  called on its own (not through the model, whose forward reads the frames) is refused.

The model keeps computing its own positions (M-RoPE through ``get_rope_index`` from the 2-D
mask, which the base model still sees), its padding and its KV cache; ``generate`` works
unchanged, with dynamic or static caches (the model's ``create_masks_for_generate`` keeps the
2-D mask 2-D while the handle lives), beams and several return sequences (each copy of a prompt
reads its prompt's videos again, :func:`~flexframe.integrations.hf_layouts.expanded_grid`).
Flex runs through flexframe's kernel policy (``flexframe.nn.kernels``: FlashAttention-4 on
Hopper where installed) under an attention function registered with transformers as
``"flexframe_flex"``; the text config's ``_attn_implementation`` is set to the backend for as
long as the handle lives. :meth:`FrameMaskHandle.remove` restores all of it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.attention.flex_attention import BlockMask

from flexframe._checks import check_choice, check_int, check_int_sequence, normalize_block_size
from flexframe._vocab import ATTENTION_BACKENDS, DEFAULT_BLOCK_SIZE, WITHIN_FRAME
from flexframe.integrations.hf_checks import _check_positions
from flexframe.integrations.hf_checks import check_padding_mask as check_padding_mask
from flexframe.integrations.hf_layouts import (
    base_model,
    family_of,
    read_prompt,
    tag_video_grids,
    text_decoder,
)
from flexframe.masks import get_mask
from flexframe.masks.prompt import PAD, TEXT, PromptMaskSpec
from flexframe.nn.kernels import CPU_MIN_HEAD_DIM, KERNELS, resolve_backend

HF_BACKENDS: tuple[str, ...] = (*ATTENTION_BACKENDS, "eager")
"""The text decoder's attention under a frame mask: flexframe's backends and HF's eager."""
FRAME_MASKS = {
    "causal-frame": "prompt-causal-frame",
    "sliding-window": "prompt-sliding-window",
    "timestamp-causal": "prompt-timestamp-causal",
}
"""The mask families by the name of their video part, and the registered prompt mask of each."""
FLEX_ATTENTION = "flexframe_flex"
"""The name flexframe's flex attention function is registered under with transformers."""


# -- the attention function ---------------------------------------------------------------------
def flexframe_flex_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: BlockMask | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract over flexframe's flex kernel policy.

    ``query`` ``[B, H, Q, D]``, ``key``/``value`` ``[B, H_kv, KV, D]``; returns
    ``([B, Q, H, D], None)``. The mask must be a ``BlockMask``: a tensor is refused (flex reads
    it as a score bias of another meaning; a 4-D bool one has crashed the process).

    Example:
        >>> flexframe_flex_attention(None, *[torch.zeros(1, 1, 2, 8)] * 3, torch.ones(1, 1, 2, 2))
        Traceback (most recent call last):
        ...
        TypeError: the flex attention of a frame-masked model needs a BlockMask, got a Tensor ...
    """
    if not isinstance(attention_mask, BlockMask):
        raise TypeError(
            "the flex attention of a frame-masked model needs a BlockMask, got a "
            f"{type(attention_mask).__name__} (shape {tuple(getattr(attention_mask, 'shape', ()))}"
            "); let enable_frame_masks build the mask, or use backend='sdpa' for a dense one"
        )
    if dropout and getattr(module, "training", False):
        raise ValueError(
            f"flex attention has no attention dropout (got dropout={dropout}); set the text "
            "config's attention_dropout to 0 or use backend='sdpa'"
        )
    for unsupported in ("softcap", "s_aux", "position_bias"):
        if kwargs.get(unsupported) is not None:
            raise ValueError(f"flexframe's flex attention does not take {unsupported}")
    if query.device.type == "cpu" and torch.is_grad_enabled() and query.requires_grad:
        raise RuntimeError(
            "FlexAttention has no backward pass on the CPU: train with backend='sdpa' (what "
            "'auto' means on the CPU) and keep flex for inference there"
        )
    head_dim = query.shape[-1]
    if scaling is not None and not math.isclose(scaling, head_dim**-0.5, rel_tol=1e-9):
        query = query * (scaling * math.sqrt(head_dim))
    out = KERNELS.attend(
        query, key, value, attention_mask, enable_gqa=query.shape[1] != key.shape[1]
    )
    return out.transpose(1, 2).contiguous(), None


def _register_with_transformers() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flex_attention_mask

    AttentionInterface.register(FLEX_ATTENTION, flexframe_flex_attention)
    AttentionMaskInterface.register(FLEX_ATTENTION, flex_attention_mask)


# -- the handle ------------------------------------------------------------------------------------
def _bind(forward: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's arguments by name (``**kwargs`` flattened)."""
    bound = inspect.signature(forward).bind_partial(*args, **kwargs)
    named = dict(bound.arguments)
    for name, param in inspect.signature(forward).parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD and name in named:
            named.update(named.pop(name))
    return named


def _cache_of(named: Mapping[str, Any]) -> Any:
    cache = named.get("cache")
    return named.get("past_key_values") if cache is None else cache


def _past(cache: Any) -> int:
    return 0 if cache is None else int(cache.get_seq_length())


MARK = "_flexframe_frame_masks"
"""The attribute under which the handle is kept on the model and on its text decoder (which the
model and its base model share: enabling on both is refused)."""


def _keep_padding_mask(*args: Any, attention_mask: Any = None, **kwargs: Any) -> Any:
    """``create_masks_for_generate`` of a frame-masked model: the 2-D padding mask stays 2-D.

    ``generate`` with a compilable cache (``cache_implementation="static"``, a ``StaticCache``)
    would otherwise replace it by transformers' own 4-D masks before the model's forward, where
    the frames are read from it."""
    return attention_mask


class FrameMaskHandle:
    """What :func:`enable_frame_masks` did to a model, and how to undo it.

    Attributes:
        model: the model.
        mask: the registered prompt mask (``"prompt-causal-frame"``, ...).
        params: its parameters besides the frame ids.
        backend: the text decoder's attention: ``"sdpa"``, ``"eager"`` or ``"flex"``.
        block_size: the flex BlockMask's ``(BLOCK_Q, BLOCK_KV)``.
        last_mask: the :class:`~flexframe.masks.prompt.PromptMaskSpec` of the latest forward.
        frame_ids: ``[B, L]`` frame ids of the sequence so far (prompt and generated tokens).

    Use as a context manager, or call :meth:`remove`.
    """

    def __init__(
        self,
        model: Any,
        mask: str,
        params: dict[str, Any],
        backend: str,
        block_size: tuple[int, int],
    ) -> None:
        self.model, self.mask, self.params = model, mask, params
        self.backend, self.block_size = backend, block_size
        self.family = family_of(model)
        self.last_mask: PromptMaskSpec | None = None
        self.frame_ids: torch.Tensor | None = None
        self.expected_frames: int | None = None  # every video's frames (a folded layout)
        self._fresh = False  # the base model read this forward's prompt (see _frame_mask)
        self._base, self._decoder = base_model(model), text_decoder(model)
        self._config: Any = self._decoder.config
        self._saved_attn = self._config._attn_implementation
        if backend == "flex":
            _register_with_transformers()
        self._config._attn_implementation = {"flex": FLEX_ATTENTION}.get(backend, backend)
        self._hooks = [
            self._base.register_forward_pre_hook(self._read_prompt, with_kwargs=True),
            self._base.register_forward_hook(self._done, always_call=True),
            self._decoder.register_forward_pre_hook(self._frame_mask, with_kwargs=True),
        ]
        if (grids := tag_video_grids(model)) is not None:
            self._hooks.append(grids)
        self._shadowed = "create_masks_for_generate" in model.__dict__
        self._saved_masks_fn = model.__dict__.get("create_masks_for_generate")
        model.create_masks_for_generate = _keep_padding_mask
        for holder in {id(model): model, id(self._decoder): self._decoder}.values():
            holder.__dict__[MARK] = self

    @property
    def active(self) -> bool:
        """Whether the hooks are still installed."""
        return bool(self._hooks)

    def remove(self) -> None:
        """Undo everything: the hooks go and the text decoder's attention is what it was."""
        for hook in self._hooks:
            hook.remove()
        if self._hooks:
            self._config._attn_implementation = self._saved_attn
            self.model.__dict__.pop("create_masks_for_generate", None)
            if self._shadowed:
                self.model.create_masks_for_generate = self._saved_masks_fn
            for holder in (self.model, self._decoder):
                holder.__dict__.pop(MARK, None)
        self._hooks = []

    def __enter__(self) -> FrameMaskHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return (
            f"FrameMaskHandle({type(self.model).__name__}, {self.mask}, backend={self.backend!r}"
            f", {state})"
        )

    # -- the hooks -------------------------------------------------------------------------
    def _done(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._fresh = False  # a later direct call of the text decoder has no prompt read

    def _read_prompt(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._fresh = False
        named = _bind(module.forward, args, kwargs)
        input_ids = named.get("input_ids")
        if input_ids is None:
            raise ValueError(
                "a frame-masked model needs input_ids (the frames are found from the video "
                "tokens); inputs_embeds alone cannot be read"
            )
        cache = _cache_of(named)
        past, (batch, length) = _past(cache), input_ids.shape
        padding = check_padding_mask(
            named.get("attention_mask"), batch, past + length, self.backend
        )
        if past == 0:
            new = padding[:, -length:] if padding is not None else None
            videos = {k: v for k, v in named.items() if k not in ("input_ids", "attention_mask")}
            prompt = read_prompt(self.model, input_ids, new, **videos)
            ids = prompt.frame_ids
            _check_positions(named.get("position_ids"), self.family, bool(prompt.videos))
            for video in prompt.videos:
                if self.expected_frames is not None and video.num_frames != self.expected_frames:
                    raise ValueError(
                        f"video {video.index} holds {video.num_frames} frames but the "
                        f"reconstruction layout {self.expected_frames}; give the model the "
                        "layout's frames (frame_layout(num_frames).frame_indices)"
                    )
        else:
            seen = self.frame_ids
            if seen is None or tuple(seen.shape) != (batch, past):
                raise ValueError(
                    f"the KV cache holds {past} tokens of {batch} rows, but flexframe saw "
                    f"{None if seen is None else tuple(seen.shape)}: run the whole sequence "
                    "through the model since enable_frame_masks (a cache filled before cannot be "
                    "read)"
                )
            if any(named.get(k) is not None for k in ("pixel_values_videos", "pixel_values")) or (
                named.get("mm_encoder_outputs")
            ):
                raise ValueError(
                    "a continuation of a cached sequence brings new images or videos: a frame "
                    "mask needs the whole prompt in one forward (clear the cache)"
                )
            ids = torch.full((batch, length), TEXT, dtype=torch.int64)
            if padding is not None:
                ids[padding[:, past:].cpu() == 0] = PAD
            ids = torch.cat([seen, ids], dim=1)
        self.frame_ids = ids
        self._fresh = True

    def _frame_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        named = _bind(module.forward, args, kwargs)
        embeds = named.get("inputs_embeds")
        if embeds is None:
            embeds = named.get("input_ids")
        if embeds is None or self.frame_ids is None or not self._fresh:
            raise ValueError(
                "the text decoder of a frame-masked model was called without the model: call "
                "the model enable_frame_masks was given (its frames are read there, at each "
                "forward)"
            )
        self._fresh = False
        cache = _cache_of(named)
        q_len, past = embeds.shape[1], _past(cache)
        ids = self.frame_ids
        if ids.shape[1] != past + q_len:
            raise ValueError(
                f"the text decoder got {q_len} new tokens after {past} cached ones, but flexframe "
                f"read {ids.shape[1]} tokens from the model's inputs"
            )
        kv_len = past + q_len
        if cache is not None and hasattr(cache, "get_mask_sizes"):
            kv_len, kv_offset = cache.get_mask_sizes(q_len, 0)
            if kv_offset or kv_len < past + q_len:
                raise ValueError(
                    f"caches that drop tokens (kv_offset={kv_offset}, {kv_len} slots for "
                    f"{past + q_len} tokens) are not supported"
                )
        if kv_len > ids.shape[1]:  # a static cache: its empty slots, after the tokens, are padding
            ids = torch.cat([ids, ids.new_full((ids.shape[0], kv_len - ids.shape[1]), PAD)], 1)
        # The new tokens sit at past .. past + q_len - 1 (the last ones only without empty slots).
        spec = get_mask(self.mask, frame_ids=ids, q_len=q_len, q_start=past, **self.params)
        assert isinstance(spec, PromptMaskSpec)
        self.last_mask = spec
        mask = prompt_attention_mask(
            spec, self.backend, embeds.dtype, embeds.device, self.block_size
        )
        named["attention_mask"] = mask
        return (), named


def prompt_attention_mask(
    spec: PromptMaskSpec,
    backend: str,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    block_size: int | tuple[int, int] = DEFAULT_BLOCK_SIZE,
) -> torch.Tensor | BlockMask:
    """A prompt mask in the form ``backend`` takes: ``[B, 1, Q, KV]`` bool (sdpa), additive
    ``dtype`` with ``finfo(dtype).min`` where masked (eager), or a ``BlockMask`` (flex).

    Example:
        >>> ids = torch.tensor([[TEXT, 0, 0]])
        >>> spec = get_mask("prompt-causal-frame", frame_ids=ids)
        >>> prompt_attention_mask(spec, "eager")[0, 0, 0].tolist() == [0, *[torch.finfo().min] * 2]
        True
    """
    check_choice("backend", backend, ("sdpa", "eager", "flex"))
    if backend == "flex":
        return spec.block_mask(device, normalize_block_size(block_size))
    dense = spec.to_dense(device)[:, None]
    if backend == "sdpa":
        return dense
    return torch.zeros(dense.shape, dtype=dtype, device=dense.device).masked_fill(
        ~dense, torch.finfo(dtype).min
    )


def enable_frame_masks(
    model: Any,
    mask: str = "causal-frame",
    *,
    backend: str = "auto",
    window_size: int | None = None,
    sink_frames: int = 0,
    timestamps: Sequence[int] | torch.Tensor | None = None,
    within_frame: str | None = None,
    block_size: int | tuple[int, int] = DEFAULT_BLOCK_SIZE,
    reconstruction: Any = None,
    num_frames: int | None = None,
) -> FrameMaskHandle:
    """Run ``model``'s text decoder under a frame mask; returns a handle to undo it.

    After this call the unchanged ``model(**inputs)`` and ``model.generate(**inputs)`` attend
    with the prompt mask ``mask`` (see ``flexframe.masks.prompt``): text token-causal, each video
    token its whole frame and what the family allows of its video, padding masked, positions,
    padding and KV cache the model's own (dynamic or static caches; beams and several return
    sequences in ``generate``).

    Args:
        model: a supported HuggingFace video LLM (``hf_layouts.SUPPORTED_FAMILIES``): the
            ``...ForConditionalGeneration`` that ``generate`` is called on, or its base model.
        mask: ``"causal-frame"``, ``"sliding-window"`` or ``"timestamp-causal"`` (or the
            registered ``"prompt-..."`` name).
        backend: ``"auto"`` (flex on CUDA, sdpa on the CPU), ``"flex"``, ``"sdpa"`` or
            ``"eager"``. Flex on the CPU needs a head dim of at least
            ``flexframe.nn.kernels.CPU_MIN_HEAD_DIM`` (32).
        window_size, sink_frames: the sliding window's frames back and sink frames.
        timestamps: timestamp-causal: the time of each frame number of a video (ints, or a 1-D
            integer tensor).
        within_frame: timestamp-causal: ``"full"`` (default) or ``"causal"`` among equal
            timestamps.
        block_size: the flex BlockMask's block size, an int or a ``(BLOCK_Q, BLOCK_KV)`` pair.
        reconstruction: a reconstruction loss (``reconstruction_from_model``) whose LLM-side
            mask to fold in: over a fast/slow layout (not in time order) the video part becomes
            timestamp-causal over the layout's timestamps (``within_frame="full"`` for
            causal-frame), so no frame's hidden state sees its target; every video must then
            hold the layout's frames.
        num_frames: with ``reconstruction`` and fast/slow frames, the clip length the layout is
            sampled from (in the model's frames).

    Example:
        >>> from flexframe.integrations.transformers import tiny_model
        >>> model, inputs = tiny_model("qwen2_vl")
        >>> with enable_frame_masks(model, "causal-frame", backend="sdpa") as handle:
        ...     logits = model(**inputs).logits
        >>> handle.last_mask.to_dense()[0, 4].int().tolist()  # a token of frame 0: all of it
        [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    """
    family_of(model)
    decoder = text_decoder(model)
    held = getattr(model, MARK, None) or decoder.__dict__.get(MARK)
    if held is not None and held.active:
        where = "this model" if held.model is model else f"its {type(held.model).__name__}"
        raise RuntimeError(
            f"frame masks are already enabled on {where} (they share the text decoder); call "
            "handle.remove() first"
        )
    name = FRAME_MASKS.get(mask, mask)
    check_choice("mask", name, (*FRAME_MASKS, *FRAME_MASKS.values()))
    backend = check_choice("backend", backend, HF_BACKENDS)
    device = next(iter(model.parameters())).device
    if backend == "auto":
        backend = resolve_backend("auto", device)
    config = decoder.config
    if backend == "flex" and device.type == "cpu":
        head_dim = _head_dim(config)
        if head_dim < CPU_MIN_HEAD_DIM:
            raise ValueError(
                f"backend='flex' on the CPU with the text decoder's head_dim={head_dim} is "
                f"refused: torch's CPU flex kernel gives wrong results for head dims below "
                f"{CPU_MIN_HEAD_DIM} at some lengths (measured with torch 2.13: errors up to 2.8, "
                "and NaN, against sdpa at 24 or 136 keys). Use backend='sdpa' (what 'auto' runs "
                f"on the CPU) or 'eager', or a model with a head dim of {CPU_MIN_HEAD_DIM} or more"
            )
    params: dict[str, Any] = {}
    if name == "prompt-sliding-window":
        if window_size is None:
            raise ValueError("mask='sliding-window' needs window_size (frames back), got None")
        params["window_size"] = check_int("window_size", window_size, minimum=0)
        if sink_frames:
            params["sink_frames"] = check_int("sink_frames", sink_frames, minimum=0)
    elif window_size is not None or sink_frames:
        raise ValueError(
            f"window_size and sink_frames belong to mask='sliding-window', not {mask!r}"
        )
    if name == "prompt-timestamp-causal":
        if timestamps is None and reconstruction is None:
            raise ValueError(
                "mask='timestamp-causal' needs timestamps (the time of each frame number) or "
                "reconstruction= (its layout's timestamps)"
            )
        if timestamps is not None:
            params["timestamps"] = list(check_int_sequence("timestamps", timestamps))
        params["within_frame"] = check_choice("within_frame", within_frame or "full", WITHIN_FRAME)
    else:
        for given, value in (("timestamps", timestamps), ("within_frame", within_frame)):
            if value is not None:
                raise ValueError(
                    f"{given}={value!r} belongs to mask='timestamp-causal', not {mask!r} (it would "
                    "be ignored)"
                )
    expected_frames = None
    if reconstruction is not None:
        name, params, expected_frames = _fold_llm_mask(
            reconstruction, name, params, num_frames, params.get("within_frame", "full")
        )
    elif num_frames is not None:
        raise ValueError("num_frames belongs with reconstruction=...")
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        raise ValueError(
            "the text decoder has sliding-window layers (use_sliding_window=True); a frame mask "
            "would replace their window: turn it off or leave the model's masks as they are"
        )
    handle = FrameMaskHandle(model, name, params, backend, normalize_block_size(block_size))
    handle.expected_frames = expected_frames
    return handle


def _head_dim(config: Any) -> int:
    head_dim = getattr(config, "head_dim", None)
    if isinstance(head_dim, int):
        return head_dim
    return int(config.hidden_size) // int(config.num_attention_heads)


def _fold_llm_mask(
    reconstruction: Any,
    name: str,
    params: dict[str, Any],
    num_frames: int | None,
    within_frame: str,
) -> tuple[str, dict[str, Any], int | None]:
    """The prompt mask with a reconstruction loss's LLM-side mask folded in (see
    ``AutoregressiveReconstructionModule.llm_mask``)."""
    module = getattr(reconstruction, "module", reconstruction)
    config = module.config
    if not config.use_fast_slow_frames:
        if name == "prompt-timestamp-causal" and "timestamps" not in params:
            raise ValueError("the reconstruction has no fast/slow layout: give timestamps")
        # A layout in time order: every frame mask here is leak-free; num_frames, if given,
        # is the frame count every video must hold.
        frames = None if num_frames is None else check_int("num_frames", num_frames, minimum=1)
        return name, params, frames
    if num_frames is None:
        raise ValueError(
            "reconstruction= with fast/slow frames needs num_frames, the clip length the layout "
            "is sampled from"
        )
    layout = module.frame_layout(check_int("num_frames", num_frames, minimum=1))
    if layout.in_time_order and name != "prompt-timestamp-causal":
        return name, params, len(layout)
    if name == "prompt-sliding-window":
        raise ValueError(
            "a sliding window over a fast/slow layout (out of time order) is not defined; use "
            "mask='causal-frame' or 'timestamp-causal'"
        )
    given = params.get("timestamps")
    if name == "prompt-timestamp-causal" and given not in (None, layout.frame_indices.tolist()):
        raise ValueError(
            f"timestamps={params['timestamps']} disagree with the reconstruction layout's "
            f"{layout.frame_indices.tolist()}; leave timestamps out"
        )
    within = within_frame if name == "prompt-timestamp-causal" else "full"
    timestamps = layout.frame_indices.tolist()
    return (
        "prompt-timestamp-causal",
        {"timestamps": timestamps, "within_frame": within},
        len(layout),
    )
