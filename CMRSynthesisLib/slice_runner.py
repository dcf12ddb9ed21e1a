"""The one slice runner of the image methods: each slice of a stack is worked on alone, with its own random
generator, and one progress report counts the real work (slices x denoising steps) for every method.

A method gives the runner its slices (each with its key, `Volume.slice_keys`) and a function that does one slice:
crop, normalise, sample, uncrop (the crop is the method's own: the heart ROI, the LV). The runner calls it slice
after slice with `device.slice_generator(seed, key)`, so a slice's result depends on the seed, its key and its own
pixels only, never on the other slices run with it. Slices run one at a time and the k samples of a slice are the
batch: the memory is bounded whatever the stack's size, and no slice's numbers depend on which others shared its
batch (a batched convolution may take another kernel path and differ in the last bits). It maps each slice's progress (the sampler's fraction of
steps) onto the whole job, so the fraction reported is the fraction of slice x step units done, and the message
names the slice and the step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from .device import slice_generator
from .errors import InputError
from .progress import Progress, report

Result = TypeVar("Result")

SliceWork = Callable[[int, torch.Generator, Progress], Result]
"""work(index, generator, progress) -> the slice's result; progress(fraction of this slice's steps, message)."""


def run_slices(keys: Sequence[int], work: SliceWork, *, seed: int, device: torch.device,
               progress: Progress | None = None, start: float = 0.0, end: float = 1.0) -> list[Result]:
    """Run `work` on every slice in turn and return its results in slice order.

    keys: one integer key per slice (`Volume.slice_keys`: its position along the slice normal), which seeds the
    slice's generator `slice_generator(seed, key, device)`; work(index, generator, slice_progress): the slice's
    whole job, index counting from 0 in `keys`. progress: the job's callback; slice i's fraction f is reported as
    start + (end - start) (i + f) / len(keys), with the message "slice i+1/N: <the slice's message>". Every slice
    runs the same number of steps, so the fraction counts slice x step units. Raises Cancelled (progress returned
    False) between or inside slices, and whatever `work` raises.
    """
    results: list[Result] = []
    count = len(keys)
    for index, key in enumerate(keys):
        def slice_progress(fraction: float, message: str, index: int = index) -> bool | None:
            overall = start + (end - start) * (index + min(max(fraction, 0.0), 1.0)) / count
            return progress(overall, f"slice {index + 1}/{count}: {message}") if progress else None

        report(slice_progress, 0.0, "starting")
        results.append(work(index, slice_generator(seed, int(key), device), slice_progress))
    report(progress, end, f"{count} slice{'s' if count != 1 else ''} done")
    return results


def parse_slices(text: str | None, count: int, stack: str = "the stack") -> list[int] | None:
    """Slice numbers counted from 1 ("3", "2,4", "3-5,7") -> 0-based indices, sorted; None for None or empty.
    InputError for anything else or a number outside 1..count (`stack` names the stack in the message)."""
    if text is None or not str(text).strip():
        return None
    chosen: set[int] = set()
    for part in str(text).split(","):
        bounds = part.strip().split("-")
        try:
            first, last = int(bounds[0]), int(bounds[-1])
        except ValueError:
            raise InputError(f"slices must be numbers from 1 or ranges such as 3-5, comma-separated; got {text!r}"
                             ) from None
        if len(bounds) > 2 or first > last:
            raise InputError(f"slice selection {part.strip()!r} is not a slice number or a range from low to high "
                             "(e.g. 3-5)")
        if not 1 <= first <= last <= count:
            raise InputError(f"slice selection {part.strip()!r} is not within 1-{count} ({stack} has {count} slices)")
        chosen.update(range(first - 1, last))
    return sorted(chosen)
