"""Data-parallel training with torch.distributed: the process layout, the process group, and the
few collectives the training loop needs.

The layout is read from the environment, never from submitit (the runtime does not import it):
torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``, else SLURM's
task layout (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``; the master is the first host of
``SLURM_JOB_NODELIST`` and the port is derived from ``SLURM_JOB_ID``, so every task of a job agrees
on both without talking). A world of one process joins no process group at all, so single-process
training runs exactly the code it ran before data parallelism existed.

Every rank computes on the same weights: gradients are averaged across ranks (weighted by each
rank's rows of the batch) before the optimizer step, which then runs identically everywhere
(``assert_same_on_all_ranks`` checks that cheaply).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

# Ports derived from SLURM job ids fall in [PORT_BASE, PORT_BASE + PORT_RANGE), the range
# submitit's own TorchDistributedEnvironment draws from.
PORT_BASE, PORT_RANGE = 20000, 40000
# Gradients are all-reduced in flat buckets of at most this many entries (128 MiB in fp32): one
# collective per bucket rather than one per tensor, with a bounded extra buffer.
BUCKET_NUMEL = 1 << 25
# How long a collective waits for a missing rank before failing. Rank 0 alone writes checkpoints
# while the others wait in the next collective, so this must cover writing the largest checkpoint
# (NCCL's own default, 10 min, may not); a crashed rank takes this long to bring the others down
# unless the launcher kills them first (srun --kill-on-bad-exit).
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Layout:
    """Where this process sits among the processes of one data-parallel job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # rank on this node: picks the GPU
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files (metrics, checkpoints, the model, results)."""
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's rows of a global batch: contiguous, sizes differing by at most one."""
        return slice(batch_size * self.rank // self.world_size,
                     batch_size * (self.rank + 1) // self.world_size)


SINGLE_PROCESS = Layout()


def first_host(nodelist: str) -> str:
    """The first host of a SLURM hostlist, zero padding kept: ``gpu[07-09,12],cpu3`` → ``gpu07``,
    ``rack[1-2]-n[3-4]`` → ``rack1-n3``. Only the master's name is needed, so nothing is expanded
    past it (and no ``scontrol`` call is made)."""
    match = re.match(r"[^,\[]*(?:\[[^\]]*\][^,\[]*)*", nodelist.strip())
    first = match.group(0) if match else ""
    host = re.sub(r"\[([^\]]*)\]", lambda group: re.split(r"[,-]", group.group(1))[0], first)
    if not host:
        raise ValueError(f"cannot read a host from SLURM_JOB_NODELIST={nodelist!r}")
    return host


def port_for_job(job_id: int) -> int:
    """A port every task of SLURM job ``job_id`` derives alike; jobs sharing a node differ
    (``SLURM_JOB_ID`` is unique per array task too)."""
    return PORT_BASE + job_id % PORT_RANGE


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except (KeyError, ValueError) as error:
        raise ValueError(f"distributed layout: {name}={env.get(name)!r} is not an integer") \
            from error


def detect_layout(env: Mapping[str, str]) -> Layout:
    """The layout described by ``env`` (pass ``os.environ``): torchrun's variables first (torchrun
    inside a SLURM allocation sets both, and its are the ones meant), then SLURM's, else one
    process. ``MASTER_ADDR`` / ``MASTER_PORT``, when set, override the SLURM-derived ones.

    Note: ``SLURM_NTASKS`` is the task count of the step (srun) or, in a batch script or an
    ``salloc`` shell, of the allocation; run multi-task allocations' jobs through ``srun``.
    """
    if "WORLD_SIZE" in env:
        rank, world_size = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local_rank = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
    elif "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
        rank, world_size = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
        local_rank = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
    else:
        return SINGLE_PROCESS
    if not 0 <= rank < world_size:
        raise ValueError(f"distributed layout: rank {rank} outside a world of {world_size}")
    if world_size == 1:
        return SINGLE_PROCESS
    if "MASTER_ADDR" in env:
        master_addr = env["MASTER_ADDR"]
    elif "SLURM_JOB_NODELIST" in env:
        master_addr = first_host(env["SLURM_JOB_NODELIST"])
    else:
        raise ValueError("distributed layout: neither MASTER_ADDR nor SLURM_JOB_NODELIST is set")
    if "MASTER_PORT" in env:
        master_port = _int(env, "MASTER_PORT")
    elif "SLURM_JOB_ID" in env:
        master_port = port_for_job(_int(env, "SLURM_JOB_ID"))
    else:
        raise ValueError("distributed layout: neither MASTER_PORT nor SLURM_JOB_ID is set")
    return Layout(rank=rank, world_size=world_size, local_rank=local_rank,
                  master_addr=master_addr, master_port=master_port)


def local_cuda_device(local_rank: int) -> torch.device:
    """This rank's GPU: ``cuda:{local_rank}`` when the task sees all of the node's GPUs, or its
    only visible one when SLURM binds one GPU per task (``CUDA_VISIBLE_DEVICES`` of one)."""
    return torch.device("cuda", local_rank % torch.cuda.device_count())


@contextlib.contextmanager
def process_group(layout: Layout) -> Iterator[None]:
    """Join the process group of ``layout`` for the duration of the block; a one-process layout
    joins nothing. Collectives on CUDA tensors go through NCCL, on CPU tensors through gloo, so
    the same group serves a ``device: cpu`` run on a GPU node."""
    if not layout.distributed:
        yield
        return
    backend = "gloo"
    if torch.cuda.is_available():
        backend = "cpu:gloo,cuda:nccl"
        # NCCL (and any bare "cuda" tensor) uses the current device; make it this rank's GPU.
        torch.cuda.set_device(local_cuda_device(layout.local_rank))
    dist.init_process_group(
        backend, init_method=f"tcp://{layout.master_addr}:{layout.master_port}",
        rank=layout.rank, world_size=layout.world_size, timeout=COLLECTIVE_TIMEOUT,
    )
    try:
        yield
        # Leave together: a rank that tore its end of the group down while another was still
        # working in the block or leaving could abort its process (gloo, seen once in CI), and
        # under srun --kill-on-bad-exit that kills the others too. Not after an error: a peer
        # may be gone, and waiting for it would hang until the collective timeout.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _buckets(tensors: list[Tensor], max_numel: int) -> Iterator[list[Tensor]]:
    bucket: list[Tensor] = []
    numel = 0
    for tensor in tensors:
        if bucket and numel + tensor.numel() > max_numel:
            yield bucket
            bucket, numel = [], 0
        bucket.append(tensor)
        numel += tensor.numel()
    if bucket:
        yield bucket


@torch.no_grad()
def sum_across_ranks_(tensors: Iterable[Tensor], scale: float = 1.0) -> None:
    """Replace every tensor by the sum over ranks of ``scale · tensor``, in place (each rank
    passes its own ``scale``: its share of the batch turns a sum into a weighted mean). The
    tensors must share a device and dtype, and every rank must pass the same shapes in order."""
    for bucket in _buckets(list(tensors), BUCKET_NUMEL):
        flat = torch.cat([tensor.reshape(-1) for tensor in bucket]).mul_(scale)
        dist.all_reduce(flat)
        for tensor, part in zip(bucket, flat.split([t.numel() for t in bucket]), strict=True):
            tensor.copy_(part.view_as(tensor))


@torch.no_grad()
def assert_same_on_all_ranks(tensors: Iterable[Tensor], what: str = "weights") -> None:
    """Raise if ``tensors`` differ between ranks. Cheap: compares each tensor's float64 sum and
    sum of magnitudes (one small all-reduce), which identical data reproduces bit for bit."""
    sums = torch.stack([value for tensor in tensors
                        for value in (tensor.double().sum(), tensor.double().abs().sum())])
    extremes = torch.cat([sums, -sums])
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    highest, lowest = extremes.chunk(2)
    if not torch.equal(highest, -lowest):
        raise RuntimeError(f"data-parallel ranks hold different {what} (rank {dist.get_rank()})")
