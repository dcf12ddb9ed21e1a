"""The synthesis and enhancement methods, one module each, behind one entry point: `load_method`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError

METHODS = ("scar_enhancement", "cine_segmentation")


def load_method(name: str, checkpoint: str | Path | None = None, device: str = "auto", **options: Any):
    """Load a method by name with its checkpoint (None: the shipped demo model) on `device` ("auto", "cpu", "cuda").

    The returned object has `run(inputs, *, steps, samples, seed, guidance, progress) -> dict of Volumes` (the
    segmenter "cine_segmentation": `run({"cine": Volume}, *, frames, progress)`); `progress(fraction, message)` may
    return False to cancel (raises Cancelled).
    """
    if name == "scar_enhancement":
        from .scar_enhancement import ScarEnhancement

        return ScarEnhancement.load(checkpoint, device=device, **options)
    if name == "cine_segmentation":
        from .cine_segmentation import CineSegmenter

        return CineSegmenter.load(checkpoint, device=device, **options)
    raise InputError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
