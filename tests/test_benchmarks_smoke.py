"""The GPU benchmarks, run at tiny sizes on the CPU: their checks, FLOP counts and outputs.

The scripts run as subprocesses (as the lead runs them), all four at once so that their CPU
compiles overlap; the helpers they share are also tested one by one against brute force.
"""

from __future__ import annotations

import contextlib
import doctest
import functools
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from strategies import expected_block_grids, mask_configs, reference_dense

from flexframe import get_mask

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import _common as C  # noqa: E402
import attention  # noqa: E402
import host_tables  # noqa: E402
import mask_build  # noqa: E402

ROW_FIELDS = {
    "n_requested",
    "tokens",
    "patches",
    "mask",
    "variant",
    "pass",
    "status",
    "message",
    "median_ms",
    "tflops",
    "pct_of_cudnn",
    "speedup_vs_dense",
    "rel_err",
    "rel_err_detail",
    "check",
    "visible_pairs",
    "useful_flops",
    "mask_bytes",
    "dense_mask_bytes",
    "kernel_options",
    "gpu_name",
    "head_dim",
    "dtype",
}
STATUSES = {"ok", "FAILED", "error", "unavailable", "skipped", "OOM"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every benchmark run of this file: ``{name: (stdout, JSON document, folder)}``.

    The two runs that compile go to subprocesses (as the lead runs the scripts) and overlap;
    the eager runs, which compile nothing and leave no global state, run in this process
    meanwhile.
    """
    tmp = tmp_path_factory.mktemp("bench")
    cpu = ["--device", "cpu", "--quick", "--warmup-ms", "0", "--rep-ms", "0", "--min-reps", "1"]
    subprocess_runs = {
        # Compiled flex on the CPU: one shape, one mask, so one compile.
        "compiled": [
            "attention.py",
            *cpu,
            "--seq-lens", "512",
            "--patches", "64",
            "--masks", "causal-frame",
            "--variants", "cudnn-token-causal", "fa2-token-causal", "flex-default",
            "flex-flash", "flex-tma", "sdpa-dense-mask",
            "--plot", str(tmp / "compiled.png"),
        ],
        "mask_build": [
            "mask_build.py", "--device", "cpu", "--quick", "--seq-lens", "1000",
            "--patches", "40", "--warmup-ms", "0", "--rep-ms", "0", "--min-reps", "1",
        ],
        "mask_build_generation": [
            "mask_build.py", "--device", "cpu", "--quick", "--seq-lens", "1000",
            "--patches", "40", "--warmup-ms", "0", "--rep-ms", "0", "--min-reps", "1",
            "--builders", "closed-form", "eager", "--window-size", "2",
            "--masks", *C.GENERATION_MASKS,
        ],
    }  # fmt: skip
    in_process_runs = {
        # Eager flex reaches the paths the GPU run takes at long lengths: the sampled-row
        # reference, the comparison with the anchor variant, and padded frames.
        "eager": [
            *cpu,
            "--flex-eager",
            "--seq-lens", "384",
            "--patches", "48",
            "--masks", "sliding-window", "timestamp-causal",
            "--variants", "flex-default", "flex-padded", "sdpa-dense-mask",
            "--ref-max-len", "128",
            "--check-rows", "64",
        ],
        # A bound no variant can meet: the row must be FAILED and untimed.
        "strict": [
            *cpu,
            "--flex-eager",
            "--seq-lens", "256",
            "--patches", "64",
            "--masks", "causal-frame",
            "--variants", "sdpa-dense-mask",
            "--passes", "fwd",
            "--tol", "1e-12",
        ],
        # An exhausted time budget: every row is reported skipped, none is run.
        "budget": [
            *cpu,
            "--seq-lens", "256",
            "--patches", "64",
            "--masks", "causal-frame",
            "--variants", "flex-default", "sdpa-dense-mask",
            "--time-budget-s", "0",
        ],
    }  # fmt: skip
    procs = {}
    for name, (script, *args) in subprocess_runs.items():
        out, log = tmp / f"{name}.json", tmp / f"{name}.log"
        with open(tmp / f"{name}.stdout", "w") as stdout, open(log, "w") as stderr:
            cmd = [sys.executable, str(BENCH / script), *args, "--out", str(out)]
            procs[name] = subprocess.Popen(cmd, cwd=tmp, stdout=stdout, stderr=stderr)
    results = {}
    for name, args in in_process_runs.items():
        out = tmp / f"{name}.json"
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(io.StringIO()):
            attention.main([*args, "--out", str(out)])
        results[name] = (buffer.getvalue(), json.loads(out.read_text()), tmp)
    for name, proc in procs.items():
        code = proc.wait(timeout=300)
        stdout = (tmp / f"{name}.stdout").read_text()
        assert code == 0, f"{name} failed:\n{stdout}\n{(tmp / f'{name}.log').read_text()}"
        results[name] = (stdout, json.loads((tmp / f"{name}.json").read_text()), tmp)
    return results


def brute_force_dense(mask: str, num_frames: int, patches: int) -> torch.Tensor:
    """``[N, N]`` bool straight from each mask's definition (the benchmark's parameters)."""
    frame = torch.arange(num_frames * patches) // patches
    q_frame, kv_frame = frame[:, None], frame[None, :]
    if mask == "causal-frame":
        return kv_frame <= q_frame
    if mask == "sliding-window":  # the benchmark's default window: 8 frames back
        return (kv_frame <= q_frame) & (q_frame - kv_frame <= 8)
    if mask == "timestamp-causal":
        ts = torch.tensor(C.fast_slow_timestamps(num_frames))
        return ts[kv_frame] <= ts[q_frame]
    raise AssertionError(mask)


@functools.cache
def brute_force_pairs(mask: str, num_frames: int, patches: int) -> int:
    return int(brute_force_dense(mask, num_frames, patches).sum())


def _rows(runs, name):
    return runs[name][1]["rows"]


def _row(rows, variant, pass_name, mask=None):
    hits = [
        r
        for r in rows
        if r["variant"] == variant
        and r["pass"] == pass_name
        and (mask is None or r["mask"] == mask)
    ]
    assert len(hits) == 1, f"{len(hits)} rows for {variant} {pass_name} {mask}"
    return hits[0]


# -- the scripts --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["compiled", "eager", "strict", "budget"])
def test_every_attention_row_has_the_fields_and_a_known_status(runs, name):
    rows = _rows(runs, name)
    assert rows
    for row in rows:
        assert ROW_FIELDS <= set(row), ROW_FIELDS - set(row)
        assert row["status"] in STATUSES, row
        assert (row["median_ms"] is not None) == (row["status"] == "ok"), row
        if row["status"] != "ok":
            assert row["message"], row


def test_compiled_flex_matches_the_dense_reference_on_the_cpu(runs):
    rows = _rows(runs, "compiled")
    flex = _row(rows, "flex-causal-frame-default", "fwd")
    assert flex["status"] == "ok"
    assert flex["rel_err"] < 1e-5  # fp32 against the fp32 math backend
    assert flex["check"].startswith("dense fp32")
    assert flex["median_ms"] > 0 and flex["tflops"] > 0
    dense = _row(rows, "sdpa-dense-mask", "fwdbwd", mask="causal-frame")
    assert dense["status"] == "ok"
    assert set(dense["rel_err_detail"]) == {"out", "dq", "dk", "dv"}
    assert max(dense["rel_err_detail"].values()) < 1e-5
    assert dense["speedup_vs_dense"] == 1.0
    assert flex["speedup_vs_dense"] == pytest.approx(
        _row(rows, "sdpa-dense-mask", "fwd", mask="causal-frame")["median_ms"] / flex["median_ms"]
    )


def test_what_cannot_run_on_a_cpu_is_reported_not_crashed(runs):
    rows = _rows(runs, "compiled")
    for variant in ("cudnn-token-causal", "fa2-token-causal"):
        for pass_name in ("fwd", "fwdbwd"):
            row = _row(rows, variant, pass_name)
            assert row["status"] == "unavailable" and "needs CUDA" in row["message"]
    bwd = _row(rows, "flex-causal-frame-default", "fwdbwd")
    assert bwd["status"] == "unavailable" and "backward on CPU" in bwd["message"]
    for variant in ("flex-causal-frame-flash", "flex-causal-frame-tma"):
        assert _row(rows, variant, "fwd")["status"] == "unavailable"
    # No cuDNN row ran, so no percentage can have been made up.
    assert all(r["pct_of_cudnn"] is None for r in rows)


def test_flop_counts_equal_a_brute_force_count_of_visible_pairs(runs):
    rows = _rows(runs, "compiled") + _rows(runs, "eager")
    checked = 0
    for row in rows:
        if row["mask"] == "token-causal":
            n = row["tokens"]
            pairs = n * (n + 1) // 2
        else:
            num_frames = row["n_requested"] // row["patches"]
            pairs = brute_force_pairs(row["mask"], num_frames, row["patches"])
        assert row["visible_pairs"] == pairs, row
        factor = 4 if row["pass"] == "fwd" else 14  # 4 * 3.5 for fwd+bwd
        assert row["useful_flops"] == factor * row["heads"] * row["head_dim"] * pairs
        if row["status"] == "ok":
            assert row["tflops"] == pytest.approx(
                row["useful_flops"] / (row["median_ms"] * 1e-3) / 1e12
            )
        checked += 1
    assert checked > 10


def test_long_lengths_are_checked_exactly_without_the_dense_reference(runs):
    rows = _rows(runs, "eager")
    for mask in ("sliding-window", "timestamp-causal"):
        for variant in (f"flex-{mask}-default", f"flex-{mask}-padded", "sdpa-dense-mask"):
            row = _row(rows, variant, "fwd", mask=mask)
            assert row["status"] == "ok", row
            assert row["check"] == "exact fp32, chunked: out on all tokens"
            assert set(row["rel_err_detail"]) == {"out"}
            assert row["rel_err"] < 1e-5
        dense = _row(rows, "sdpa-dense-mask", "fwdbwd", mask=mask)
        assert dense["status"] == "ok", dense
        assert dense["check"].endswith("dq on 64 rows, dk/dv on 64 key columns")
        assert set(dense["rel_err_detail"]) == {"out", "dq@rows", "dk@cols", "dv@cols"}
        assert dense["rel_err"] < 1e-5


def test_padded_frames_compute_more_tokens_for_the_same_useful_work(runs):
    rows = _rows(runs, "eager")
    padded = _row(rows, "flex-sliding-window-padded", "fwd")
    plain = _row(rows, "flex-sliding-window-default", "fwd")
    num_frames = 384 // 48
    assert plain["tokens"] == plain["tokens_computed"] == num_frames * 48
    assert padded["tokens_computed"] == num_frames * 128  # 48 patches -> one 128-token block
    assert padded["visible_pairs"] == plain["visible_pairs"]
    assert padded["useful_flops"] == plain["useful_flops"]
    # Every kv block of a padded frame holds padding keys, so none can be full.
    assert padded["block_stats"]["full_blocks"] == 0
    summary = runs["eager"][0]
    assert "| p=48 | p=48 padded |" in summary


def test_a_variant_over_the_error_bound_is_failed_and_not_timed(runs):
    (row,) = [r for r in _rows(runs, "strict") if r["variant"] == "sdpa-dense-mask"]
    assert row["status"] == "FAILED"
    assert row["median_ms"] is None and row["tflops"] is None
    assert row["rel_err"] > 1e-12
    assert "tolerance" in row["message"]


def test_an_exhausted_time_budget_skips_every_row_but_still_reports_it(runs):
    rows = _rows(runs, "budget")
    assert len(rows) == 4  # 2 variants x 2 passes
    for row in rows:
        assert row["status"] == "skipped" and "--time-budget-s" in row["message"]
        assert row["visible_pairs"] == brute_force_pairs("causal-frame", 4, 64)


def test_the_table_and_the_recommendation_are_printed(runs):
    stdout, doc, _ = runs["compiled"]
    assert "| N | patches | mask | variant | pass | median ms |" in stdout
    assert "RECOMMENDED_KERNEL_OPTIONS = {" in stdout
    rec = doc["recommended_kernel_options"]
    # Only the default config ran: it is the recommendation, and the fallback.
    (entry,) = rec.values()
    assert entry["causal-frame"]["fwd"]["config"] == "default"
    assert entry["causal-frame"]["fwd"]["kernel_options"] == {}
    assert doc["env"]["torch_version"] == torch.__version__


def test_the_plot_draws_a_panel_per_pass_with_data(runs):
    image = matplotlib.image.imread(runs["compiled"][2] / "compiled.png")[..., :3]
    height, width, _ = image.shape
    assert width > height  # two panels side by side
    saturation = image.max(axis=-1) - image.min(axis=-1)
    for half in (saturation[:, : width // 2], saturation[:, width // 2 :]):
        assert (half > 0.3).sum() > 50  # coloured lines and markers, not just black axes


def test_merging_result_files_keeps_every_row(runs, tmp_path, capsys):
    files = [runs[name][2] / f"{name}.json" for name in ("compiled", "eager")]
    doc = attention.main(["--merge", *map(str, files), "--out", str(tmp_path / "all.json")])
    assert len(doc["rows"]) == len(_rows(runs, "compiled")) + len(_rows(runs, "eager"))
    assert len(doc["env"]) == 2
    assert "| N | patches |" in capsys.readouterr().out


def test_mask_build_builders_agree_with_a_brute_force_block_count(runs):
    rows = _rows(runs, "mask_build")
    assert {r["builder"] for r in rows} == set(mask_build.BUILDERS)
    dense = brute_force_dense("causal-frame", 25, 40)
    partial, full = expected_block_grids(dense, 128, 128)
    for row in rows:
        assert row["status"] == "ok", row
        assert row["tokens"] == 1000
        assert row["median_ms"] > 0
        assert (row["partial_blocks"], row["full_blocks"]) == (int(partial.sum()), int(full.sum()))
        assert row["matches"] == "reference" or row["matches"].startswith("yes (eager, ")
    assert "| closed-form |" in runs["mask_build"][0]


def test_mask_build_gives_torchs_block_masks_for_the_generation_masks(runs):
    rows = _rows(runs, "mask_build_generation")
    assert {r["mask"] for r in rows} == set(C.GENERATION_MASKS)
    for row in rows:
        assert row["status"] == "ok", row
        if row["builder"] == "closed-form":
            assert row["matches"] == "yes (eager, bit-identical)", row


def test_host_tables_checks_each_case_before_timing_it(tmp_path, monkeypatch, capsys):
    out = tmp_path / "host.json"
    doc = host_tables.main(["--quick", "--reps", "2", "--anchor-reps", "1", "--out", str(out)])
    rows = doc["rows"]
    assert [r["case"] for r in rows] == [m for m, _, _ in host_tables.FRAME_CASES] + [
        name for name, _ in host_tables.PROMPT_CASES
    ]
    for row in rows:
        assert row["status"] == "ok", row
        timed = ["CPU build", "host half" if row["case"].startswith("prompt") else "tables"]
        assert all(row[c]["median_ms"] >= row[c]["p10_ms"] > 0 for c in timed), row
    pieces = {r["case"]: r["pieces_a_block"] for r in rows}
    assert pieces["prompt-sliding-window"] <= 2  # a block of text is one piece
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(rows))
    assert "| teacher-forcing |" in capsys.readouterr().out
    # A table that disagrees with the torch route is FAILED and not timed.
    monkeypatch.setattr(host_tables, "same_blocks", lambda *args: False)
    rows = host_tables.main(["--quick", "--reps", "1", "--anchor-reps", "1"])["rows"]
    assert all(r["status"] == "FAILED" and "CPU build" not in r for r in rows)


# -- the helpers ----------------------------------------------------------------------------------
@given(config=mask_configs(), q_block=st.integers(1, 9), kv_block=st.integers(1, 9))
def test_count_visible_pairs_equals_the_dense_count(config, q_block, kv_block):
    name, params = config
    spec = get_mask(name, **params)
    block_mask = spec.block_mask("cpu", (q_block, kv_block))
    expected = int(reference_dense(name, params).sum())
    assert C.count_visible_pairs(block_mask, spec.mask_mod, max_pairs_per_chunk=7) == expected


def test_count_visible_pairs_refuses_a_per_head_block_mask():
    from torch.nn.attention.flex_attention import create_block_mask

    block_mask = create_block_mask(lambda b, h, q, k: k <= q, 1, 2, 8, 8, device="cpu")
    with pytest.raises(ValueError, match="batch and head size 1"):
        C.count_visible_pairs(block_mask, lambda b, h, q, k: k <= q)


def test_useful_flops_counts_four_per_pair_and_three_and_a_half_times_that_for_fwdbwd():
    assert C.useful_flops(1000, 2, 16, 128, "fwd") == 4 * 2 * 16 * 128 * 1000
    assert C.useful_flops(1000, 2, 16, 128, "fwdbwd") == 3.5 * 4 * 2 * 16 * 128 * 1000
    with pytest.raises(ValueError, match="pass_name"):
        C.useful_flops(1, 1, 1, 1, "bwd")


def _sdpa_with_grads(q, k, v, dout, dense):
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = F.scaled_dot_product_attention(*leaves, attn_mask=dense)
    return (out, *torch.autograd.grad(out, leaves, dout))


@pytest.mark.parametrize("with_grads", [False, True])
def test_chunked_reference_equals_full_attention(with_grads):
    spec = get_mask("timestamp-causal", timestamps=[3, 0, 2, 1, 3], num_patches_per_frame=7)
    gen = torch.Generator().manual_seed(3)
    q, k, v, dout = (
        torch.randn(1, 2, spec.q_len, 8, generator=gen, dtype=torch.float64) for _ in range(4)
    )
    dense = reference_dense(spec.name, dict(spec.params))
    expected = _sdpa_with_grads(q, k, v, dout, dense)
    rows, cols = torch.tensor([0, 5, 6, 17, 34]), torch.tensor([0, 1, 13, 20, 34])
    got = attention.chunked_reference(q, k, v, dout, spec.mask_mod, rows, cols, with_grads, chunk=4)
    close = {"rtol": 1e-5, "atol": 1e-6}  # the reference computes in fp32
    torch.testing.assert_close(got[0].double(), expected[0], **close)
    if not with_grads:
        assert got[1:] == (None, None, None)
        return
    torch.testing.assert_close(got[1].double(), expected[1][..., rows, :], **close)
    torch.testing.assert_close(got[2].double(), expected[2][..., cols, :], **close)
    torch.testing.assert_close(got[3].double(), expected[3][..., cols, :], **close)


def test_chunked_reference_refuses_a_row_that_sees_nothing():
    q = torch.randn(1, 1, 4, 2)
    with pytest.raises(RuntimeError, match="sees no key"):
        attention.chunked_reference(
            q, q, q, q, lambda b, h, qi, ki: ki < qi, torch.tensor([0]), torch.tensor([0]), False
        )


@pytest.mark.parametrize("mask", C.ALL_FRAME_MASKS)
def test_padded_frames_give_the_real_tokens_the_unpadded_outputs_and_gradients(mask):
    num_frames, real, padded = 6, 3, 8
    spec = C.frame_spec(mask, num_frames, real, window_size=1)
    padded_spec = C.frame_spec(mask, num_frames, padded, window_size=1)
    padded_spec = padded_spec & attention.key_padding_spec(num_frames, real, padded)
    layout = attention.padded_layout(num_frames, real, padded)
    gen = torch.Generator().manual_seed(1)
    q, k, v, dout = (
        torch.randn(1, 2, spec.q_len, 4, generator=gen, dtype=torch.float64) for _ in range(4)
    )
    fill = [
        torch.randn(1, 2, num_frames * padded, 4, generator=gen, dtype=torch.float64)
        for _ in range(3)
    ]
    padded_inputs = [
        attention.to_padded(t, layout, num_frames * padded, f)
        for t, f in zip((q, k, v), fill, strict=True)
    ]
    padded_dout = attention.to_padded(dout, layout, num_frames * padded, None)
    got = _sdpa_with_grads(*padded_inputs, padded_dout, padded_spec.to_dense())
    params = dict(spec.params)
    expected = _sdpa_with_grads(q, k, v, dout, reference_dense(spec.name, params))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g[..., layout, :], e)


def test_best_kernel_options_must_win_everywhere_the_default_ran():
    def row(config, n, tflops, status="ok"):
        return {
            "variant": f"flex-causal-frame-{config}",
            "mask": "causal-frame",
            "pass": "fwd",
            "n_requested": n,
            "patches": 256,
            "status": status,
            "tflops": tflops,
            "kernel_options": {"cfg": config},
            "gpu_name": "GPU",
            "head_dim": 128,
            "dtype": "bfloat16",
        }

    rows = [
        row("default", 1, 100.0),
        row("default", 2, 100.0),
        row("fast-once", 1, 300.0),  # much faster, but failed at N=2: does not qualify
        row("fast-once", 2, None, status="FAILED"),
        row("steady", 1, 110.0),
        row("steady", 2, 120.0),
        row("padded", 1, 500.0),  # a layout, not kernel options
        row("padded", 2, 500.0),
    ]
    best = attention.recommend(rows)["GPU | head_dim=128 | bfloat16"]["causal-frame"]["fwd"]
    assert best["config"] == "steady"
    assert best["kernel_options"] == {"cfg": "steady"}
    assert best["geomean_speedup_vs_default"] == pytest.approx(math.sqrt(1.1 * 1.2), abs=1e-4)


def test_percent_of_cudnn_and_speedup_vs_dense_use_the_same_length_and_pass():
    def row(variant, n, pass_name, ms, tflops, mask="causal-frame"):
        return {
            "variant": variant,
            "mask": mask,
            "pass": pass_name,
            "n_requested": n,
            "patches": None if mask == "token-causal" else 256,
            "status": "ok",
            "median_ms": ms,
            "tflops": tflops,
            "gpu_name": "GPU",
        }

    rows = [
        row("cudnn-token-causal", 16, "fwd", 1.0, 500.0, mask="token-causal"),
        row("cudnn-token-causal", 16, "fwdbwd", 3.0, 400.0, mask="token-causal"),
        row("cudnn-token-causal", 32, "fwd", 1.0, 600.0, mask="token-causal"),
        row("sdpa-dense-mask", 16, "fwd", 10.0, 50.0),
        row("flex-causal-frame-default", 16, "fwd", 2.0, 450.0),
        row("flex-causal-frame-default", 16, "fwdbwd", 4.0, 360.0),
    ]
    attention.derive(rows)
    assert rows[4]["pct_of_cudnn"] == pytest.approx(90.0)
    assert rows[4]["speedup_vs_dense"] == pytest.approx(5.0)
    assert rows[5]["pct_of_cudnn"] == pytest.approx(90.0)
    assert rows[5]["speedup_vs_dense"] is None  # no dense fwdbwd row to compare with


def test_compare_block_masks_finds_a_moved_block():
    spec = get_mask("causal-frame", num_frames=4, num_patches_per_frame=3)
    a = spec.block_mask("cpu", 4, builder="closed-form")
    b = spec.block_mask("cpu", 4, builder="create_block_mask")
    assert mask_build.compare_block_masks(a, b) is None
    kv_indices = a.kv_indices.clone()
    row = int(torch.nonzero(a.kv_num_blocks[0, 0])[0])
    kv_indices[0, 0, row, 0] += 1
    moved = type(a).from_kv_blocks(
        a.kv_num_blocks,
        kv_indices,
        a.full_kv_num_blocks,
        a.full_kv_indices,
        BLOCK_SIZE=a.BLOCK_SIZE,
        mask_mod=a.mask_mod,
        seq_lengths=a.seq_lengths,
    )
    assert "kv_indices differs" in mask_build.compare_block_masks(moved, b)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variants", "flex-defualt"], "Did you mean 'flex-default'"),
        (["--kernel-options", "x={bad"], "not JSON"),
        (["--kernel-options", "default={}"], "is taken"),
        (["--seq-lens", "0"], "--seq-lens must be >= 1"),
    ],
)
def test_bad_arguments_are_refused_with_the_value(argv, message, capsys):
    with pytest.raises(SystemExit):
        attention.parse_args(["--device", "cpu", *argv])
    assert message in capsys.readouterr().err


def test_kernel_options_unknown_to_this_torch_are_unavailable():
    with pytest.raises(attention.Unavailable, match="NOT_AN_OPTION"):
        attention.check_kernel_options({"fwd_NOT_AN_OPTION": 1})
    attention.check_kernel_options({"fwd_BLOCK_M": 64, "USE_TMA": True})


@pytest.mark.parametrize("module", [C, attention, mask_build], ids=lambda m: m.__name__)
def test_docstring_examples_print_what_they_show(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_error_helpers_keep_the_size_an_oom_asked_for():
    err = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 128.00 GiB. GPU 0 ...")
    assert C.is_oom(err)
    assert C.oom_request(err) == "128.00 GiB"
    assert not C.is_oom(ValueError("shape mismatch"))
