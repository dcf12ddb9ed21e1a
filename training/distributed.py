"""torchrun / DDP support: one process per GPU (or CPU processes with gloo), set up from torchrun's environment."""

from __future__ import annotations

import torch

from CMRSynthesisLib.distributed import Context, barrier, setup, teardown

__all__ = ["Context", "barrier", "setup", "teardown", "wrap"]


def wrap(model: torch.nn.Module, context: Context) -> torch.nn.Module:
    """The model as trained: wrapped in DistributedDataParallel when there are several processes. A Trainer with
    several networks (generator + discriminator) wraps each one on its own, so each optimiser's gradients are
    averaged over the ranks by its network's own backward pass."""
    if context.world_size == 1:
        return model
    ids = [context.device.index] if context.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

