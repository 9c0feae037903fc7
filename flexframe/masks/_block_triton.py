"""The Triton kernel behind :mod:`flexframe.masks.block_kernel` (imported on first use: Triton
is slow to import and absent on many CPU machines). One program writes one row of every BlockMask
tensor; the tables and the output layout are described in ``block_kernel``."""

from typing import Any

try:
    import triton
    import triton.language as tl
except ImportError:  # no Triton (a CPU machine): the torch route builds every BlockMask
    triton = None

block_rows: Any = None
if triton is not None:

    @triton.jit
    def write_row(flags, c, valid, num_at, idx_at):
        # torch's order: the set blocks ascending, then the others ascending
        set_so_far = tl.cumsum(flags, axis=0)
        num = tl.sum(flags, axis=0)
        tl.store(num_at, num)
        slot = tl.where(flags > 0, set_so_far - 1, num + c - set_so_far)
        tl.store(idx_at + slot, c, mask=valid)

    @triton.jit(do_not_specialize=["nq", "nkv", "P"])
    def block_rows(
        rows_ptr,  # [B, NQ, P, K, 4] int64
        cols_ptr,  # [B, NKV, 3] int64
        out_ptr,  # int32: the eight BlockMask tensors, laid out as _layout says
        nq,
        nkv,
        P,
        K: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        r = tl.program_id(0)  # rows 0..nq-1: the kv side's q blocks; then the q side's kv blocks
        b = tl.program_id(1)
        nb = tl.num_programs(1)
        kv_side = r < nq
        row = tl.where(kv_side, r, r - nq)
        c = tl.arange(0, BLOCK)  # the row's columns: kv blocks on the kv side, q blocks else
        ncols = tl.where(kv_side, nkv, nq)
        nrows = tl.where(kv_side, nq, nkv)
        valid = c < ncols
        q = tl.where(kv_side, row, c)  # the q block and the kv block of each column
        j = tl.where(kv_side, c, row)
        qv = valid & (q < nq)
        jv = valid & (j < nkv)
        col = cols_ptr + (b * nkv + j) * 3
        kmin = tl.load(col, mask=jv, other=0)
        kmax = tl.load(col + 1, mask=jv, other=0)
        kmax_full = tl.load(col + 2, mask=jv, other=0)
        any_visible = tl.zeros([BLOCK], dtype=tl.int32)
        full = valid.to(tl.int32)
        for p in range(P):  # a loop, not unrolled: a block may hold many pieces
            piece_any = tl.zeros([BLOCK], dtype=tl.int32)
            piece_full = tl.zeros([BLOCK], dtype=tl.int32)
            for m in tl.static_range(K):
                at = rows_ptr + (((b * nq + q) * P + p) * K + m) * 4
                any_lo = tl.load(at, mask=qv, other=0)
                any_hi = tl.load(at + 1, mask=qv, other=0)
                full_lo = tl.load(at + 2, mask=qv, other=0)
                full_hi = tl.load(at + 3, mask=qv, other=0)
                meets = ((any_lo <= kmax) & (any_hi >= kmin)).to(tl.int32)
                holds = ((full_lo <= kmin) & (full_hi >= kmax_full)).to(tl.int32)
                piece_any = tl.maximum(piece_any, meets)
                piece_full = tl.maximum(piece_full, holds)
            any_visible = tl.maximum(any_visible, piece_any)
            full = tl.minimum(full, piece_full)
        partial = any_visible * (1 - full) * valid.to(tl.int32)
        # Layout: [kv_num | kv_idx | full_kv_num | full_kv_idx | q_num | q_idx | ...], batch-major
        # inside each part; a part's offset is a function of (B, nq, nkv) alone.
        num_size = nb * nrows
        idx_size = nb * nq * nkv
        base = tl.where(kv_side, 0, 2 * nb * nq + 2 * idx_size)
        at_row = b * nrows + row
        write_row(partial, c, valid, out_ptr + base + at_row, out_ptr + base + num_size
                  + at_row * ncols)  # fmt: skip
        base = base + num_size + idx_size
        write_row(full, c, valid, out_ptr + base + at_row, out_ptr + base + num_size
                  + at_row * ncols)  # fmt: skip
