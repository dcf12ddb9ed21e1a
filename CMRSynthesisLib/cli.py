"""`cmrsynth`: the command line over CMRSynthesisLib (also what the Slicer module runs out of process).

Every command checks its inputs before it writes anything, writes outputs atomically and never onto an input, and
exits 1 with a one-line message naming the problem on bad input. With `--progress json` it prints one JSON object
per line on stdout: {"type": "progress", ...} updates, then {"type": "result", ...} or {"type": "error", ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .diffusion.roi_diffusion import DEFAULT_DDIM_STEPS
from .errors import Cancelled, CMRSynthesisError
from .progress import MODES, Reporter, emit


def _add_sampling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=250, help="partial-diffusion start step t0 (paper: 250)")
    parser.add_argument("--samples", type=int, default=5, help="k samples averaged (paper: 5)")
    parser.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm",
                        help="ddpm: every step from t0 (paper); ddim: a faster coarse grid")
    parser.add_argument("--ddim-steps", type=int, default=DEFAULT_DDIM_STEPS,
                        help="DDIM steps from t0 (with --sampler ddim)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same result")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--checkpoint", type=Path, help="enhancer checkpoint folder (default: shipped demo model)")
    parser.add_argument("--segmenter", type=Path, help="heart-ROI segmenter checkpoint folder (default: shipped)")
    parser.add_argument("--progress", choices=MODES, default="bar", help="bar, json (one line per update) or none")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmrsynth", description="Cardiac MR synthesis and enhancement.")
    commands = parser.add_subparsers(dest="command", required=True)

    phantom = commands.add_parser("phantom", help="write synthetic LGE studies with their masks")
    phantom.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per subject)")
    phantom.add_argument("--split", choices=("train", "validation", "test"), default="test")
    phantom.add_argument("--subjects", type=int, default=2, help="how many subjects of the split")

    enhance = commands.add_parser("enhance", help="localized scar enhancement of an LGE stack")
    enhance.add_argument("--lge", type=Path, required=True, help="LGE volume: NIfTI, NRRD, a DICOM file or folder")
    enhance.add_argument("--roi", type=Path, help="heart ROI mask on the LGE grid (default: the segmenter's)")
    enhance.add_argument("--out", type=Path, required=True, help="enhanced LGE to write (.nrrd, .nii.gz)")
    enhance.add_argument("--roi-out", type=Path, help="also write the ROI used")
    enhance.add_argument("--spread-out", type=Path, help="also write the per-voxel SD of the k samples")
    _add_sampling(enhance)

    demo = commands.add_parser("demo", help="enhance held-out phantom subjects; figure, metrics JSON and table")
    demo.add_argument("--out", type=Path, default=Path("demo_output"))
    demo.add_argument("--subjects", type=int, default=8, help="held-out test subjects with scar")
    demo.add_argument("--slices", type=int, default=2, help="scarred slices per subject (largest scar first)")
    _add_sampling(demo)
    return parser


def run_enhance(args: argparse.Namespace, progress: Reporter) -> dict[str, Any]:
    from .io import check_output_paths, read_volume, write_volumes
    from .methods import load_method

    protected = [args.lge] + ([args.roi] if args.roi else [])
    targets = {key: path for key, path in (("enhanced", args.out), ("roi", args.roi_out), ("spread", args.spread_out))
               if path is not None}
    check_output_paths(list(targets.values()), protected=protected)  # fail before the long work
    lge = read_volume(args.lge)
    roi = read_volume(args.roi) if args.roi else None
    method = load_method("scar_enhancement", args.checkpoint, device=args.device, segmenter=args.segmenter)
    outputs = method.run({"lge": lge, "roi": roi}, steps=args.steps, samples=args.samples, seed=args.seed,
                         sampler=args.sampler, ddim_steps=args.ddim_steps, progress=progress)
    written = write_volumes([(outputs[key], path) for key, path in targets.items()], protected=protected)
    roi_mask = outputs["roi"].array.astype(bool)
    changed = outputs["enhanced"].array[roi_mask].astype(float) - lge.array[roi_mask].astype(float)
    summary = {"roi_voxels": int(roi_mask.sum()), "slices_with_roi": int(roi_mask.any(axis=(1, 2)).sum()),
               "mean_change_in_roi": float(changed.mean()), "device": str(method.device),
               **outputs["enhanced"].metadata["synthesis"]}
    return {"outputs": {key: str(path.resolve()) for key, path in zip(targets, written)}, "summary": summary}


def run_phantom(args: argparse.Namespace) -> dict[str, Any]:
    from . import phantom
    from .io import write_volumes

    written = {}
    for subject_id in phantom.subject_ids(args.split, args.subjects):
        study = phantom.lge_study(subject_id)
        folder = args.out / f"subject_{subject_id:04d}"
        volumes = {"lge": study["lge"], "labels": study["labels"],
                   "heart_roi": study["lge"].with_array(study["masks"]["heart_roi"].astype(np.uint8))}
        paths = write_volumes([(volume, folder / f"{name}.nrrd") for name, volume in volumes.items()])
        written[subject_id] = {name: str(path) for name, path in zip(volumes, paths)}
    return {"outputs": written}


def _run(args: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    if args.command == "enhance":
        return run_enhance(args, reporter)
    if args.command == "phantom":
        return run_phantom(args)
    from .demo import run_demo

    return run_demo(args, reporter)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    json_mode = getattr(args, "progress", "none") == "json"
    reporter = Reporter(getattr(args, "progress", "none"))
    try:
        try:
            result = _run(args, reporter)
        finally:
            reporter.close()
    except Cancelled:
        if json_mode:
            emit(sys.stdout, "cancelled")
        else:
            print("cancelled", file=sys.stderr)
        return 130
    except CMRSynthesisError as error:
        if json_mode:
            emit(sys.stdout, "error", message=str(error))
        else:
            print(f"error: {error}", file=sys.stderr)
        return 1
    if json_mode:
        emit(sys.stdout, "result", **result)
    elif args.command == "demo":
        print(result["table"])
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
