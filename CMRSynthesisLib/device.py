"""Compute device selection: CUDA when present, CPU otherwise; every path works on CPU."""

from __future__ import annotations

import torch

from .errors import InputError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda if available else cpu; an explicit "cuda" without a GPU is a clear error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but no CUDA GPU is available here; use --device cpu or auto")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise InputError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    """A torch random generator on `device`, seeded: same seed, same device, same result."""
    return torch.Generator(device=device).manual_seed(int(seed))
