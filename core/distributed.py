"""Process groups and data sharding for data-parallel training under ``torchrun``.

Follows PyTorch's DDP recipe (``torch.distributed`` + ``DistributedDataParallel``): the
launcher (``torchrun``) sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``; we join its process
group with gloo on CPU and NCCL on GPU. All communication goes through ``torch.distributed``;
nothing here sends a byte by itself.

The batch sampler shards like ``torch.utils.data.DistributedSampler`` (one permutation per
epoch from ``seed + epoch``, the same on every rank) but cuts each *global* batch into
contiguous per-rank slices and can start in the middle of an epoch, which is what an exact
resume needs: ``N`` processes see, step by step, the same global batches as one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 when not distributed).
        world_size: number of processes (1 when not distributed).
        local_rank: rank on this host, used to pick the GPU.
        device: the device this process trains on.
        initialized_here: whether :func:`setup` created the process group (and so must end it).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group if one is described by the environment.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.

    Returns:
        The rank, world size and device of this process.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but CUDA is not available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    created = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        created = True
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world_size, local_rank, dev, created)


def teardown(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Average a tensor over ranks (identity in a single process)."""
    if info.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= info.world_size
    return values


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (identity in a single process)."""
    if info.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gather_objects(obj: object, info: DistInfo) -> list[object]:
    """Collect one picklable object per rank on every rank (``[obj]`` in one process)."""
    if not info.distributed:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


class ShardedBatchSampler:
    """Yield this rank's micro-batches of indices, epoch after epoch, from any step on.

    Step ``s`` (0-based, counted in optimiser steps) uses global batch ``s % steps_per_epoch``
    of epoch ``s // steps_per_epoch``: indices ``perm[i*B:(i+1)*B]`` of that epoch's
    permutation. Rank ``r`` takes the slice ``[r*b, (r+1)*b)`` with ``b = B / world_size``
    and cuts it into ``accum`` micro-batches. Incomplete last batches are dropped.

    Args:
        num_samples: dataset length.
        global_batch: samples per optimiser step over all ranks.
        accum: gradient-accumulation micro-steps per optimiser step.
        info: rank and world size.
        seed: permutation seed (epoch ``e`` uses ``seed + e``).
        shuffle: permute each epoch; otherwise keep dataset order.
        start_step: first optimiser step to produce (for resume).
    """

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        accum: int,
        info: DistInfo,
        seed: int,
        shuffle: bool = True,
        start_step: int = 0,
    ) -> None:
        per_rank, rest = divmod(global_batch, info.world_size)
        if rest:
            raise ValueError(
                f"batch_size={global_batch} must be divisible by world size {info.world_size}"
            )
        micro, rest = divmod(per_rank, accum)
        if rest or micro == 0:
            raise ValueError(
                f"per-rank batch {per_rank} must be a positive multiple of grad_accum={accum}"
            )
        if num_samples < global_batch:
            raise ValueError(
                f"batch_size={global_batch} is larger than the dataset ({num_samples} samples)"
            )
        self.num_samples, self.global_batch, self.accum = num_samples, global_batch, accum
        self.per_rank, self.micro = per_rank, micro
        self.info, self.seed, self.shuffle, self.start_step = info, seed, shuffle, start_step

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index inside the epoch) of optimiser step ``step``."""
        return divmod(step, self.steps_per_epoch)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        # A private generator: the global RNG (dropout etc.) is never touched by the data order.
        g = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_samples, generator=g)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        epoch, i = self.position(step)
        while True:
            perm = self._permutation(epoch)
            while i < self.steps_per_epoch:
                lo = i * self.global_batch + self.info.rank * self.per_rank
                mine = perm[lo : lo + self.per_rank]
                for k in range(self.accum):
                    yield mine[k * self.micro : (k + 1) * self.micro].tolist()
                i += 1
            epoch, i = epoch + 1, 0
