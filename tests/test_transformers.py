"""flexframe inside HuggingFace video LLMs: tiny random-weight models of every family, no downloads.

References are written here: the dense additive mask from the written rules of the prompt masks
(``test_hf_prompt_masks.reference``), the model's own ``get_rope_index`` positions, transformers'
``block_sequence_ids`` mask, greedy decoding by hand. The text decoders have heads of 32 (torch's
CPU flex kernel is wrong below that) and every flex run has the shape ``[2 rows, 24 tokens]``, a
length that is no multiple of 16 (one compiled kernel per mask family serves all families).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may touch the network

import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_hf_prompt_masks import reference as prompt_reference  # noqa: E402

from flexframe import get_mask  # noqa: E402
from flexframe.integrations.hf_layouts import PROCESSOR_NORMALIZATION  # noqa: E402
from flexframe.integrations.hf_tiny import qwen_patchify  # noqa: E402
from flexframe.integrations.transformers import (  # noqa: E402
    SUPPORTED_FAMILIES,
    check_padding_mask,
    enable_frame_masks,
    flexframe_flex_attention,
    prompt_attention_mask,
    read_prompt,
    reconstruction_from_model,
    text_decoder,
    tiny_model,
)
from flexframe.masks.prompt import PAD, TEXT  # noqa: E402

# Text around the video per family so that every prompt of 2 rows is 24 tokens long.
TEXT_AROUND = {"qwen2_vl": (6, 7), "qwen2_5_vl": (6, 7), "llava_onevision": (7, 7),
               "qwen3_vl": (4, 5), "smolvlm": (4, 5)}  # fmt: skip
LENGTH, HEAD_DIM, WIDTH = 24, 32, 4 * 32
SPECIAL = [100, 101, 102, 103, 104]  # the tiny vocabulary's image/video/marker tokens
SUPPRESSED = [0, 1, 2, *SPECIAL]  # and padding, bos, eos: generate runs all its steps
MASKS = {  # a registered prompt mask and its parameters, by enable_frame_masks' arguments
    "causal-frame": ("prompt-causal-frame", {}),
    "sliding-window": ("prompt-sliding-window", {"window_size": 0}),
    "timestamp-causal": ("prompt-timestamp-causal", {"timestamps": [2, 0, 1]}),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest.py)


def prompt(family: str, padding: str = "left", **kw):
    return tiny_model(
        family, batch=2, padding=padding, text=TEXT_AROUND[family], head_dim=HEAD_DIM, **kw
    )


def reference_additive(ids: torch.Tensor, mask: str = "causal-frame") -> torch.Tensor:
    """``[B, 1, L, L]`` additive mask (0 or the float32 minimum) from the written rules."""
    name, params = MASKS[mask]
    allowed = prompt_reference(ids, name, **params)
    return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo().min)[:, None]


def explicit_positions(model, inputs) -> torch.Tensor:
    """The positions the model computes for itself: ``get_rope_index`` (M-RoPE) or 1-D."""
    if model.config.model_type.startswith("qwen"):
        keys = ("input_ids", "video_grid_thw", "attention_mask", "mm_token_type_ids")
        return model.model.get_rope_index(**{k: inputs[k] for k in keys if k in inputs})[0]
    return (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)


def eager_twin(family: str, model, **kw):
    twin, _ = prompt(family, attn_implementation="eager", **kw)
    twin.load_state_dict(model.state_dict())
    return twin


def perturb_embeds(model, delta: torch.Tensor):
    """A forward pre-hook adding ``delta`` ``[B, L, D]`` to the text decoder's input embeddings
    (registered after the frame mask's hook, so it sees the embeddings the decoder gets)."""

    def hook(module, args, kwargs):
        kwargs["inputs_embeds"] = kwargs["inputs_embeds"] + delta
        return args, kwargs

    return text_decoder(model).register_forward_pre_hook(hook, with_kwargs=True)


def with_pixels(family: str, inputs, video: torch.Tensor) -> dict:
    """``inputs`` with the pixels of the raw clips ``video`` ``[videos, T, 3, H, W]`` in
    ``[0, 1]``, normalised and laid out as the family's processor does."""
    mean, std = (torch.tensor(v).view(1, 1, 3, 1, 1) for v in PROCESSOR_NORMALIZATION[family])
    pixels = (video - mean) / std
    if family.startswith("qwen"):
        return dict(
            inputs, pixel_values_videos=torch.cat([qwen_patchify(v, 2, 2, 2) for v in pixels])
        )
    key = "pixel_values" if family == "smolvlm" else "pixel_values_videos"
    return dict(inputs, **{key: pixels})


def extend(inputs, new_tokens: torch.Tensor) -> dict:
    """The inputs of a prompt followed by ``new_tokens`` ``[B, n]`` of text."""
    b, n = new_tokens.shape
    out = dict(inputs, input_ids=torch.cat([inputs["input_ids"], new_tokens], 1))
    out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones(b, n).long()], 1)
    if "mm_token_type_ids" in inputs:
        kind = inputs["mm_token_type_ids"]
        out["mm_token_type_ids"] = torch.cat([kind, kind.new_zeros(b, n)], 1)
    return out


