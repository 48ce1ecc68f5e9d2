"""Data-parallel evaluation of one job (torchrun): each rank takes images rank, rank + world, ...; the
confusion sums (never per-rank mIoU) and the statistics are reduced onto rank 0, which alone writes."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env() -> Ranks:
    """Join the process group torchrun describes in the environment (a no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shard(length: int, ranks: Ranks) -> List[int]:
    """Every index exactly once over all ranks (no DistributedSampler padding, which repeats images)."""
    return list(range(ranks.rank, length, ranks.world))


def sum_tensor(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    if not ranks.enabled:
        return tensor
    reduced = tensor.clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced


def gather_objects(obj: Any, ranks: Ranks) -> List[Any]:
    if not ranks.enabled:
        return [obj]
    gathered: List[Any] = [None] * ranks.world
    dist.all_gather_object(gathered, obj)
    return gathered
