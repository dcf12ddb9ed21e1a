"""Progress reporting for long work: a tqdm bar for people, one JSON line per update for programs (the Slicer
module reads these), or nothing. A reporter is the `progress(fraction, message)` callback the methods take.

The fraction is the fraction of the job's real work done (the slice runner counts slices x denoising steps), so the
time left is estimated from it: the bar shows percent, elapsed time and time left; each JSON line carries
"elapsed_s" and "eta_s" (seconds, null until 1 % is done)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from .errors import Cancelled

MODES = ("bar", "json", "none")
BAR_UNITS = 1000  # the bar's resolution; it shows percent

Progress = Callable[[float, str], "bool | None"]
"""progress(fraction in [0, 1], message) -> False to cancel (anything else: go on)."""


def report(progress: Progress | None, fraction: float, message: str) -> None:
    """Call a progress callback; its returning False means the user cancelled (raises Cancelled)."""
    if progress is not None and progress(min(max(fraction, 0.0), 1.0), message) is False:
        raise Cancelled("cancelled by the user")


def stage(progress: Progress, start: float, end: float) -> Progress:
    """A progress callback mapping [0, 1] onto [start, end] of `progress` (a part of a longer job)."""
    return lambda fraction, message: progress(start + (end - start) * fraction, message)


def time_left(fraction: float, elapsed_s: float) -> float | None:
    """Seconds left at this pace: elapsed (1 - fraction) / fraction; None before 1 % of the work is done."""
    if fraction < 0.01:
        return None
    return round(elapsed_s * (1.0 - min(fraction, 1.0)) / fraction, 1)


def describe_time_left(seconds: float | None) -> str:
    """'about 40 s left', 'about 3 min left', or '' when not known yet."""
    if seconds is None:
        return ""
    return f"about {max(round(seconds), 1)} s left" if seconds < 90 else f"about {round(seconds / 60)} min left"


def emit(stream: TextIO, kind: str, **fields: Any) -> None:
    """Write one machine-readable line: {"type": kind, ...fields}."""
    stream.write(json.dumps({"type": kind, **fields}) + "\n")
    stream.flush()


class Reporter:
    """Callable progress sink. mode "bar": tqdm on stderr (percent, elapsed, time left); "json": JSON lines on
    `stream` ({"type": "progress", "fraction", "message", "elapsed_s", "eta_s"}); "none": silent."""

    def __init__(self, mode: str = "bar", stream: TextIO | None = None, min_step: float = 0.005) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}")
        self.mode, self.stream, self.min_step = mode, stream or sys.stdout, min_step
        from tqdm import tqdm  # here, not at the top: the Slicer module reads describe_time_left without tqdm

        bar_format = "{desc}{percentage:3.0f}%|{bar}| {elapsed}<{remaining}"  # tqdm ends the description with ": "
        self.bar = (tqdm(total=BAR_UNITS, dynamic_ncols=True, file=sys.stderr, bar_format=bar_format)
                    if mode == "bar" else None)
        self.last = -1.0
        self.started = time.monotonic()

    def __call__(self, fraction: float, message: str) -> bool:
        if self.bar is not None:
            self.bar.set_description(message[:60], refresh=False)
            self.bar.update(round(fraction * BAR_UNITS) - self.bar.n)  # redraws at most every 0.1 s
        elif self.mode == "json" and (fraction - self.last >= self.min_step or fraction >= 1.0):
            elapsed = time.monotonic() - self.started
            emit(self.stream, "progress", fraction=round(fraction, 4), message=message, elapsed_s=round(elapsed, 1),
                 eta_s=time_left(fraction, elapsed))
            self.last = fraction
        return True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