def greedy_by_hand(twin, inputs, steps: int, mask: str = "causal-frame") -> torch.Tensor:
    """Greedy decoding with no cache: the eager twin on the whole sequence at each step, under
    the written mask over the prompt's frame ids (new tokens are text) and explicit positions."""
    ids = read_prompt(twin, **inputs).frame_ids
    new = torch.zeros(ids.shape[0], 0, dtype=torch.long)
    for _ in range(steps):
        step = extend(inputs, new)
        frame_ids = torch.cat([ids, torch.full_like(new, TEXT)], 1)
        step["position_ids"] = explicit_positions(twin, step)
        step["attention_mask"] = reference_additive(frame_ids, mask)
        with torch.no_grad():
            logits = twin(**step).logits[:, -1]
        logits[:, SUPPRESSED] = -torch.inf
        new = torch.cat([new, logits.argmax(-1, keepdim=True)], 1)
    return torch.cat([inputs["input_ids"], new], 1)


# -- the frames of a prompt ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "family, body",
    [
        ("qwen2_vl", [-1, 0, 0, 0, 0, 1, 1, 1, 1, -1]),
        ("llava_onevision", [0, 0, 0, 0, 1, 1, 1, 1, -1]),
        ("qwen3_vl", [-1, -1, 0, 0, 0, 0, -1, -1, -1, 1, 1, 1, 1, -1]),
        ("smolvlm", [-1, -1, 0, 0, 0, 0, -1, -1, -1, 1, 1, 1, 1, -1]),
    ],
)
def test_frame_ids_follow_each_familys_layout(family, body):
    model, inputs = prompt(family, padding="right")
    ids = read_prompt(model, **inputs).frame_ids
    before, after = TEXT_AROUND[family]
    want = [TEXT] * before + body + [TEXT] * after
    assert ids[0].tolist() == want + [PAD]  # row 0 is one token shorter: right padding
    assert ids[1].tolist() == [TEXT] + want


def test_qwen_frames_are_temporal_patches_and_their_count_comes_from_the_grid():
    model, inputs = tiny_model("qwen2_vl", frames=3)
    videos = read_prompt(model, **inputs).videos
    assert [(v.num_frames, v.tokens_per_frame, v.raw_frames_per_frame) for v in videos] == [
        (3, 4, 2)
    ]
    wrong = dict(inputs, video_grid_thw=torch.tensor([[6, 2, 4]]))  # 12 tokens, 2 a frame
    with pytest.raises(ValueError, match="input_ids hold 12 video tokens but video_grid_thw"):
        read_prompt(model, **dict(wrong, video_grid_thw=torch.tensor([[4, 4, 4]])))
    assert [v.tokens_per_frame for v in read_prompt(model, **wrong).videos] == [2]


