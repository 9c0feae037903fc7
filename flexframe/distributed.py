"""Distributed training with PyTorch's own engine: torchrun, FSDP2 or DDP, and DCP checkpoints.

Nothing here is home-made: the process group comes from ``torchrun``'s environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``), sharding from ``torch.distributed.fsdp.fully_shard`` (FSDP2) or
``DistributedDataParallel``, checkpoints from ``torch.distributed.checkpoint``. Without torchrun
every function degrades to the single-process case, so one training loop serves both.

The data rule that makes a run on W processes equal to one process: each step draws one global
batch of ``G`` sample indices (a permutation seeded by (seed, epoch)), and rank ``r`` takes the
contiguous slice ``[r * G / W, (r + 1) * G / W)``. With a mean loss on each rank and gradients
averaged across ranks, the update is the single-process update over the global batch.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import torch
import torch.distributed as dist
from torch import nn

from flexframe._checks import check_choice, check_int, resolve_device
from flexframe._vocab import PARALLEL_MODES

Strategy = Literal["fsdp", "ddp", "none"]
STRATEGIES = ("fsdp", "ddp", "none")


@dataclass(frozen=True)
class DistributedEnv:
    """Where this process stands: rank, world size, local rank and its device.

    Example:
        >>> env = DistributedEnv.single(torch.device("cpu"))
        >>> env.is_main, env.world_size
        (True, 1)
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints, draws progress bars and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @staticmethod
    def single(device: torch.device | str | None = None) -> DistributedEnv:
        """One process on ``device`` (``None`` or ``"auto"``: the current CUDA device if any,
        else the CPU; :func:`flexframe._checks.resolve_device`)."""
        return DistributedEnv(0, 1, 0, resolve_device(device))


def resolve_parallel(mode: str, device: torch.device | str) -> Strategy:
    """The data-parallel strategy ``mode`` means on ``device``: ``"auto"`` is FSDP2 on GPUs and
    DDP on the CPU (where FSDP2 gains nothing and gloo's collectives are slower).

    Example:
        >>> resolve_parallel("auto", "cpu"), resolve_parallel("fsdp", "cpu")
        ('ddp', 'fsdp')
    """
    check_choice("parallel", mode, PARALLEL_MODES)
    if mode == "auto":
        return "fsdp" if torch.device(device).type == "cuda" else "ddp"
    return "fsdp" if mode == "fsdp" else "ddp"


