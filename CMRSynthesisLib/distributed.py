"""Processes started by torchrun: this process's rank, the number of processes and its device, from torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK), with a process group for collective calls when there are several.
One engine for training (DDP) and for running a method over many studies (`batch`)."""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from .device import resolve_device


@dataclasses.dataclass(frozen=True)
class Context:
    """Where this process works: its rank among `world_size` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Context:
    """Join the process group when launched by torchrun with WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU; each process
    on the GPU of its LOCAL_RANK); a single process otherwise, on `device` ("auto", "cpu", "cuda")."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context(0, 1, resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Context(dist.get_rank(), world_size, torch.device(f"cuda:{local_rank}" if use_cuda else "cpu"))


def barrier(context: Context) -> None:
    """Wait for every process (no-op for one)."""
    if context.world_size > 1:
        dist.barrier()


def teardown(context: Context) -> None:
    """Leave the process group (no-op for one process)."""
    if context.world_size > 1:
        dist.destroy_process_group()
