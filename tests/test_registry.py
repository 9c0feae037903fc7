"""The registry's contract: names, parameters, errors, user masks and the BlockMask cache."""

from __future__ import annotations

import pytest
import torch
from strategies import expand_block_mask
from torch.nn.attention.flex_attention import create_mask

import flexframe
from flexframe import MaskSpec, get_mask, list_masks, register_mask
from flexframe.masks.registry import REGISTRY


@pytest.mark.parametrize("typo", ["causal_frame", "casual-frame", "Causal-Frame", "causalframe"])
def test_unknown_mask_name_suggests_the_close_match(typo):
    with pytest.raises(KeyError, match="Did you mean 'causal-frame'"):
        get_mask(typo, num_frames=2, num_patches_per_frame=2)


def test_unknown_mask_name_lists_the_registered_masks():
    with pytest.raises(KeyError, match="Registered masks: .*token-causal"):
        get_mask("nothing-like-it")


def test_parameter_typo_names_the_parameter_its_value_and_the_fix():
    with pytest.raises(TypeError, match=r"num_patch_per_frame=4.*Did you mean 'num_patches_per_fr"):
        get_mask("causal-frame", num_frames=2, num_patch_per_frame=4)


def test_missing_parameter_is_named():
    with pytest.raises(TypeError, match="missing the parameter.*num_patches_per_frame"):
        get_mask("causal-frame", num_frames=2)


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("causal-frame", {"num_frames": 0, "num_patches_per_frame": 2}, "num_frames must be >= 1, got 0"),
        ("causal-frame", {"num_frames": 2, "num_patches_per_frame": -3}, "num_patches_per_frame must be >= 1, got -3"),
        ("sliding-window", {"num_frames": 2, "num_patches_per_frame": 2, "window_size": -1}, "window_size must be >= 0, got -1"),
        ("fast-slow", {"num_fast_frames": 0, "num_slow_frames": 2, "num_patches_per_frame": 2}, "num_fast_frames must be >= 1, got 0"),
        ("token-causal", {"seq_len": 0}, "seq_len must be >= 1, got 0"),
        ("full", {"seq_len": -5}, "seq_len must be >= 1, got -5"),
        ("packed-causal-frame", {"frames_per_video": [2, 0], "num_patches_per_frame": 2}, r"frames_per_video\[1\] must be >= 1, got 0"),
        ("packed-causal-frame", {"frames_per_video": [], "num_patches_per_frame": 2}, "frames_per_video must not be empty"),
        ("timestamp-causal", {"timestamps": [], "num_patches_per_frame": 2}, "timestamps must not be empty"),
        ("timestamp-causal", {"timestamps": [0, 1, 2], "num_patches_per_frame": 2, "num_frames": 4}, r"num_frames=4 but len\(timestamps\)=3"),
        ("timestamp-causal", {"timestamps": [0, 1], "num_patches_per_frame": 2, "within_frame": "casual"}, "within_frame must be one of 'full', 'causal', got 'casual'. Did you mean 'causal'"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_with_the_parameter_and_value(name, params, match):
    with pytest.raises(ValueError, match=match):
        get_mask(name, **params)


@pytest.mark.parametrize("value", [2.5, True, "3", None])
def test_non_integer_sizes_are_refused(value):
    with pytest.raises(
        TypeError, match=f"num_frames must be an int, got {value!r}".replace("(", r"\(")
    ):
        get_mask("causal-frame", num_frames=value, num_patches_per_frame=2)


def test_timestamps_as_float_tensor_are_refused():
    with pytest.raises(TypeError, match="timestamps must be a 1-D integer tensor"):
        get_mask("timestamp-causal", timestamps=torch.tensor([0.0, 1.0]), num_patches_per_frame=1)


def test_timestamps_as_integer_tensor_are_accepted():
    spec = get_mask("timestamp-causal", timestamps=torch.tensor([1, 0]), num_patches_per_frame=1)
    assert spec.to_dense().int().tolist() == [[1, 1], [0, 1]]


def _every_other_token(seq_len: int) -> MaskSpec:
    """Queries see keys of the same parity only (a test mask)."""
    return MaskSpec(
        name="test-parity",
        params={"seq_len": seq_len},
        q_len=seq_len,
        kv_len=seq_len,
        mod_factory=lambda device: lambda b, h, q, kv: (q % 2) == (kv % 2),
    )


def test_user_masks_are_served_like_built_in_ones():
    register_mask("test-parity")(_every_other_token)
    try:
        assert "test-parity" in list_masks()
        spec = get_mask("test-parity", seq_len=4)
        assert spec.to_dense().int().tolist() == [
            [1, 0, 1, 0],
            [0, 1, 0, 1],
            [1, 0, 1, 0],
            [0, 1, 0, 1],
        ]
        assert (
            REGISTRY.entry("test-parity").description
            == "Queries see keys of the same parity only (a test mask)."
        )
        # No closed form: the generic builder serves it, and asking for the closed form is an error.
        bm = spec.block_mask("cpu", 2)
        assert bm.to_dense()[0, 0].tolist() == [[1, 1], [1, 1]]
        with pytest.raises(ValueError, match="no closed-form builder"):
            spec.block_mask("cpu", 2, builder="closed-form")
    finally:
        REGISTRY.unregister("test-parity")
    assert "test-parity" not in list_masks()


def test_registering_a_name_twice_needs_overwrite():
    register_mask("test-twice")(_every_other_token)
    try:
        with pytest.raises(ValueError, match="already registered.*overwrite=True"):
            register_mask("test-twice")(_every_other_token)
        register_mask("test-twice", overwrite=True)(_every_other_token)
    finally:
        REGISTRY.unregister("test-twice")


def _shifted_factory(shift: int):
    def factory(seq_len: int) -> MaskSpec:
        return MaskSpec("test-shifted", {"seq_len": seq_len}, seq_len, seq_len,
                        mod_factory=lambda device: lambda b, h, q, kv: kv <= q - shift)  # fmt: skip

    return factory


def test_a_re_registered_mask_is_never_served_from_an_old_cache():
    # Same name, same parameters, same factory code, another closure: every cache must follow
    # the new registration, alone or combined with another mask, BlockMask and sdpa dense mask.
    n = 6
    register_mask("test-shifted")(_shifted_factory(0))
    try:
        full = get_mask("full", seq_len=n)
        before = get_mask("test-shifted", seq_len=n)
        old = (before.block_mask("cpu", 2), (before & full).block_mask("cpu", 2),
               before.dense("cpu"))  # fmt: skip
        assert bool(old[2][3, 3])  # the diagonal is visible with shift 0
        register_mask("test-shifted", overwrite=True)(_shifted_factory(1))
        after = get_mask("test-shifted", seq_len=n)
        want = torch.ones(n, n, dtype=torch.bool).tril(-1)
        assert torch.equal(after.to_dense(), want)
        for got in (after.block_mask("cpu", 2), (after & full).block_mask("cpu", 2)):
            assert got is not old[0] and got is not old[1]
            # What a kernel computes from the cached BlockMask: its blocks and its mask_mod.
            inside = create_mask(got.mask_mod, 1, 1, n, n, "cpu")[0, 0].bool()
            assert torch.equal(expand_block_mask(got, inside), want)
        assert torch.equal(after.dense("cpu"), want)
    finally:
        REGISTRY.unregister("test-shifted")


def test_specs_built_by_hand_share_no_cached_mask():
    def spec(rule):
        return MaskSpec("test-by-hand", {"seq_len": 4}, 4, 4, mod_factory=lambda d: rule)

    lower = spec(lambda b, h, q, kv: kv <= q)
    upper = spec(lambda b, h, q, kv: kv >= q)
    assert lower.cache_key != upper.cache_key and lower.cache_key == lower.cache_key
    assert torch.equal(upper.block_mask("cpu", 1).to_dense()[0, 0].bool(),
                       torch.ones(4, 4, dtype=torch.bool).triu())  # fmt: skip
    assert torch.equal(lower.block_mask("cpu", 1).to_dense()[0, 0].bool(),
                       torch.ones(4, 4, dtype=torch.bool).tril())  # fmt: skip


def test_factories_with_var_keyword_parameters_are_refused():
    def loose(**kwargs):
        raise AssertionError("never called")

    with pytest.raises(TypeError, match="named parameters"):
        register_mask("test-loose")(loose)


def test_block_masks_are_built_once_per_key():
    flexframe.clear_block_mask_cache()
    spec = get_mask("causal-frame", num_frames=4, num_patches_per_frame=3)
    first = spec.block_mask("cpu", 4)
    # A new spec with the same name and parameters (a new training step) hits the cache.
    again = get_mask("causal-frame", num_frames=4, num_patches_per_frame=3).block_mask("cpu", 4)
    assert again is first
    assert spec.block_mask("cpu", 8) is not first  # another block size is another key
    info = flexframe.block_mask_cache_info()
    assert info["hits"] >= 1 and info["size"] == 2


def test_block_mask_cache_is_bounded():
    flexframe.clear_block_mask_cache()
    flexframe.set_block_mask_cache_size(2)
    try:
        specs = [get_mask("token-causal", seq_len=n) for n in (4, 5, 6)]
        first = specs[0].block_mask("cpu", 2)
        for spec in specs[1:]:
            spec.block_mask("cpu", 2)
        assert flexframe.block_mask_cache_info()["size"] == 2
        assert specs[0].block_mask("cpu", 2) is not first  # evicted, rebuilt
    finally:
        flexframe.set_block_mask_cache_size(64)


def test_mask_spec_params_are_read_only():
    spec = get_mask("token-causal", seq_len=3)
    with pytest.raises(TypeError):
        spec.params["seq_len"] = 4  # type: ignore[index]


def test_bad_block_size_and_builder_are_named():
    spec = get_mask("token-causal", seq_len=3)
    with pytest.raises(ValueError, match="block_size must be >= 1, got 0"):
        spec.block_mask("cpu", 0)
    with pytest.raises(ValueError, match="builder must be .* got 'fast'"):
        spec.block_mask("cpu", 2, builder="fast")


def test_list_masks_is_sorted_as_strings():
    for name in ("test-m2", "test-m10"):
        register_mask(name)(_shifted_factory(0))
    try:
        assert list_masks("test-m*") == ["test-m10", "test-m2"] == sorted(list_masks("test-m*"))
    finally:
        for name in ("test-m2", "test-m10"):
            REGISTRY.unregister(name)
