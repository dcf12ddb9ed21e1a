"""Myocardial strain speed, memory and accuracy (CMRSynthesisLib.analysis.strain.myocardial_strain) on a synthetic
25-frame cine at a clinical matrix, per short-axis slice.

The cine: 192 x 192 pixels of 1.5 mm, `--slices` slices, 25 frames over one heartbeat (ED at frame 0, ES at frame
12). Each slice is an incompressible thickening ring (a material point at ED radius R lies at
r = sqrt(R^2 - Ri^2 + ri(t)^2)), with a random texture attached to the tissue, bright featureless blood, darker
surroundings and Gaussian noise. Two hearts: "typical", ED cavity radius 24 mm and wall 9 mm (66 mm across, 44
pixels), and "large", the myocardium 100 pixels across (an outsized heart: a crop of about 120 x 120 pixels).
Times are wall seconds and this process's CPU seconds of whole `myocardial_strain` calls divided by the slices
(median of `--repeats` calls, after an untimed warm-up; on a shared machine wall time includes waiting for a core,
so the load average is recorded), with the TV-L1 tracking alone timed on one slice to show what dominates, serial
and threaded (`lagrangian_displacement(threads=...)`) interleaved so their ratio is measured under one load; memory
is the peak of bytes allocated by Python and numpy during one further, traced call (tracemalloc), and the
process's peak RSS.
Accuracy: global peak E_cc and E_rr against the closed form over the same voxels. Target: under 2 s per slice.

    python benchmarks/strain.py [--slices 3] [--repeats 3] [--seed 0] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import skimage
from measure import peak_mb, timed
from scipy.ndimage import gaussian_filter, map_coordinates

from CMRSynthesisLib.analysis.strain import (
    THREADED_MIN_PIXELS,
    TRACKING_THREADS,
    TVL1_OPTIONS,
    core_myocardium,
    lagrangian_displacement,
    myocardial_strain,
    normalise_intensity,
)
from CMRSynthesisLib.io import atomic_write_bytes
from CMRSynthesisLib.volume import Volume

SIZE, SPACING_MM, FRAMES, NOISE = 192, 1.5, 25, 0.03
HEARTS = {"typical": {"inner": 24.0, "outer": 33.0, "inner_es": 15.0},
          "large": {"inner": 60.0, "outer": 75.0, "inner_es": 40.0}}  # outer 75 mm = 50 px radius


def ring_cine(slices: int, inner: float, outer: float, inner_es: float, seed: int
              ) -> tuple[Volume, np.ndarray, np.ndarray, np.ndarray]:
    """(cine (25, slices, 192, 192), ED myocardium mask (slices, 192, 192), true global E_cc and E_rr (25,) over
    the core voxels)."""
    rng = np.random.default_rng(seed)
    centre = (SIZE - 1) / 2 * SPACING_MM
    y, x = np.mgrid[:SIZE, :SIZE] * SPACING_MM - centre
    radius, theta = np.hypot(x, y), np.arctan2(y, x)
    phase = 0.5 * (1.0 - np.cos(2.0 * np.pi * np.arange(FRAMES) / FRAMES))
    cavity = inner - (inner - inner_es) * phase
    extent = 2.0 * centre  # texture grid: +-extent mm at 0.5 mm
    images = np.empty((FRAMES, slices, SIZE, SIZE), dtype=np.float32)
    for z in range(slices):
        texture = gaussian_filter(rng.standard_normal((int(4 * extent) + 1,) * 2), 1.5)
        texture /= texture.std()
        for t in range(FRAMES):
            material = np.sqrt(np.maximum(radius**2 - cavity[t] ** 2 + inner**2, 0.0))
            where = [(material * np.sin(theta) + extent) * 2.0, (material * np.cos(theta) + extent) * 2.0]
            tissue = np.where(material < outer, 0.45, 0.2) + 0.08 * map_coordinates(texture, where, order=1)
            images[t, z] = np.where(radius < cavity[t], 1.0, tissue) + NOISE * rng.standard_normal((SIZE, SIZE))
    ring = (radius >= inner) & (radius < outer)
    core = core_myocardium(ring)
    moved_sq = radius[core] ** 2 - inner**2 + cavity[:, None] ** 2
    truth_cc = 0.5 * (moved_sq / radius[core] ** 2 - 1.0).mean(axis=1)
    truth_rr = 0.5 * (radius[core] ** 2 / moved_sq - 1.0).mean(axis=1)
    cine = Volume(images, spacing=(SPACING_MM, SPACING_MM, 8.0),
                  metadata={"trigger_times_ms": [32.0 * t for t in range(FRAMES)]})
    return cine, np.repeat(ring[None], slices, axis=0), truth_cc, truth_rr


def measure(heart: dict[str, float], slices: int, repeats: int, seed: int) -> dict[str, Any]:
    cine, myocardium, truth_cc, truth_rr = ring_cine(slices, **heart, seed=seed)

    def run() -> Any:
        return myocardial_strain(cine, myocardium)

    run()  # warm-up, not counted
    runs = [timed(run) for _ in range(repeats)]
    result = runs[0][0]
    per_slice = [seconds / slices for _, seconds, _ in runs]
    cpu_per_slice = [cpu / slices for _, _, cpu in runs]
    rows, cols = np.nonzero(myocardium[0])
    pad = int(np.ceil(15.0 / SPACING_MM))  # strain.MARGIN_MM
    crop = cine.array[:, 0, rows.min() - pad:rows.max() + pad + 1, cols.min() - pad:cols.max() + pad + 1]
    frames = normalise_intensity(crop)
    threads = {"serial": 1, "threaded": TRACKING_THREADS}
    tracking: dict[str, list[tuple[float, float]]] = {name: [] for name in threads}
    for _ in range(repeats):  # serial and threaded interleaved, so both see the same machine load
        for name, count in threads.items():
            tracking[name].append(timed(lambda count=count: lagrangian_displacement(frames, 0, threads=count))[1:])
    tracking_seconds, tracking_cpu = map(float, np.median(tracking["serial" if crop[0].size < THREADED_MIN_PIXELS
                                                                   else "threaded"], axis=0))
    wall = {name: float(np.median([seconds for seconds, _ in runs])) for name, runs in tracking.items()}
    return {
        "heart": heart, "myocardium_across_px": int(cols.max() - cols.min() + 1), "crop_px": list(crop.shape[1:]),
        "seconds_per_slice": {"median": float(np.median(per_slice)), "all": [round(v, 4) for v in per_slice]},
        "cpu_seconds_per_slice": {"median": float(np.median(cpu_per_slice)),
                                  "all": [round(v, 4) for v in cpu_per_slice]},
        "tracking_seconds_per_slice": tracking_seconds, "tracking_cpu_seconds_per_slice": tracking_cpu,
        "tracking_share_of_cpu": tracking_cpu / float(np.median(cpu_per_slice)),
        "tracking_wall_seconds": {**wall, "threads": TRACKING_THREADS,
                                  "threaded_over_serial": wall["threaded"] / wall["serial"],
                                  "used": "serial" if crop[0].size < THREADED_MIN_PIXELS else "threaded"},
        "peak_allocated_mb": peak_mb(run), "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        / 1024.0,
        "accuracy": {"global_peak_circumferential": result.global_peak_circumferential,
                     "true_global_peak_circumferential": float(truth_cc.min()),
                     "global_peak_radial": result.global_peak_radial,
                     "true_global_peak_radial": float(truth_rr.max()),
                     "circumferential_error": result.global_peak_circumferential - float(truth_cc.min()),
                     "radial_error": result.global_peak_radial - float(truth_rr.max())},
        "target_seconds_per_slice": 2.0, "target_met": float(np.median(per_slice)) < 2.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "strain.json")
    args = vars(parser.parse_args())
    out = args.pop("out")
    results = {name: measure(heart, args["slices"], args["repeats"], args["seed"]) for name, heart in HEARTS.items()}
    report = {
        "settings": {**args, "matrix": SIZE, "spacing_mm": SPACING_MM, "frames": FRAMES, "noise_sd": NOISE,
                     "tvl1": TVL1_OPTIONS},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "numpy": np.__version__,
                    "scipy": scipy.__version__, "scikit_image": skimage.__version__,
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "load_average_1_5_15_min_at_end": [round(v, 2) for v in os.getloadavg()]},
        **results,
    }
    atomic_write_bytes(out, (json.dumps(report, indent=2) + "\n").encode())
    for name, row in results.items():
        accuracy = row["accuracy"]
        print(f"{name} ({row['myocardium_across_px']} px across, crop {row['crop_px']}): "
              f"{row['seconds_per_slice']['median']:.2f} s/slice, CPU {row['cpu_seconds_per_slice']['median']:.2f} s "
              f"(tracking {100 * row['tracking_share_of_cpu']:.0f} %; threaded / serial tracking wall "
              f"{row['tracking_wall_seconds']['threaded_over_serial']:.2f}), "
              f"peak {row['peak_allocated_mb']:.0f} MiB; E_cc error {accuracy['circumferential_error']:+.3f}, "
              f"E_rr error {accuracy['radial_error']:+.3f}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
