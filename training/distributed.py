"""torchrun / DDP support: one process per GPU (or CPU processes with gloo), set up from torchrun's environment."""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from CMRSynthesisLib.device import resolve_device


@dataclasses.dataclass(frozen=True)
class Context:
    """Where this process trains: its rank among `world_size` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Context:
    """Initialise DDP when launched by torchrun (WORLD_SIZE > 1); a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context(0, 1, resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Context(dist.get_rank(), world_size, torch.device(f"cuda:{local_rank}" if use_cuda else "cpu"))


def wrap(model: torch.nn.Module, context: Context) -> torch.nn.Module:
    """The model as trained: wrapped in DistributedDataParallel when there are several processes."""
    if context.world_size == 1:
        return model
    ids = [context.device.index] if context.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def barrier(context: Context) -> None:
    if context.world_size > 1:
        dist.barrier()


def teardown(context: Context) -> None:
    if context.world_size > 1:
        dist.destroy_process_group()