def init_distributed(device: str | None = None) -> DistributedEnv:
    """Join the process group that ``torchrun`` set up, or run as one process without it.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; uses NCCL on GPUs and gloo on the CPU;
    pins each process to GPU ``LOCAL_RANK``.

    Example:
        >>> init_distributed("cpu").world_size  # not under torchrun
        1
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedEnv.single(device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if use_cuda else "gloo",
            rank=rank,
            world_size=world_size,
            device_id=dev if use_cuda else None,
        )
    return DistributedEnv(rank, world_size, local_rank, dev)


def shutdown_distributed(*, synchronize: bool = True) -> None:
    """Leave the process group, if one was joined.

    With ``synchronize`` (the default) every rank first waits at a barrier, so no rank tears its
    communicator down while another still talks to it: gloo aborts the process ("terminate called
    without an active exception") when a rank exits while its peer is still finishing. Pass
    ``synchronize=False`` on an error path, where the other ranks may never reach the barrier.

    Example:
        >>> shutdown_distributed()  # not under torchrun: nothing to leave
    """
    if dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


def exit_process(code: int = 0) -> NoReturn:
    """End a finished torchrun worker with exit status ``code``, skipping interpreter teardown.

    After a run has finished and left its process group, a gloo (CPU) worker can still abort
    while the interpreter tears down ("terminate called without an active exception", exit
    status -6, so torchrun reports the run failed): seen here in about 1 run in 10 of two
    processes on a loaded CPU, after ``main`` had returned on both ranks. This flushes
    ``stdout``, ``stderr`` and the logging handlers, then leaves with ``os._exit``. Call it
    last: ``atexit`` handlers do not run.

    Example:
        >>> callable(exit_process)  # exit_process(0) would end this interpreter
        True
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def under_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (``WORLD_SIZE`` is set).

    Example:
        >>> import os
        >>> under_torchrun() == ("WORLD_SIZE" in os.environ)
        True
    """
    return "WORLD_SIZE" in os.environ


def global_batches(
    num_samples: int, global_batch_size: int, seed: int, start_step: int = 0
) -> Iterator[list[int]]:
    """Sample indices of each step's global batch, forever: epochs of seeded permutations.

    Every sample is drawn once per epoch; a last partial batch of an epoch is completed from the
    next epoch, so every step has exactly ``global_batch_size`` samples. Resuming at
    ``start_step`` yields what an uninterrupted run yields from that step.

    Example:
        >>> batches = global_batches(5, 2, seed=0)
        >>> sorted(next(batches) + next(batches) + next(batches)[:1])
        [0, 1, 2, 3, 4]
    """
    n = check_int("num_samples", num_samples, minimum=1)
    g = check_int("global_batch_size", global_batch_size, minimum=1)
    position = start_step * g  # index into the endless concatenation of epochs

    def epoch_order(epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=gen).tolist()

    epoch, offset = divmod(position, n)
    order = epoch_order(epoch)
    while True:
        batch: list[int] = []
        while len(batch) < g:
            take = order[offset : offset + g - len(batch)]
            batch += take
            offset += len(take)
            if offset == n:
                epoch, offset = epoch + 1, 0
                order = epoch_order(epoch)
        yield batch


def rank_slice(batch: list[int], env: DistributedEnv) -> list[int]:
    """This rank's contiguous share of a global batch (the batch size must divide evenly).

    Example:
        >>> rank_slice([0, 1, 2, 3], DistributedEnv(1, 2, 1, torch.device("cpu")))
        [2, 3]
    """
    if len(batch) % env.world_size:
        raise ValueError(
            f"the global batch of {len(batch)} samples does not split over "
            f"{env.world_size} processes; choose a batch size divisible by the world size"
        )
    share = len(batch) // env.world_size
    return batch[env.rank * share : (env.rank + 1) * share]


def wrap_model(model: nn.Module, env: DistributedEnv, strategy: Strategy = "fsdp") -> nn.Module:
    """Wrap ``model`` for data-parallel training: FSDP2 (``fully_shard`` on each decoder layer,
    then the root), DDP, or nothing. A single process is returned unwrapped.

    Example:
        >>> wrap_model(nn.Linear(2, 2), DistributedEnv.single("cpu"), "fsdp").__class__.__name__
        'Linear'
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if not env.distributed or strategy == "none":
        return model
    if strategy == "ddp":
        device_ids = [env.local_rank] if env.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    from torch.distributed.fsdp import fully_shard

    from flexframe.nn.decoder import DecoderLayer

    for module in model.modules():
        if isinstance(module, DecoderLayer):
            fully_shard(module)
    fully_shard(model)
    return model


def all_reduce_mean(value: float | torch.Tensor, env: DistributedEnv) -> float:
    """The mean of ``value`` over all ranks (the value itself in one process).

    Example:
        >>> all_reduce_mean(3.0, DistributedEnv.single("cpu"))
        3.0
    """
    if not env.distributed:
        return float(value)
    t = torch.as_tensor(value, dtype=torch.float64, device=env.device).clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t) / env.world_size


