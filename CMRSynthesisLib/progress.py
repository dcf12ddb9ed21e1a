"""Progress reporting for long work: a tqdm bar for people, one JSON line per update for programs (the Slicer
module reads these), or nothing. A reporter is the `progress(fraction, message)` callback the methods take."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

from .errors import Cancelled

MODES = ("bar", "json", "none")

Progress = Callable[[float, str], "bool | None"]
"""progress(fraction in [0, 1], message) -> False to cancel (anything else: go on)."""


def report(progress: Progress | None, fraction: float, message: str) -> None:
    """Call a progress callback; its returning False means the user cancelled (raises Cancelled)."""
    if progress is not None and progress(min(max(fraction, 0.0), 1.0), message) is False:
        raise Cancelled("cancelled by the user")


def stage(progress: Progress, start: float, end: float) -> Progress:
    """A progress callback mapping [0, 1] onto [start, end] of `progress` (a part of a longer job)."""
    return lambda fraction, message: progress(start + (end - start) * fraction, message)


def emit(stream: TextIO, kind: str, **fields: Any) -> None:
    """Write one machine-readable line: {"type": kind, ...fields}."""
    stream.write(json.dumps({"type": kind, **fields}) + "\n")
    stream.flush()


class Reporter:
    """Callable progress sink. mode "bar": tqdm on stderr; "json": JSON lines on `stream`; "none": silent."""

    def __init__(self, mode: str = "bar", stream: TextIO | None = None, min_step: float = 0.005) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}")
        self.mode, self.stream, self.min_step = mode, stream or sys.stdout, min_step
        self.bar = tqdm(total=1000, unit="‰", dynamic_ncols=True, file=sys.stderr) if mode == "bar" else None
        self.last = -1.0

    def __call__(self, fraction: float, message: str) -> bool:
        if self.bar is not None:
            self.bar.set_description(message[:60], refresh=False)
            self.bar.update(round(fraction * 1000) - self.bar.n)  # redraws at most every 0.1 s
        elif self.mode == "json" and (fraction - self.last >= self.min_step or fraction >= 1.0):
            emit(self.stream, "progress", fraction=round(fraction, 4), message=message)
            self.last = fraction
        return True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
