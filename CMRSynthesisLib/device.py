"""Compute device selection (CUDA when present, CPU otherwise; every path works on CPU) and per-slice seeding."""

from __future__ import annotations

import numpy as np
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


def check_seed(seed: int) -> None:
    """A seed must be a non-negative integer (numpy's SeedSequence takes no negative entropy)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"the random seed must be a non-negative integer; got {seed!r}")


def slice_generator(seed: int, slice_key: int, device: torch.device) -> torch.Generator:
    """The torch random generator of one slice on `device`: seeded from numpy's SeedSequence([seed, slice_key]), so
    a slice's random draws depend on the seed and its key only, never on the other slices processed with it.
    slice_key: any integer naming the slice; the methods use `Volume.slice_keys` (its position along the slice
    normal in 0.01 mm), so a slice read alone from its own file draws what it draws inside its stack."""
    check_seed(seed)
    key = int(slice_key)
    state = np.random.SeedSequence([int(seed), 2 * abs(key) + (key < 0)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state))
