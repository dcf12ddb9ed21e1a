"""Scar-enhancement speed, memory and quality: DDPM partial diffusion (t0=250, k=5, the paper's setting) against the
DDIM partial sampler on the same held-out phantom slices, in one run on one machine.

Each sampler runs in a fresh process, so the memory figures are its own: on CPU the process's peak resident set
(Linux ru_maxrss) before and after sampling, the difference being what sampling added; on CUDA also the peak
allocated by torch during sampling.
Each process first runs one untimed warm-up slice (first-call allocation), then times every slice; the speed-up is
the ratio of the median seconds per slice.
Writes JSON (default benchmarks/results/enhance.json): per-slice seconds, peak memory, ROI SSIM / PSNR against the
gamma target, CNRs, and the DDPM / DDIM time ratio and SSIM difference. Targets: DDIM at least 10x faster, ROI SSIM
within 0.005 of DDPM.

    python benchmarks/enhance.py [--subjects 2] [--slices 2] [--device auto] [--out FILE]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from CMRSynthesisLib.diffusion.samplers import DEFAULT_DDIM_STEPS
from CMRSynthesisLib.io import atomic_write_bytes


def measure(sampler: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one sampler over the held-out slices in this (fresh) process; timings, memory and metrics."""
    import torch

    from CMRSynthesisLib.demo import evaluate_slice, heldout_cases
    from CMRSynthesisLib.methods import load_method
    from CMRSynthesisLib.metrics import summarise

    method = load_method("scar_enhancement", device=args["device"])
    cases = heldout_cases(args["subjects"], args["slices"], method.segmenter)
    cuda = method.device.type == "cuda"
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    first = cases[0]
    z0 = first["slices"][0]
    start = time.perf_counter()  # warm-up call, not counted: first-call allocation and kernel selection
    method.enhance_slices(first["study"]["lge"].array[z0 : z0 + 1], first["roi"][z0 : z0 + 1], steps=args["t0"],
                          samples=args["samples"], seed=0, sampler=sampler, ddim_steps=args["ddim_steps"])
    warmup_seconds = time.perf_counter() - start
    rows, seconds = [], []
    for case in cases:
        lge, masks, roi = case["study"]["lge"], case["study"]["masks"], case["roi"]
        for z in case["slices"]:  # one slice at a time: per-slice latency, k samples batched
            image = lge.array[z : z + 1]
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            enhanced, _ = method.enhance_slices(image, roi[z : z + 1], steps=args["t0"], samples=args["samples"],
                                                seed=0, sampler=sampler, ddim_steps=args["ddim_steps"])
            if cuda:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
            slice_masks = {name: masks[name][z] for name in ("scar", "myocardium", "blood", "heart_roi")}
            rows.append(evaluate_slice(image[0], enhanced[0], slice_masks, roi[z], method.config)[0])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    memory = {"process_peak_rss_mb": peak_mb, "process_peak_rss_before_sampling_mb": rss_before_mb,
              "sampling_raised_peak_rss_by_mb": peak_mb - rss_before_mb}
    if cuda:
        memory["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    stats = summarise(rows)
    return {"sampler": sampler, "device": str(method.device), "slices": len(seconds),
            "seconds_per_slice": {"median": float(np.median(seconds)), "mean": float(np.mean(seconds)),
                                  "min": float(np.min(seconds)), "all": [round(s, 4) for s in seconds],
                                  "untimed_warmup_call": round(warmup_seconds, 4)},
            "memory": memory,
            "quality": {key: stats[key] for key in ("enhanced_ssim", "enhanced_psnr", "enhanced_cnr_scar_myo",
                                                    "enhanced_cnr_scar_blood", "input_cnr_scar_myo",
                                                    "input_cnr_scar_blood", "target_cnr_scar_myo")},
            "per_slice_ssim": [row["enhanced_ssim"] for row in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--t0", type=int, default=250)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--ddim-steps", type=int, default=DEFAULT_DDIM_STEPS)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "enhance.json")
    args = vars(parser.parse_args())
    out = args.pop("out")
    results = {}
    context = multiprocessing.get_context("spawn")
    for sampler in ("ddpm", "ddim"):
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            results[sampler] = pool.submit(measure, sampler, args).result()
        print(f"{sampler}: {results[sampler]['seconds_per_slice']['median']:.2f} s/slice (median), "
              f"SSIM {results[sampler]['quality']['enhanced_ssim']['mean']:.4f}")
    ddpm, ddim = results["ddpm"], results["ddim"]
    speedup = ddpm["seconds_per_slice"]["median"] / ddim["seconds_per_slice"]["median"]
    ssim_gap = abs(ddpm["quality"]["enhanced_ssim"]["mean"] - ddim["quality"]["enhanced_ssim"]["mean"])
    report = {"settings": args, "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                            "torch_threads": _torch_threads()},
              "ddpm": ddpm, "ddim": ddim,
              "comparison": {"ddim_speedup": speedup, "ssim_abs_difference": ssim_gap,
                             "target_speedup_at_least": 10.0, "target_ssim_difference_at_most": 0.005,
                             "speedup_met": speedup >= 10.0, "ssim_met": ssim_gap <= 0.005}}
    atomic_write_bytes(out, json.dumps(report, indent=2).encode())
    print(f"DDIM speed-up {speedup:.1f}x, ROI SSIM difference {ssim_gap:.4f} -> {out}")


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