# -- the enabled model against a hand-written reference -----------------------------------------
@pytest.mark.parametrize("backend", ["sdpa", "eager", "flex"])
@pytest.mark.parametrize("family", SUPPORTED_FAMILIES)
def test_logits_equal_eager_attention_with_a_hand_written_mask(family, backend):
    model, inputs = prompt(family, padding="left")
    ids = read_prompt(model, **inputs).frame_ids
    assert ids.shape == (2, LENGTH)
    twin = eager_twin(family, model)
    reference = dict(inputs, attention_mask=reference_additive(ids))
    reference["position_ids"] = explicit_positions(twin, inputs)
    with torch.no_grad():
        want = twin(**reference).logits
        with enable_frame_masks(model, "causal-frame", backend=backend):
            got = model(**inputs).logits
    real = ids != PAD
    torch.testing.assert_close(got[real], want[real], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "family, mask, backends",
    [
        ("qwen2_vl", "sliding-window", ("sdpa", "eager", "flex")),  # 2 frames, 24 tokens
        ("qwen2_vl", "timestamp-causal", ("sdpa", "eager")),
        ("llava_onevision", "sliding-window", ("sdpa", "eager")),
        ("qwen3_vl", "timestamp-causal", ("sdpa", "eager")),  # timestamps between frames
        ("smolvlm", "timestamp-causal", ("sdpa", "eager")),
        ("smolvlm", "sliding-window", ("sdpa",)),
    ],
)
def test_every_mask_family_equals_eager_attention_with_the_written_mask(family, mask, backends):
    frames = 2 if "flex" in backends else 3  # flex: the shape every flex test shares
    model, inputs = prompt(family, padding="right", frames=frames)
    ids = read_prompt(model, **inputs).frame_ids
    twin = eager_twin(family, model, frames=frames)
    reference = dict(inputs, attention_mask=reference_additive(ids, mask))
    reference["position_ids"] = explicit_positions(twin, inputs)
    name, params = MASKS[mask]
    if mask == "timestamp-causal":
        params = {"timestamps": params["timestamps"][:frames]}
    real = ids != PAD
    with torch.no_grad():
        want = twin(**reference).logits[real]
        stock = model(**inputs).logits[real]
        for backend in backends:
            with enable_frame_masks(model, mask, backend=backend, **params) as handle:
                got = model(**inputs).logits[real]
            assert handle.mask == name
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert (stock - want).abs().max() > 1e-3  # the mask differs from the stock causal one


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_onevision", "qwen3_vl"])
def test_causal_frame_is_transformers_own_block_sequence_ids_mask(family):
    from transformers.masking_utils import create_causal_mask

    for padding in ("left", "right"):
        model, inputs = prompt(family, padding=padding)
        ids = read_prompt(model, **inputs).frame_ids
        # One group per frame (numbered apart across rows and videos), text -1.
        groups = torch.where(ids >= 0, ids + 100 * torch.arange(2)[:, None], -1)
        config = text_decoder(model).config
        embeds = torch.zeros(2, ids.shape[1], 1)
        theirs = create_causal_mask(
            config, embeds, inputs["attention_mask"], None, block_sequence_ids=groups
        )
        with enable_frame_masks(model, "causal-frame", backend="sdpa") as handle:
            model(**inputs)
        assert torch.equal(handle.last_mask.to_dense()[:, None], theirs)


# -- no leak ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("family", SUPPORTED_FAMILIES)
def test_changing_frame_k_changes_nothing_before_it_and_every_token_of_it(family, backend):
    model, inputs = prompt(family)
    ids = read_prompt(model, **inputs).frame_ids
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad(), enable_frame_masks(model, "causal-frame", backend=backend):
        base = model(**inputs).logits
        for k in (0, 1):
            for row in (0, 1):
                where = torch.nonzero(ids[row] == k).flatten()
                first, last = int(where[0]), int(where[-1])
                delta = torch.zeros(2, ids.shape[1], WIDTH)
                delta[row, first : last + 1] = torch.randn(last + 1 - first, WIDTH, generator=gen)
                hook = perturb_embeds(model, delta)
                moved = (model(**inputs).logits - base)[row].abs().amax(-1)
                hook.remove()
                real_before = ids[row, :first] != PAD
                assert moved[:first][real_before].max().item() == 0.0
                assert bool((moved[first : last + 1] > 0).all())
                assert (model(**inputs).logits - base).abs().max().item() == 0.0  # hook gone


@pytest.mark.parametrize("family", SUPPORTED_FAMILIES)
def test_changing_the_pixels_of_frame_k_changes_nothing_before_it(family):
    # End to end from the pixels: frame k's raw frames (Qwen: its 2 raw frames) change, through
    # the family's processor layout and vision tower, and nothing before frame k moves.
    model, inputs = prompt(family, frames=3)
    ids = read_prompt(model, **inputs).frame_ids
    per = 2 if family.startswith("qwen") else 1
    gen = torch.Generator().manual_seed(2)
    masks = [("causal-frame", {}), ("sliding-window", {"window_size": 1})]
    for mask, params in masks if family in ("qwen2_vl", "smolvlm") else masks[:1]:
        with torch.no_grad(), enable_frame_masks(model, mask, backend="sdpa", **params):
            base = model(**inputs).logits
            for k in range(3):
                video = inputs.video.clone()
                video[1, k * per : (k + 1) * per] = torch.rand(per, 3, 8, 8, generator=gen)
                moved = (model(**with_pixels(family, inputs, video)).logits - base).abs().amax(-1)
                where = torch.nonzero(ids[1] == k).flatten()
                first, last = int(where[0]), int(where[-1])
                assert moved[1, :first][ids[1, :first] != PAD].max().item() == 0.0
                assert bool((moved[1, first : last + 1] > 0).all())  # every token of frame k
                assert moved[0].max().item() == 0.0  # the other row's video is its own


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_onevision", "smolvlm"])
def test_changing_the_last_token_of_a_frame_changes_its_first_token(family):
    model, inputs = prompt(family)
    ids = read_prompt(model, **inputs).frame_ids
    where = torch.nonzero(ids[1] == 0).flatten()
    first, last = int(where[0]), int(where[-1])
    delta = torch.zeros(2, ids.shape[1], WIDTH)
    delta[1, last] = 1.0
    moved = {}
    for masked in (True, False):
        handle = enable_frame_masks(model, "causal-frame", backend="sdpa") if masked else None
        with torch.no_grad():
            base = model(**inputs).logits
            hook = perturb_embeds(model, delta)
            moved[masked] = (model(**inputs).logits - base)[1, first].abs().max().item()
            hook.remove()
        if handle:
            handle.remove()
    assert moved[True] > 1e-4  # the frame mask: the first token sees its frame's last token
    assert moved[False] == 0.0  # the stock token-causal model: it does not


