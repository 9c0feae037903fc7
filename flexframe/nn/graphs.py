"""CUDA graphs of the frame KV cache's attention calls (``FrameKVCache.for_mask(...,
cuda_graphs=True)``).

A cache step's flex call has fixed inputs but for its queries: the keys and values are the
cache's own buffers, the BlockMask is the step's (kept per visibility pattern, its tensors never
written again) and the slot table it reads is written in place before each step. So the call can
be recorded once as a CUDA graph and replayed: the queries are copied into the graph's input,
and its output copied out (a later replay overwrites the graph's own). A replay costs a few
microseconds of host time where the compiled call costs hundreds (dynamo's guards, inductor's
wrapper, FlashAttention-4's launch), which is what bounds a 1-frame step on an H200.

A call is recorded the second time its inputs are seen (the first runs as usual, so that steps
seen once, as the ring fills, record nothing). Each graph holds references to its keys, values
and BlockMask, so none of them is freed or reused while it lives; a BlockMask is known by a
serial number of its own, never by ``id()`` (which a freed mask hands to the next). At most
``max_graphs`` are kept: beyond that, new inputs run as usual (no graph is dropped, so a ring
with more step masks than graphs does not record over and over). Recording and replay run on
the cache's device and a stream of its own, whichever device is current.
"""

from __future__ import annotations

import itertools
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.attention.flex_attention import BlockMask

Run = Callable[[torch.Tensor], torch.Tensor]


class _Graph:
    """One recorded call: ``run(q)`` with ``q`` copied into a buffer of the graph's own."""

    def __init__(self, run: Run, q: torch.Tensor, keep: tuple[Any, ...]) -> None:
        self.keep = keep  # what the graph reads: alive as long as it is
        self.device = q.device
        with torch.cuda.device(q.device):
            self.q = q.clone()
            current = torch.cuda.current_stream(q.device)
            side = torch.cuda.Stream(device=q.device)
            side.wait_stream(current)
            with torch.cuda.stream(side):  # warm up off the capture: compile, autotune, load
                run(self.q)
            current.wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(self.graph, stream=side, capture_error_mode="thread_local"):
                    self.out = run(self.q)
            finally:
                torch.cuda.set_stream(current)  # also where a failed capture left it elsewhere

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        with torch.cuda.device(self.device):
            self.q.copy_(q)
            self.graph.replay()
            return self.out.clone()


class StepGraphs:
    """The recorded attention calls of one frame KV cache.

    Args:
        device: the CUDA device of the cache.
        max_graphs: graphs kept; inputs seen once all are taken run as usual.
        record: how a call is recorded, ``record(run, q, keep)`` returning the replay, a
            callable of ``q`` (default: a CUDA graph; a test passes a stand-in, then any device
            goes).

    Attributes:
        recorded: graphs recorded so far; replays: calls served by a replay.

    Example:
        >>> StepGraphs("cpu")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: cuda_graphs=True needs a CUDA device, got device='cpu'; ...
    """

    def __init__(
        self,
        device: torch.device | str,
        max_graphs: int = 64,
        record: Callable[[Run, torch.Tensor, tuple[Any, ...]], Run] | None = None,
    ) -> None:
        device = torch.device(device)
        if record is None and device.type != "cuda":
            raise ValueError(
                f"cuda_graphs=True needs a CUDA device, got device={str(device)!r}; leave "
                "cuda_graphs off on the CPU"
            )
        self.device, self.max_graphs = device, max_graphs
        self._record: Callable[[Run, torch.Tensor, tuple[Any, ...]], Run] = record or _Graph
        self._graphs: dict[tuple[Any, ...], Run] = {}
        self._seen: set[tuple[Any, ...]] = set()
        self._serials: weakref.WeakKeyDictionary[BlockMask, int] = weakref.WeakKeyDictionary()
        self._next_serial = itertools.count()
        self.recorded = self.replays = 0
        self.disabled_by: str | None = None

    def _serial(self, block_mask: BlockMask) -> int:
        """A number of this BlockMask's own (``id()`` is handed on when a mask is freed)."""
        serial = self._serials.get(block_mask)
        if serial is None:
            serial = self._serials[block_mask] = next(self._next_serial)
        return serial

    def attend(
        self,
        run: Run,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        block_mask: BlockMask,
        settings: tuple[Any, ...] = (),
    ) -> torch.Tensor:
        """``run(q)``, a flex call of ``q`` against ``k`` and ``v`` under ``block_mask``, through
        a recorded graph where one exists for these inputs (``settings``: whatever else the
        call depends on, hashable). Returns a tensor of the caller's own."""
        differentiable = torch.is_grad_enabled() and any(
            t.requires_grad for t in (q, k, v)
        )  # a replay records no autograd graph
        capturing = q.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        if self.disabled_by is not None or differentiable or capturing:
            return run(q)
        key = (
            k.data_ptr(), v.data_ptr(), tuple(k.shape), tuple(v.shape), tuple(q.shape), q.dtype,
            q.device, self._serial(block_mask), torch.is_inference_mode_enabled(), settings,
        )  # fmt: skip
        graph = self._graphs.get(key)
        if graph is not None:
            self.replays += 1
            return graph(q)
        if key not in self._seen or len(self._graphs) >= self.max_graphs:
            self._seen.add(key)  # first sight, or no room: run as usual
            if len(self._seen) > 16 * self.max_graphs:
                self._seen.clear()
            return run(q)
        try:
            graph = self._record(run, q, (k, v, block_mask))
        except Exception as err:  # noqa: BLE001 (a kernel that cannot be recorded: run as usual)
            self.disabled_by = f"{type(err).__name__}: {err}"
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            warnings.warn(
                "flexframe: recording a CUDA graph of the cache step's attention failed "
                f"({self.disabled_by}); this cache runs its steps without graphs from now on",
                RuntimeWarning,
                stacklevel=3,
            )
            return run(q)
        self._graphs[key] = graph
        self.recorded += 1
        return graph(q)

    def __len__(self) -> int:
        return len(self._graphs)