def _rng_state() -> dict[str, Any]:
    import numpy as np

    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "numpy" in state:  # checkpoints written before numpy's state was saved lack it
        import numpy as np

        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Save model, optimizer, step and RNG with ``torch.distributed.checkpoint`` (every rank
    writes its shards; works the same in one process).

    The RNG states (torch, CUDA, Python's ``random`` and NumPy's global generator) of all ranks
    are saved, one ``trainer_state_rank{r}.pt`` per rank, so that a resumed run continues their
    streams; the number of processes is saved with them, and :func:`load_checkpoint` refuses a
    different one.

    Example:
        >>> model = nn.Linear(2, 2)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> save_checkpoint("ckpt", model, optimizer, step=3, extra={"note": "hi"})
        >>> read_checkpoint_info("ckpt")
        {'step': 3, 'world_size': 1, 'extra': {'note': 'hi'}}
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(path))
    rank = dist.get_rank() if dist.is_initialized() else 0
    meta = {
        "step": step,
        "world_size": _world_size(),
        "rng": _rng_state(),
        "extra": extra or {},
    }
    torch.save(meta, Path(path) / f"trainer_state_rank{rank}.pt")


def read_checkpoint_info(path: str | os.PathLike, world_size: int | None = None) -> dict[str, Any]:
    """``{"step", "world_size", "extra"}`` of a :func:`save_checkpoint` checkpoint, from rank 0's
    file: no model, no process group, nothing restored. Every rank reads the same file, so every
    rank gets the same answer (what :func:`load_checkpoint` checks before any collective).

    Args:
        path: the checkpoint folder.
        world_size: if given, the number of processes that will resume it: another number than
            the checkpoint's raises.

    Raises:
        FileNotFoundError: ``path`` is not a checkpoint folder (the message names it).
        ValueError: the checkpoint was saved by other than ``world_size`` processes.

    Example:
        >>> model = nn.Linear(2, 2)
        >>> save_checkpoint("ckpt_b", model, torch.optim.SGD(model.parameters(), lr=0.1), step=7)
        >>> read_checkpoint_info("ckpt_b")["step"]
        7
    """
    path = Path(path)
    first = path / "trainer_state_rank0.pt"
    if not first.is_file():
        what = "has no trainer_state_rank0.pt" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"checkpoint not found: {str(path)!r} {what}")
    meta = torch.load(first, weights_only=False)
    # Checkpoints written before the world size was saved: one trainer state file per rank.
    saved = int(meta.get("world_size", len(list(path.glob("trainer_state_rank*.pt")))))
    if world_size is not None and saved != world_size:
        # Each rank restores its own RNG file: another process count has no file for some
        # ranks (or leaves some unused), and would not continue the saved random streams.
        raise ValueError(
            f"checkpoint '{path}' was saved by {saved} process(es), but this run has "
            f"{world_size}; resume it with {saved} process(es) (torchrun --nproc_per_node "
            f"{saved}, or without torchrun for 1), or start over in another checkpoint folder"
        )
    return {"step": meta["step"], "world_size": saved, "extra": meta["extra"]}


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Load what :func:`save_checkpoint` saved into ``model`` and ``optimizer`` (in place),
    restore the RNG, and return ``{"step": ..., "extra": ...}``.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: the checkpoint was saved by another number of processes. Every rank raises
            it, before any collective, so no rank is left waiting for the others.

    Example:
        >>> model = nn.Linear(2, 2)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> save_checkpoint("ckpt_c", model, optimizer, step=3)
        >>> saved = model.weight.detach().clone()
        >>> with torch.no_grad():
        ...     _ = model.weight.zero_()
        >>> load_checkpoint("ckpt_c", model, optimizer)["step"], torch.equal(model.weight, saved)
        (3, True)
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    path = Path(path)
    read_checkpoint_info(path, world_size=_world_size())  # every rank raises alike, or none
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.load({"model": model_state, "optim": optim_state}, checkpoint_id=str(path))  # in place
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state)
    rank = dist.get_rank() if dist.is_initialized() else 0
    meta = torch.load(path / f"trainer_state_rank{rank}.pt", weights_only=False)
    _set_rng_state(meta["rng"])
    return {"step": meta["step"], "extra": meta["extra"]}