# -- padding, generate, caches, undo -------------------------------------------------------------
@pytest.mark.parametrize(
    "family, paddings", [("qwen2_vl", ("left", "right")), ("llava_onevision", ("right",))]
)
@pytest.mark.parametrize(
    "mask, extra", [("causal-frame", {}), ("sliding-window", {"window_size": 0})]
)
def test_padded_rows_equal_the_same_rows_unpadded(family, paddings, mask, extra):
    for padding in paddings:
        model, inputs = prompt(family, padding=padding)
        with torch.no_grad(), enable_frame_masks(model, mask, backend="sdpa", **extra):
            batched = model(**inputs).logits
            for row in (0, 1):
                real = inputs["attention_mask"][row].bool()
                single = {k: v for k, v in inputs.items()}
                single["input_ids"] = inputs["input_ids"][row : row + 1, real]
                single["attention_mask"] = torch.ones_like(single["input_ids"])
                if "mm_token_type_ids" in inputs:
                    single["mm_token_type_ids"] = inputs["mm_token_type_ids"][row : row + 1, real]
                for key in ("video_grid_thw", "image_sizes_videos"):
                    if key in inputs:
                        single[key] = inputs[key][row : row + 1]
                if family.startswith("qwen"):
                    per_video = inputs["pixel_values_videos"].shape[0] // 2
                    single["pixel_values_videos"] = inputs["pixel_values_videos"][
                        row * per_video : (row + 1) * per_video
                    ]
                else:
                    single["pixel_values_videos"] = inputs["pixel_values_videos"][row : row + 1]
                alone = model(**single).logits[0]
                torch.testing.assert_close(batched[row, real], alone, rtol=0, atol=1e-5)


def generate(model, inputs, **kw):
    kw = {"max_new_tokens": 3, "do_sample": False, "suppress_tokens": SUPPRESSED, **kw}
    return model.generate(**inputs, **kw)


def test_greedy_generate_is_greedy_decoding_by_hand_on_every_backend_and_cache():
    model, inputs = prompt("qwen2_vl", padding="left")
    want = greedy_by_hand(eager_twin("qwen2_vl", model), inputs, steps=3)
    tokens = {}
    for backend in ("sdpa", "eager", "flex"):
        with enable_frame_masks(model, "causal-frame", backend=backend):
            tokens[backend] = generate(model, inputs)
    with enable_frame_masks(model, "causal-frame", backend="sdpa"):
        tokens["no cache"] = generate(model, inputs, use_cache=False)
        tokens["static cache"] = generate(model, inputs, cache_implementation="static")
    assert want.shape == (2, LENGTH + 3)
    for name, out in tokens.items():
        assert torch.equal(out, want), name


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "llava_onevision", "smolvlm"])
def test_greedy_generate_is_greedy_decoding_by_hand_on_every_family(family):
    model, inputs = prompt(family, padding="left")
    want = greedy_by_hand(eager_twin(family, model), inputs, steps=3)
    for backend, extra in (("sdpa", {}), ("eager", {"cache_implementation": "static"})):
        with enable_frame_masks(model, "causal-frame", backend=backend):
            assert torch.equal(generate(model, inputs, **extra), want), backend


