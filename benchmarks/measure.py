"""What the benchmarks measure a call with: its wall and CPU seconds (`timed`) and the peak memory it allocates
(`peak_mb`). Imported by the benchmark scripts, which run as `python benchmarks/NAME.py`."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any


def timed(call: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process) of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, time.perf_counter() - start, time.process_time() - cpu


def peak_mb(call: Callable[[], Any]) -> float:
    """Peak MiB allocated by Python and numpy during one call (tracemalloc; torch's CPU allocator is not seen)."""
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
