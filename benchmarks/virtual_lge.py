"""Virtual LGE (CPKDM) speed and memory per slice with the shipped checkpoints, on the first phantom test subject's cine
and native MOLLI (its middle `--slices` slices), for the default sampler (DDIM 50 steps, eta 1, k = 3) and the others
asked for.

Times are wall and CPU seconds of whole `run` calls (the MOLLI fit of the matched slices, the wall tracking and the
sampling with decoding) divided by the slices synthesised, median of `--repeats` calls after an untimed warm-up; the
method remembers the last cine it segmented, so the timed calls reuse the warm-up's segmentation, whose time for the
whole stack (every frame, once per cine) is measured on its own ("segmentation_seconds_per_stack"), all settings in one run so their ratios are measured under one machine load (the load average is
recorded). Memory: the peak bytes allocated by Python and numpy during one traced call (tracemalloc; torch's CPU
allocator is not seen) and the process's peak RSS. Target: under 5 s per slice with the default sampler on CPU
(issue 14); on a GPU the paper reports 0.24 s per 128 x 128 image on 4 RTX 3090 Ti.

    python benchmarks/virtual_lge.py [--slices 2] [--samples 3] [--ddim-steps 50,20] [--repeats 1] [--device auto]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from measure import machine_facts, per_slice_rows, timed, write_report

from CMRSynthesisLib import phantom
from CMRSynthesisLib.methods import get_spec, load_method

TARGET_SECONDS_PER_SLICE = 5.0


def study_slices(count: int) -> dict:
    """The cine (no infarct contrast) and native MOLLI of the first phantom test subject, and the middle `count` slices
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
    rows = per_slice_rows(settings, lambda options: method.run(study["inputs"], samples=args.samples, seed=0,
                                                               slices=study["slices"], **options),
                          lambda outputs: len(outputs["lge"].metadata["synthesis"]["slices"]), args.repeats,
                          str(method.device))
    cine = study["inputs"]["cine"]
    _, segmentation_wall, _ = timed(lambda: method.segmenter.segment(cine))
    report = {
        "settings": {"slices": study["slices"], "samples": args.samples, "repeats": args.repeats,
                     "matrix": list(cine.spatial_shape[1:]), "frames": int(cine.array.shape[0]),
                     "molli_images_per_slice": int(study["inputs"]["molli"].images.array.shape[0]),
                     "device": str(method.device), "default_sampler": dataclasses.asdict(default)},
        "machine": machine_facts(),
        **rows,
        "segmentation_seconds_per_stack": segmentation_wall,
        "target_seconds_per_slice": TARGET_SECONDS_PER_SLICE,
        **{f"{name}_target_met": row["seconds_per_slice"] < TARGET_SECONDS_PER_SLICE for name, row in rows.items()},
        "paper_gpu_seconds_per_image": 0.24,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
