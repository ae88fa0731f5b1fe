"""Multi-process training under ``torchrun``: which process this is, and the few collectives the loop needs."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collective tensors live: NCCL only reduces CUDA tensors

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1

    def any(self, flag: bool) -> bool:
        """True on every process if ``flag`` is true on any."""
        if not self.on:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def from_main(self, t: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``t`` on every process (the others pass a tensor of its shape and dtype), on the CPU."""
        if not self.on:
            return t
        t = t.to(self.device)
        dist.broadcast(t, src=0)
        return t.cpu()

    def barrier(self) -> None:
        if self.on:
            dist.barrier()

    def train_device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")


def init_distributed() -> DistContext:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)  # NCCL collectives and broadcast_object_list use the current device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = f"cuda:{local_rank}" if dist.get_backend() == "nccl" else "cpu"
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device)


def shutdown_distributed(d: DistContext) -> None:
    if d.on and dist.is_initialized():
        dist.destroy_process_group()
