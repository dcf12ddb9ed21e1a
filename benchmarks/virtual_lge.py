"""Virtual LGE (CPKDM) speed and memory per slice with the shipped checkpoints, on phantom test subject 0's cine and
native MOLLI (its middle `--slices` slices), for the default sampler (DDIM 50 steps, eta 1, k = 3) and the others
asked for.

Times are wall and CPU seconds of whole `run` calls (the cine segmentation, the MOLLI fit of the matched slices, the
wall tracking and the sampling with decoding) divided by the slices synthesised, median of `--repeats` calls after an
untimed warm-up, all settings in one run so their ratios are measured under one machine load (the load average is
recorded). Memory: the peak bytes allocated by Python and numpy during one traced call (tracemalloc; torch's CPU
allocator is not seen) and the process's peak RSS. Target: under 5 s per slice with the default sampler on CPU
(issue 14); on a GPU the paper reports 0.24 s per 128 x 128 image on 4 RTX 3090 Ti.

    python benchmarks/virtual_lge.py [--slices 2] [--samples 3] [--ddim-steps 50,20] [--repeats 1] [--device auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
from pathlib import Path

import numpy as np
import torch
from measure import peak_mb, timed

from CMRSynthesisLib import phantom
from CMRSynthesisLib.io import atomic_write_bytes
from CMRSynthesisLib.methods import get_spec, load_method

TARGET_SECONDS_PER_SLICE = 5.0


def study_slices(count: int) -> dict:
    """The cine (no infarct contrast) and native MOLLI of phantom test subject 0, and the middle `count` cine slices
    (counted from 1, as `--slices` takes them)."""
    subject = phantom.make_subject(phantom.subject_ids("test", 1)[0])
    cine, _ = phantom.render_cine(subject, infarct_contrast=False)
    molli = phantom.render_molli(subject, phantom.render_labels(subject))
    start = max(0, cine.spatial_shape[0] // 2 - count // 2)
    return {"inputs": {"cine": cine, "molli": molli}, "slices": f"{start + 1}-{start + count}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--ddim-steps", default="50,20", help="DDIM step counts, separated by commas (the first is "
                        "the method's default)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "virtual_lge.json")
    args = parser.parse_args()
    study = study_slices(args.slices)
    method = load_method("virtual_lge", device=args.device)
    default = get_spec("virtual_lge").sampling
    settings = {f"ddim_{steps}": {"sampler": "ddim", "ddim_steps": int(steps), "ddim_eta": default.ddim_eta}
                for steps in args.ddim_steps.split(",")}
    rows = {}
    for name, options in settings.items():
        def call(options: dict = options) -> dict:
            return method.run(study["inputs"], samples=args.samples, seed=0, slices=study["slices"], **options)

        call()  # warm-up
        runs = [timed(call) for _ in range(args.repeats)]
        made = len(runs[0][0]["lge"].metadata["synthesis"]["slices"])
        peak = peak_mb(call)
        wall, cpu = (float(np.median([run[index] for run in runs])) / made for index in (1, 2))
        rows[name] = {"seconds_per_slice": wall, "cpu_seconds_per_slice": cpu, "slices": made,
                      "peak_allocated_mb": peak, **options}
    cine = study["inputs"]["cine"]
    report = {
        "settings": {"slices": study["slices"], "samples": args.samples, "repeats": args.repeats,
                     "matrix": list(cine.spatial_shape[1:]), "frames": int(cine.array.shape[0]),
                     "molli_images_per_slice": int(study["inputs"]["molli"].images.array.shape[0]),
                     "device": str(method.device), "default_sampler": dataclasses.asdict(default)},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "load_average_1_5_15_min_at_end": [round(v, 2) for v in os.getloadavg()],
                    "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0},
        **rows,
        "target_seconds_per_slice": TARGET_SECONDS_PER_SLICE,
        **{f"{name}_target_met": row["seconds_per_slice"] < TARGET_SECONDS_PER_SLICE for name, row in rows.items()},
        "paper_gpu_seconds_per_image": 0.24,
    }
    atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode())
    for name, row in rows.items():
        print(f"{name}: {row['seconds_per_slice']:.2f} s/slice (CPU {row['cpu_seconds_per_slice']:.2f} s), "
              f"peak {row['peak_allocated_mb']:.0f} MiB")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
