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


def machine_facts() -> dict[str, Any]:
    """The machine a benchmark ran on: platform, CPUs, torch version and threads, the GPU (None without CUDA), the
    load average at the end (a shared machine's wall times include waiting for a core) and the process's peak RSS
    (MiB)."""
    import os
    import platform
    import resource

    import torch

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_average_1_5_15_min_at_end": [round(v, 2) for v in os.getloadavg()],
            "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def per_slice_rows(settings: dict[str, dict[str, Any]], run: Callable[[dict[str, Any]], Any],
                   slices_of: Callable[[Any], int], repeats: int, device: str = "cpu") -> dict[str, dict[str, Any]]:
    """For each named setting (`run` keywords): a warm-up call of run(options) (its wall seconds kept apart as
    "warm_up_seconds"), then the median wall and CPU seconds per slice of `repeats` timed calls (slices_of(result):
    how many slices a call made) and the peak memory: on CPU the peak MiB allocated by Python and numpy during one
    more, traced call; on CUDA (`device` "cuda") the peak MiB torch allocated on the GPU during the timed calls, with
    no traced call (tracing slows every Python allocation of a launch-bound GPU loop). Each row is printed as soon as
    it is measured. All settings are timed in one run, so their ratios see one machine load."""
    import statistics

    import torch

    cuda = str(device).startswith("cuda")
    rows = {}
    for name, options in settings.items():
        def call(options: dict[str, Any] = options) -> Any:
            return run(options)

        _, warm_up, _ = timed(call)  # untimed in the rows' seconds: the first call's set-up (e.g. CUDA's) is here
        print(f"{name}: warm-up call {warm_up:.1f} s", flush=True)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        runs = [timed(call) for _ in range(repeats)]
        made = slices_of(runs[0][0])
        memory = ({"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20} if cuda
                  else {"peak_allocated_mb": peak_mb(call)})
        wall, cpu = (statistics.median(result[index] for result in runs) / made for index in (1, 2))
        rows[name] = {"seconds_per_slice": wall, "cpu_seconds_per_slice": cpu, "slices": made,
                      "warm_up_seconds": warm_up, **memory, **options}
        print(f"{name}: {wall:.2f} s/slice (CPU {cpu:.2f} s), "
              + ", ".join(f"{key} {value:.0f}" for key, value in memory.items()), flush=True)
    return rows


def write_report(path: Any, report: dict[str, Any]) -> None:
    """Write the report as JSON (atomically) and say where (`per_slice_rows` printed each row as it was measured)."""
    import json

    from CMRSynthesisLib.io import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(report, indent=2) + "\n").encode())
    print(f"-> {path}")
