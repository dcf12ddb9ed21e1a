"""T1 from cine (T1Diff) speed and memory per slice, DDPM (all 1000 steps, the paper) against DDIM, on one phantom
test subject's cine with the shipped checkpoints.

Times are wall and CPU seconds of whole `run` calls (segmentation of the cine included) divided by the slices
mapped, median of `--repeats` calls after an untimed warm-up; DDPM and DDIM are timed in the same run so their ratio
is measured under one machine load (the load average is recorded). Memory: the peak of bytes allocated by Python and
numpy during one traced call (tracemalloc; torch's own allocations on CPU are not seen there) and the process's
peak RSS. DDIM runs with eta 1 (the method's default) at each of `--ddim-steps`. Target for DDIM: under 2 s per slice
on this CPU (judged for each step count: the method's default of 100 steps is slower, 25 steps is the fast setting).

    python benchmarks/t1_from_cine.py [--slices 2] [--samples 3] [--ddim-steps 25,100] [--repeats 1] [--device auto]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from measure import machine_facts, per_slice_rows, write_report

from CMRSynthesisLib import phantom
from CMRSynthesisLib.methods import load_method
from CMRSynthesisLib.volume import Volume


def cine_slices(count: int) -> Volume:
    """The middle `count` slices of the cine of phantom test subject 8, with its geometry and frame times."""
    subject = phantom.make_subject(phantom.subject_ids("test", 1)[0])
    cine, _ = phantom.render_cine(subject)
    start = max(0, cine.spatial_shape[0] // 2 - count // 2)
    origin = np.asarray(cine.origin) + np.reshape(cine.direction, (3, 3))[:, 2] * cine.spacing[2] * start
    return Volume(cine.array[:, start:start + count], cine.spacing, tuple(origin), cine.direction, dict(cine.metadata))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--ddim-steps", default="25,100", help="DDIM step counts, separated by commas")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "t1_from_cine.json")
    args = parser.parse_args()
    cine = cine_slices(args.slices)
    method = load_method("t1_from_cine", device=args.device)
    settings = {f"ddim_{steps}": {"sampler": "ddim", "ddim_steps": int(steps), "ddim_eta": 1.0}
                for steps in args.ddim_steps.split(",")}
    settings["ddpm"] = {"sampler": "ddpm"}
    rows = per_slice_rows(settings, lambda options: method.run({"cine": cine}, samples=args.samples, seed=0,
                                                               **options),
                          lambda outputs: len(outputs["t1"].metadata["synthesis"]["slices"]), args.repeats,
                          str(method.device))
    report = {
        "settings": {"slices": args.slices, "samples": args.samples, "repeats": args.repeats,
                     "matrix": list(cine.spatial_shape[1:]), "frames": int(cine.array.shape[0]),
                     "device": str(method.device)},
        "machine": machine_facts(),
        **rows,
        **{f"ddpm_over_{name}": rows["ddpm"]["seconds_per_slice"] / row["seconds_per_slice"]
           for name, row in rows.items() if name != "ddpm"},
        "ddim_target_seconds_per_slice": 2.0,
        **{f"{name}_target_met": row["seconds_per_slice"] < 2.0 for name, row in rows.items() if name != "ddpm"},
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