def test_a_sliding_window_generates_after_right_padding():
    model, inputs = prompt("qwen2_vl", padding="right", frames=3)
    out = {}
    for backend, cache in (("sdpa", True), ("sdpa", False), ("eager", True)):
        with enable_frame_masks(model, "sliding-window", window_size=0, backend=backend) as handle:
            out[backend, cache] = generate(model, inputs, use_cache=cache)
    assert out["sdpa", True].shape == (2, inputs["input_ids"].shape[1] + 3)
    assert all(torch.equal(v, out["sdpa", True]) for v in out.values())
    # The last step: row 0's padding sits between its prompt and the new tokens.
    ids = handle.frame_ids
    assert ids[0, -3:].tolist() == [PAD, TEXT, TEXT]
    want = prompt_reference(ids, "prompt-sliding-window", q_len=1, window_size=0)
    assert torch.equal(handle.last_mask.to_dense(), want)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "llava_onevision", "smolvlm"])
def test_beams_and_several_sequences_read_each_copy_of_the_prompt(family):
    # generate repeats each prompt (num_beams, num_return_sequences) with its encoded videos;
    # every copy must get its prompt's frames: the first step's logits of each copy are the
    # frame-masked model's last logits of its prompt.
    model, inputs = prompt(family, padding="left")
    ids = read_prompt(model, **inputs).frame_ids
    with torch.no_grad(), enable_frame_masks(model, "causal-frame", backend="sdpa") as handle:
        last = model(**inputs).logits[:, -1]
        for kw in ({"num_beams": 2}, {"num_return_sequences": 2, "do_sample": True}):
            for cache in (True, False):
                out = generate(
                    model, inputs, **kw, use_cache=cache, output_logits=True,
                    return_dict_in_generate=True, max_new_tokens=2,
                )  # fmt: skip
                assert out.sequences.shape[0] == 2 * (2 if "num_return_sequences" in kw else 1)
                torch.testing.assert_close(
                    out.logits[0], last.repeat_interleave(2, 0), rtol=0, atol=1e-5
                )
                assert torch.equal(handle.frame_ids[:, :LENGTH], ids.repeat_interleave(2, 0))


