"""Running the training loop under torchrun: process group, rank info and the few collectives
the loop needs (rank 0 alone writes; the others learn the run name and share RNG states)."""

from __future__ import annotations

import os

from workbench.runs.folder import Run
from workbench.workspace import Workspace


def dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


TIMEOUT_ENV = "WORKBENCH_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 600.0  # seconds a rank waits in a collective (rank 0 may be preparing data)


def collective_timeout() -> float:
    """Seconds a rank waits for the others in one collective before the run fails (instead of
    hanging on a node that is gone): ``$WORKBENCH_DIST_TIMEOUT``, default 600."""
    from workbench.errors import WorkbenchError

    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        value = -1.0
    if not value > 0:
        raise WorkbenchError(f"{TIMEOUT_ENV} = {raw!r} is not allowed: give a number of seconds above 0")
    return value


def init_distributed() -> None:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    _, _, world = dist_info()
    if world <= 1:
        return
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                timeout=timedelta(seconds=collective_timeout()))


def is_lost_peer(e: BaseException) -> bool:
    """Whether ``e`` is a collective that failed because another rank is gone or too slow (its
    process died, its node went away, or the collective timed out)."""
    import torch.distributed as dist

    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(s in text for s in (
        "Connection closed by peer", "Connection reset by peer", "Timed out", "timed out", "gloo", "NCCL",
        "Broken pipe"))


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()


def broadcast_run(ws: Workspace, run: Run | None, world: int) -> Run:
    if world <= 1:
        return run
    import torch.distributed as dist

    names = [run.name if run is not None else None]
    dist.broadcast_object_list(names, src=0)
    return Run(names[0], ws.run_path(names[0]))


def broadcast_object(obj, world: int):
    """Rank 0's ``obj`` on every rank (choices measured once must agree across ranks)."""
    if world <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(x: float, device) -> float:
    import torch
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def any_rank(flags, device) -> tuple[bool, ...]:
    """Each flag, true if it is true on any rank (one collective for all of them)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def gather_rng(rng, world: int) -> list:
    if world <= 1:
        return [rng.bit_generator.state]
    import torch.distributed as dist

    states = [None] * world
    dist.all_gather_object(states, rng.bit_generator.state)
    return states
