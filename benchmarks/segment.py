"""Cine segmentation speed, memory and phantom quality of the shipped (or a given) cine segmenter.

Speed: a cine frame of 10 slices of 192 x 192 pixels (a held-out phantom test subject's cine, centre-cropped or
zero-padded in-plane; its own pixel size, recorded) is segmented frame by frame through `CineSegmenter.segment`,
clean-up included, in a fresh process, so the memory figures are its own: the process's peak resident set (Linux
ru_maxrss) before and after segmenting, on CUDA also the peak allocated by torch. One untimed warm-up frame first.
The machine's 1-minute load average is recorded: on a CPU shared with other work, more torch threads than free cores
make every pass wait for descheduled threads (on this 2-core machine under a load of 3, 2 threads took 1.1 s for a
forward pass that 1 thread ran in 0.17 s).

Quality: Dice of LV blood pool, LV myocardium and RV blood pool (3D, over all slices of a frame, on the input grid
after clean-up) at ED and ES against the phantom's true labels, for subjects of the validation split (used for
model selection), the test split and the out-of-distribution family (never seen in training).

    python benchmarks/segment.py [--frames 5] [--subjects 8] [--device auto] [--threads N] [--out FILE]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from sunnybrook_dice import dice  # this folder is on sys.path when the script runs

from CMRSynthesisLib.io import atomic_write_bytes

SLICES, SIZE = 10, 192
ROOT = Path(__file__).resolve().parents[1]


def benchmark_cine() -> Any:
    """A (t, 10, 192, 192) cine: the first phantom test subject with at least 10 slices, its first 10 slices,
    centre-cropped or zero-padded in-plane to 192 x 192."""
    from CMRSynthesisLib import phantom
    from CMRSynthesisLib.volume import Volume

    for subject_id in phantom.subject_ids("test", 20):
        subject = phantom.make_subject(subject_id)
        if subject.geometry.shape[0] >= SLICES:
            break
    cine, _ = phantom.render_cine(subject)
    array = cine.array[:, :SLICES]
    out = np.zeros((len(array), SLICES, SIZE, SIZE), dtype=array.dtype)
    source, target = [], []
    for length in array.shape[2:]:
        start_in, start_out = max((length - SIZE) // 2, 0), max((SIZE - length) // 2, 0)
        span = min(length, SIZE)
        source.append(slice(start_in, start_in + span))
        target.append(slice(start_out, start_out + span))
    out[:, :, target[0], target[1]] = array[:, :, source[0], source[1]]
    return Volume(out, cine.spacing, cine.origin, cine.direction,
                  {"trigger_times_ms": cine.metadata["trigger_times_ms"], "phantom_subject": subject_id})


def measure_speed(settings: dict[str, Any]) -> dict[str, Any]:
    """Seconds and peak memory per frame in this (fresh) process."""
    import torch

    from CMRSynthesisLib.methods.cine_segmentation import CineSegmenter

    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    segmenter = CineSegmenter.load(settings["checkpoint"], settings["device"])
    cine = benchmark_cine()
    load_before = os.getloadavg()[0]
    cuda = segmenter.device.type == "cuda"
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    segmenter.segment(cine, [0])  # warm-up, not counted
    warmup = time.perf_counter() - start
    seconds = []
    for frame in range(1, 1 + settings["frames"]):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        segmenter.segment(cine, [frame])
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    memory = {"process_peak_rss_mb": round(peak_mb, 1),
              "process_peak_rss_before_segmenting_mb": round(rss_before_mb, 1),
              "segmenting_raised_peak_rss_by_mb": round(peak_mb - rss_before_mb, 1)}
    if cuda:
        memory["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return {"device": str(segmenter.device), "torch_threads": torch.get_num_threads(),
            "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
            "frame": {"slices": SLICES, "rows": SIZE, "cols": SIZE, "pixel_mm": round(cine.spacing[0], 4),
                      "phantom_subject": cine.metadata["phantom_subject"]},
            "seconds_per_frame": {"median": round(float(np.median(seconds)), 4),
                                  "mean": round(float(np.mean(seconds)), 4),
                                  "min": round(float(np.min(seconds)), 4), "all": [round(s, 4) for s in seconds],
                                  "untimed_warmup_frame": round(warmup, 4)},
            "memory": memory}


def phantom_quality(settings: dict[str, Any]) -> dict[str, Any]:
    """Dice per class at ED and ES on `subjects` subjects of each of the validation, test and ood splits."""
    from CMRSynthesisLib import phantom
    from CMRSynthesisLib.methods.cine_segmentation import LABEL_VALUES, CineSegmenter, phantom_labels
    from training.recipes.cine_segmentation import end_frames

    segmenter = CineSegmenter.load(settings["checkpoint"], settings["device"])
    classes = {name: value for name, value in LABEL_VALUES.items() if value}
    results = {}
    for split in ("validation", "test", "ood"):
        rows = []
        for subject_id in phantom.subject_ids(split, settings["subjects"]):
            cine, labels = phantom.render_cine(phantom.make_subject(subject_id))
            ed, es = end_frames(labels.array)
            segmented = segmenter.segment(cine, [ed, es]).array
            for phase, frame, predicted in (("ED", ed, segmented[0]), ("ES", es, segmented[1])):
                truth = phantom_labels(labels.array[frame])
                rows.append({"subject": subject_id, "phase": phase,
                             **{name: round(dice(predicted == value, truth == value), 4)
                                for name, value in classes.items()}})
        summary = {f"{name}_{phase}": _stats([row[name] for row in rows if row["phase"] == phase])
                   for name in classes for phase in ("ED", "ES")}
        summary.update({f"{name}_mean": round(float(np.mean([row[name] for row in rows])), 4) for name in classes})
        results[split] = {"subjects": settings["subjects"], "summary": summary, "per_frame": rows}
        print(f"{split}: " + ", ".join(f"{name} {summary[f'{name}_mean']:.3f}" for name in classes))
    return results


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": round(float(np.mean(values)), 4), "sd": round(float(np.std(values)), 4),
            "min": round(float(np.min(values)), 4), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=5, help="timed frames")
    parser.add_argument("--subjects", type=int, default=8, help="phantom subjects per split for the Dice")
    parser.add_argument("--checkpoint", help="cine segmenter checkpoint folder (default: the shipped one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads for the timing (0: torch's default)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "segment.json")
    args = vars(parser.parse_args())
    out = args.pop("out")
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        speed = pool.submit(measure_speed, args).result()
    print(f"{speed['seconds_per_frame']['median']:.3f} s per frame of {SLICES} x {SIZE} x {SIZE} (median), peak RSS "
          f"{speed['memory']['process_peak_rss_mb']:.0f} MB")
    quality = phantom_quality(args)
    report = {"command": f"python benchmarks/segment.py {shlex.join(sys.argv[1:])}".strip(), "settings": args,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "speed": speed,
              "phantom_dice": quality}
    atomic_write_bytes(out, (json.dumps(report, indent=2) + "\n").encode())
    print(f"-> {out}")


if __name__ == "__main__":
    main()