def test_a_static_cache_places_the_queries_at_their_positions():
    from transformers import DynamicCache, StaticCache

    model, inputs = prompt("qwen2_vl", padding="left")
    ids = read_prompt(model, **inputs).frame_ids
    nxt = torch.tensor([[5], [7]])
    logits, masks = {}, {}
    for backend in ("sdpa", "eager"):
        for kind in ("dynamic", "static"):
            config = model.config.get_text_config()
            cache = StaticCache(config=config, max_cache_len=40) if kind == "static" else (
                DynamicCache(config=config)
            )  # fmt: skip
            with torch.no_grad(), enable_frame_masks(model, backend=backend) as handle:
                first = model(**inputs, cache=cache, use_cache=True).logits
                masks[kind, 0] = handle.last_mask.to_dense()
                longer = extend(inputs, nxt)  # the positions as generate gives them
                following = {"input_ids": nxt, "attention_mask": longer["attention_mask"]}
                following["position_ids"] = explicit_positions(model, longer)[..., -1:]
                second = model(**following, cache=cache, use_cache=True).logits
                masks[kind, 1] = handle.last_mask.to_dense()
            logits[backend, kind] = (first, second)
    # The static cache's keys are its 40 slots; the empty ones (after the tokens) are unseen.
    want = prompt_reference(ids, "prompt-causal-frame")
    assert masks["static", 0].shape == (2, LENGTH, 40)
    assert torch.equal(masks["static", 0][..., :LENGTH], want)
    assert not masks["static", 0][..., LENGTH:].any()
    assert torch.equal(masks["static", 1][..., : LENGTH + 1], masks["dynamic", 1])
    assert not masks["static", 1][..., LENGTH + 1 :].any()
    real = ids != PAD  # a left-padded query sees nothing: its logits are no one's business
    for first, second in logits.values():
        torch.testing.assert_close(
            first[real], logits["sdpa", "dynamic"][0][real], rtol=0, atol=1e-5
        )
        torch.testing.assert_close(second, logits["sdpa", "dynamic"][1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", SUPPORTED_FAMILIES)
def test_removing_the_handle_restores_the_stock_model(family):
    model, inputs = prompt(family)
    attn = text_decoder(model).config._attn_implementation
    with torch.no_grad():
        stock = model(**inputs).logits
        handle = enable_frame_masks(model, "causal-frame", backend="eager")
        masked = model(**inputs).logits
        handle.remove()
        again = model(**inputs).logits
    assert not torch.allclose(masked, stock)  # the frame mask changed something
    assert torch.equal(again, stock)
    assert text_decoder(model).config._attn_implementation == attn
    assert "create_masks_for_generate" not in model.__dict__
    enable_frame_masks(model, "causal-frame", backend="sdpa").remove()  # enabling again works


def test_a_tuple_block_size_is_honoured():
    model, inputs = prompt("qwen2_vl")
    with enable_frame_masks(model, backend="flex", block_size=(16, 8)) as handle:
        assert handle.block_size == (16, 8)
    spec = get_mask("prompt-causal-frame", frame_ids=read_prompt(model, **inputs).frame_ids)
    assert prompt_attention_mask(spec, "flex", block_size=(16, 8)).BLOCK_SIZE == (16, 8)


# -- what is refused -----------------------------------------------------------------------------
def test_masks_a_backend_would_misread_are_refused():
    model, inputs = prompt("qwen2_vl")
    n = inputs["input_ids"].shape[1]
    bool_4d = torch.ones(2, 1, n, n, dtype=torch.bool).tril()
    cases = [
        ("eager", bool_4d, "a bool mask would add 0/1 and mask nothing"),
        ("flex", bool_4d, "flex attention needs a BlockMask"),
        ("sdpa", bool_4d.float(), "computes its positions .M-RoPE. from a 2-D mask"),
        ("sdpa", torch.ones(n, n).tril(), rf"not the \[batch, length\] = \[2, {n}\] padding mask"),
        ("sdpa", torch.zeros(2, n).masked_fill(inputs["attention_mask"] == 0, -1e9), "besides 0"),
        ("sdpa", {"full_attention": bool_4d}, "a mapping of prepared per-layer masks"),
    ]
    for backend, mask, match in cases:
        with enable_frame_masks(model, "causal-frame", backend=backend):
            with pytest.raises((ValueError, TypeError), match=match):
                model(**dict(inputs, attention_mask=mask))
    with pytest.raises(ValueError, match="looks like an \\[L, L\\] attention pattern"):
        check_padding_mask(torch.ones(5, 5), batch=1, length=5)
    q = torch.zeros(1, 2, 3, 32)
    with pytest.raises(TypeError, match="needs a BlockMask, got a Tensor"):
        flexframe_flex_attention(None, q, q, q, torch.ones(1, 1, 3, 3, dtype=torch.bool))


def test_missing_positions_inputs_and_direct_decoder_calls_are_refused():
    model, inputs = prompt("qwen2_vl")
    with enable_frame_masks(model, "causal-frame", backend="sdpa"):
        flat = inputs["attention_mask"].cumsum(-1)
        with pytest.raises(
            ValueError, match=r"1-D positions, but qwen2_vl places them with M-RoPE"
        ):
            model(**dict(inputs, position_ids=flat))
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        only_embeds = {k: v for k, v in inputs.items() if k != "input_ids"}
        with pytest.raises(ValueError, match="needs input_ids"):
            model(**only_embeds, inputs_embeds=embeds)
        with pytest.raises(RuntimeError, match="already enabled on this model"):
            enable_frame_masks(model)
        with pytest.raises(RuntimeError, match="already enabled on its Qwen2VLFor"):
            enable_frame_masks(model.model)  # the base model shares the text decoder
        model(**inputs)
        # The text decoder called directly after a model call of the same length: no stale
        # frame ids from that call.
        with pytest.raises(ValueError, match="text decoder of a frame-masked model was called"):
            text_decoder(model)(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"mask": "casual-frame"}, ValueError, "Did you mean 'causal-frame'"),
        ({"mask": "sliding-window"}, ValueError, "needs window_size"),
        ({"mask": "timestamp-causal"}, ValueError, "needs timestamps"),
        ({"window_size": 2}, ValueError, "belong to mask='sliding-window'"),
        ({"within_frame": "causal"}, ValueError, "within_frame='causal' belongs to mask='timest"),
        ({"timestamps": [0, 1]}, ValueError, "timestamps=.0, 1. belongs to mask='timestamp-c"),
        ({"backend": "flash"}, ValueError, "backend must be one of"),
        ({"mask": "timestamp-causal", "timestamps": [0.5]}, TypeError, r"timestamps\[0\] must be"),
        ({"block_size": (16, 8, 4)}, ValueError, "block_size must be an int or a .q, kv. pair"),
        ({"backend": "flex"}, ValueError, "head_dim=8 is refused: torch's CPU flex kernel"),
    ],
)
def test_bad_settings_are_named(kwargs, error, match):
    model, _ = tiny_model("qwen2_vl")  # head dim 8: flex on the CPU is refused at once
    with pytest.raises(error, match=match):
        enable_frame_masks(model, **kwargs)
    with pytest.raises(TypeError, match="no frame layout for Linear"):
        enable_frame_masks(torch.nn.Linear(2, 2))


def test_timestamps_may_be_a_tensor():
    model, inputs = tiny_model("qwen2_vl")
    with enable_frame_masks(
        model, "timestamp-causal", timestamps=torch.tensor([1, 0]), backend="sdpa"
    ) as handle:
        model(**inputs)
    assert handle.params["timestamps"] == [1, 0]
    ids = handle.frame_ids
    want = prompt_reference(ids, "prompt-timestamp-causal", timestamps=[1, 0])
    assert torch.equal(handle.last_mask.to_dense(), want)


# -- the loss on the model -------------------------------------------------------------------------
RECON = {"predictor_dim": 32, "attention_backend": "sdpa", "loss_weight": 1.0}


@pytest.mark.parametrize("targets", ["model", "tower"])
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "llava_onevision", "smolvlm"])
def test_the_loss_sends_gradients_to_the_llm_and_the_predictor(family, targets):
    model, inputs = tiny_model(family, frames=3)
    recon = reconstruction_from_model(model, RECON, targets=targets)
    model.train()
    with enable_frame_masks(model, "causal-frame", backend="sdpa", reconstruction=recon):
        model(**inputs)
        loss = recon(inputs, video=inputs.video if targets == "tower" else None)
        loss.backward()
    llm = [p.grad for p in text_decoder(model).parameters() if p.grad is not None]
    assert llm and sum(g.abs().sum() for g in llm) > 0
    weights = [p for p in recon.module.predictor.parameters() if p.dim() > 1]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


@pytest.mark.parametrize("family", SUPPORTED_FAMILIES)
def test_tower_targets_equal_the_features_the_model_computed(family):
    # The tower's patch layout and pooling, written apart from transformers', give the same
    # features the model put on its video tokens (so either target source is the model's).
    model, inputs = tiny_model(family, batch=2, padding="left", frames=3)
    features = []
    for targets in ("model", "tower"):
        recon = reconstruction_from_model(model, RECON, targets=targets)
        with torch.no_grad():
            model(**inputs)
            features.append(recon(inputs, video=inputs.video, return_outputs=True)[1].features)
        recon.remove_hooks()
    torch.testing.assert_close(features[0], features[1], rtol=0, atol=1e-5)


def test_no_prediction_moves_when_only_a_later_frame_changes_end_to_end():
    model, inputs = tiny_model("qwen2_vl", frames=4)
    recon = reconstruction_from_model(model, RECON, targets="tower").eval()
    video2 = inputs.video.clone()
    video2[:, 6:8] = torch.rand_like(video2[:, 6:8])  # the raw frames of temporal patch 3
    inputs2 = with_pixels("qwen2_vl", inputs, video2)
    outs = []
    with torch.no_grad(), enable_frame_masks(model, "causal-frame", backend="sdpa"):
        for inp, clip in ((inputs, inputs.video), (inputs2, video2)):
            model(**inp)
            outs.append(recon(inp, video=clip, return_outputs=True)[1])
    assert (outs[0].predictions[:, :3] - outs[1].predictions[:, :3]).abs().max().item() == 0.0
    assert not torch.allclose(outs[0].predictions[:, 3], outs[1].predictions[:, 3])
    assert not torch.allclose(outs[0].targets[:, 2], outs[1].targets[:, 2])  # frame 2's target


def test_raw_frames_that_do_not_make_the_models_frames_are_refused():
    model, inputs = tiny_model("qwen2_vl", frames=4)  # 8 raw frames in 4 temporal patches
    for targets in ("model", "tower"):
        recon = reconstruction_from_model(model, RECON, targets=targets)
        model(**inputs)
        many = torch.rand(1, 16, 3, 8, 8)  # 16 raw frames: 8 temporal patches
        with pytest.raises(
            ValueError,
            match=r"video holds 16 raw frames \(8 frames of 2 raw frames\) but the model's hidden "
            r"states hold 4 frames per video",
        ):
            recon(inputs, video=many)
        recon.remove_hooks()
    llava, llava_inputs = tiny_model("llava_onevision", frames=3)
    recon = reconstruction_from_model(llava, RECON)
    llava(**llava_inputs)
    with pytest.raises(
        ValueError, match="video holds 6 raw frames but the model's hidden states hold 3"
    ):
        recon(llava_inputs, video=torch.rand(1, 6, 3, 8, 8))


FAST_SLOW = {**RECON, "use_fast_slow_frames": True, "num_fast": 2, "num_slow": 2,
             "fast_stride": 1, "slow_stride": 3, "merge_strategy": "interleave"}  # fmt: skip


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "smolvlm"])
def test_a_fast_slow_layout_folds_its_timestamps_into_the_prompt_mask(family):
    model, inputs = tiny_model(family, frames=4)
    recon = reconstruction_from_model(model, FAST_SLOW)
    layout = recon.frame_layout(6)  # frames 0, 4, 3, 5 of a 6-frame clip: out of time order
    assert layout.frame_indices.tolist() == [0, 4, 3, 5]
    with enable_frame_masks(
        model, "causal-frame", backend="sdpa", reconstruction=recon, num_frames=6
    ) as handle:
        model(**inputs)
        loss = recon(inputs, num_frames=6)
    assert torch.isfinite(loss)
    assert handle.mask == "prompt-timestamp-causal"
    assert handle.params["timestamps"] == layout.frame_indices.tolist()
    times = layout.frame_indices.tolist()
    dense = handle.last_mask.to_dense()[0]
    ids = handle.frame_ids[0]
    for q in torch.nonzero(ids >= 0).flatten().tolist():
        for k in torch.nonzero(ids >= 0).flatten().tolist():
            assert bool(dense[q, k]) == (times[ids[k]] <= times[ids[q]])
    # Qwen3-VL's timestamps and SmolVLM's "Frame from" text between frames: the written rule
    # (a token of the frame after it), so no video token sees a frame shown later through them.
    want = prompt_reference(handle.frame_ids, "prompt-timestamp-causal", timestamps=times)
    assert torch.equal(handle.last_mask.to_dense(), want)
    with pytest.raises(ValueError, match="needs num_frames"):
        enable_frame_masks(model, reconstruction=recon)


def test_a_video_of_other_frames_than_the_layout_is_refused():
    model, inputs = tiny_model("qwen2_vl", frames=2)
    for config, num_frames in ((RECON, 3), (FAST_SLOW, 8)):  # 3 frames; 4 of 8 (fast/slow)
        recon = reconstruction_from_model(model, config)
        with enable_frame_masks(model, reconstruction=recon, num_frames=num_frames):
            with pytest.raises(ValueError, match="video 0 holds 2 frames but the reconstruction"):
                model(**inputs)
        recon.remove_hooks()


def test_an_out_of_order_layout_without_the_fold_warns():
    model, inputs = tiny_model("qwen2_vl", frames=4)
    recon = reconstruction_from_model(model, FAST_SLOW)
    model(**inputs)  # stock attention: fast frame 3's hidden state saw slow frame 4
    with pytest.warns(UserWarning, match=r"out of time order, but .* ran under stock attention"):
        recon(inputs, num_frames=6)
    with enable_frame_masks(model, "causal-frame", backend="sdpa"):
        model(**inputs)
        with pytest.warns(UserWarning, match="ran under the frame mask 'prompt-causal-frame'"):
            recon(inputs, num_frames=6)
    import warnings

    with enable_frame_masks(model, backend="sdpa", reconstruction=recon, num_frames=6):
        model(**inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            recon(inputs, num_frames=6)


def test_the_example_trains_one_step():
    import runpy
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "qwen2_vl_frame_masks.py"
    result = runpy.run_path(str(path), run_name="example")["main"]()
    assert all(torch.isfinite(torch.tensor(v)) and v > 0 for v in result.values())


# -- on a GPU ----------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("family", ["qwen2_vl", "llava_onevision"])
def test_flex_on_the_gpu_trains_and_agrees_with_sdpa_in_bfloat16(family):
    model, inputs = prompt(family)
    model = model.to("cuda", torch.bfloat16)
    inputs = {k: v.to("cuda") if torch.is_tensor(v) else v for k, v in inputs.items()}
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
    real = read_prompt(model, **inputs).frame_ids.cuda() != PAD
    logits = {}
    for backend in ("sdpa", "flex"):  # "auto" is flex on CUDA
        with enable_frame_masks(model, "causal-frame", backend=backend) as handle:
            logits[backend] = model(**inputs).logits.float()
        assert handle.backend == backend
    torch.testing.assert_close(logits["flex"][real], logits["sdpa"][real], rtol=0, atol=3e-2)
    model.train()
    with enable_frame_masks(model, "sliding-window", window_size=0) as handle:
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
    assert handle.backend == "flex"
    grads = [p.grad for p in text_decoder(model).parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
