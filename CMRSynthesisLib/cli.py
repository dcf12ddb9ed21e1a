"""`cmrsynth`: the command line over CMRSynthesisLib (also what the Slicer module runs out of process).

Every command checks its inputs before it writes anything, writes outputs atomically and never onto an input, and
exits 1 with a one-line message naming the problem on bad input (`batch`: when any study failed, after running all
the others). With `--progress json` it prints one JSON object per line on stdout: {"type": "progress", ...} updates,
then {"type": "result", ...} or {"type": "error", ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .analysis.t1mapping import SCHEME_CHOICES
from .diffusion.samplers import DEFAULT_DDIM_STEPS
from .errors import Cancelled, CMRSynthesisError
from .evaluation import TUNING_SPLIT
from .method_commands import add_method_command, add_settings, run_method
from .methods.registry import method_specs
from .progress import MODES, Reporter, emit, stage


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

    phantom = commands.add_parser("phantom", help="write synthetic subjects: cine, MOLLI, T1 map, LGE, T2w, labels, "
                                  "true motion, each folder described by subject.json")
    phantom.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per subject)")
    phantom.add_argument("--split", choices=("train", "validation", "test", "ood"), default="test",
                         help="ood: the out-of-distribution test family (wider acquisition ranges)")
    phantom.add_argument("--subjects", type=int, default=2, help="how many subjects of the split")

    demo = commands.add_parser("demo", help="enhance held-out phantom subjects; figure, metrics JSON and table")
    demo.add_argument("--out", type=Path, default=Path("demo_output"))
    demo.add_argument("--split", default="test,ood", choices=("test", "ood", "test,ood"),
                      help="families to evaluate: the held-out test split, the out-of-distribution family, or both")
    demo.add_argument("--subjects", type=int, default=6, help="held-out subjects with scar per family")
    demo.add_argument("--slices", type=int, default=2, help="scarred slices per subject (largest scar first)")
    _add_sampling(demo)

    t1map = commands.add_parser("t1map", help="T1 map from MOLLI / ShMOLLI / Look-Locker source images",
                                description="Fit S(TI) = A - B exp(-TI/T1*) with polarity restoration in every "
                                "voxel (ShMOLLI: conditional fit) and write T1 = T1* (B/A - 1) in ms; A, B, T1*, R2 "
                                "and the failed-fit mask are written beside it (T1_A.nrrd, ...).")
    t1map.add_argument("--molli", type=Path, required=True,
                       help="DICOM folder (sub-folders too; scanner maps in it are skipped), DICOM file, or a 4D "
                       "NIfTI / NRRD file (inversion time, z, y, x) with --ti")
    t1map.add_argument("--out", type=Path, required=True, help="T1 map to write (.nii.gz, .nrrd, ...)")
    t1map.add_argument("--ti", help="inversion times in ms in acquisition order, e.g. 100,180,260, or a JSON sidecar "
                       "{\"inversion_times_ms\": [...]}; used when the files hold none")
    t1map.add_argument("--mask", type=Path, help="fit only inside this mask (on the source images' grid)")
    t1map.add_argument("--scheme", choices=SCHEME_CHOICES, default="auto", help="auto recognises ShMOLLI from the "
                       "acquisition order of the inversion times")
    t1map.add_argument("--progress", choices=MODES, default="bar", help="bar, json (one line per update) or none")

    ecv = commands.add_parser("ecv", help="extracellular volume map (%%) from native and post-contrast T1 maps")
    ecv.add_argument("--native", type=Path, required=True, help="native T1 map (ms)")
    ecv.add_argument("--post", type=Path, required=True, help="post-contrast T1 map (ms)")
    ecv.add_argument("--haematocrit", "--hct", type=float, required=True, help="haematocrit as a fraction, e.g. 0.42")
    ecv.add_argument("--blood", type=Path, required=True, help="LV blood-pool mask on the native map's grid")
    ecv.add_argument("--myocardium", type=Path, help="myocardium mask on the native map's grid (ECV only there)")
    ecv.add_argument("--resample", action="store_true",
                     help="interpolate the post-contrast map onto the native grid when they lie at different positions")
    ecv.add_argument("--out", type=Path, required=True, help="ECV map to write (%%)")
    ecv.add_argument("--progress", choices=MODES, default="bar", help="json: the result as one JSON line (for programs)")

    aha = commands.add_parser("aha", help="AHA 16-segment statistics of a map, bullseye PNG and tables",
                              description="Segment the LV myocardium into the 16 AHA segments (Cerqueira et al. "
                              "2002), anchored at the RV insertion points, and report mean, SD, median and N of the "
                              "map per segment. Voxels of T1 / ECV maps <= 0 (failed fits) are left out.")
    aha.add_argument("--myocardium", type=Path, required=True, help="LV myocardium mask (non-zero inside)")
    aha.add_argument("--map", type=Path, required=True, help="map on the mask's grid (T1 in ms, ECV in %%, ...)")
    aha.add_argument("--blood", type=Path, help="LV blood-pool mask (better slice centres)")
    anchor = aha.add_mutually_exclusive_group(required=True)
    anchor.add_argument("--rv", type=Path, help="RV mask: the insertion points are where it meets the LV")
    anchor.add_argument("--insertion-points", help="the two RV insertion points in mm (see --points-space), "
                        "written with '=' so a leading minus sign is not read as an option: "
                        "--insertion-points='-12.5,40,3;-30,22.1,5'")
    aha.add_argument("--points-space", choices=("ras", "lps"), default="ras",
                     help="coordinates of --insertion-points: ras as Slicer shows them, or lps as DICOM / ITK")
    aha.add_argument("--quantity", default="t1_native", help="t1_native, t1_post, ecv, t2, or any name")
    aha.add_argument("--units", help="units of the map (default: the quantity's)")
    aha.add_argument("--base", choices=("auto", "first", "last"), default="auto",
                     help="which end of the stack is the base: auto (from the patient orientation), or the first / "
                     "last slice")
    aha.add_argument("--allow-missing", action="store_true",
                     help="report segments without myocardium as missing instead of stopping")
    aha.add_argument("--out-dir", type=Path, required=True,
                     help="folder for aha_segments.nrrd, aha_<quantity>.csv / .json and the bullseye PNG")
    aha.add_argument("--progress", choices=MODES, default="bar", help="json: the result as one JSON line (for programs)")

    strain = commands.add_parser(
        "strain", help="radial and circumferential myocardial strain of a cine: maps, curves, peaks, bullseye",
        description="Track the myocardium from ED to every frame (TV-L1 optical flow) and write Green-Lagrange "
        "radial and circumferential strain (fractions, negative = shortening) as 4D maps on the ED grid, peak maps, "
        "strain.json (global and AHA-segment curves and peaks), a curves PNG and, with an RV mask or insertion "
        "points, a bullseye of peak circumferential strain.")
    strain.add_argument("--cine", type=Path, required=True,
                        help="cine: 4D NIfTI / NRRD (time last on disk) or a DICOM cine folder")
    strain.add_argument("--frame-interval-ms", type=float, help="time between frames when the cine holds no times")
    strain.add_argument("--myocardium", type=Path,
                        help="LV myocardium mask at ED on the cine's grid (default: the cine segmenter's)")
    strain.add_argument("--blood", type=Path, help="LV blood-pool mask at ED (slice centres)")
    anchor = strain.add_mutually_exclusive_group()
    anchor.add_argument("--rv", type=Path, help="RV mask at ED: anchors the AHA segments where it meets the LV")
    anchor.add_argument("--insertion-points", help="the two RV insertion points in mm (see --points-space), "
                        "written with '=': --insertion-points='-12.5,40,3;-30,22.1,5'")
    strain.add_argument("--points-space", choices=("ras", "lps"), default="ras",
                        help="coordinates of --insertion-points: ras as Slicer shows them, or lps as DICOM / ITK")
    strain.add_argument("--base", choices=("auto", "first", "last"), default="auto",
                        help="which end of the stack is the base (AHA levels)")
    strain.add_argument("--ed", type=int, help="ED frame index, from 0 (default: from the segmenter's LV volume "
                        "curve; with --myocardium, frame 0)")
    strain.add_argument("--es", type=int, help="ES frame index (default: from the LV volume curve; with "
                        "--myocardium, the frame of peak global circumferential shortening)")
    strain.add_argument("--device", default="auto", help="for the cine segmenter: auto, cpu or cuda")
    strain.add_argument("--segmenter", type=Path, help="cine segmenter checkpoint folder (default: shipped)")
    strain.add_argument("--out-dir", type=Path, required=True, help="folder for the maps, strain.json and PNGs")
    strain.add_argument("--progress", choices=MODES, default="bar", help="bar, json (one line per update) or none")

    specs = method_specs(strict=False).values()
    for spec in specs:
        add_method_command(commands, spec)
    batch = commands.add_parser(
        "batch", help="run a method over a list of studies: resumable, one status row per study, shared by torchrun "
        "ranks", description="Run METHOD over every study of a CSV list (a 'study' column and one column per input "
        "role). Outputs go to OUT_DIR/<study>/; a study already done is skipped, a failing one is recorded in "
        "OUT_DIR/batch_status.csv and the others go on. Under torchrun each rank takes its share of the list.")
    methods = batch.add_subparsers(dest="batch_method", required=True, metavar="METHOD")
    for spec in specs:
        aliases = [spec.command] if spec.command != spec.name else []
        parser_of_method = methods.add_parser(spec.name, aliases=aliases, help=spec.help)
        parser_of_method.add_argument("--studies", type=Path, required=True,
                                      help=f"CSV list: columns study, {', '.join(role.name for role in spec.inputs)}")
        parser_of_method.add_argument("--out-dir", type=Path, required=True, help="folder of the study folders")
        add_settings(parser_of_method, spec)
        parser_of_method.set_defaults(batch=True)
    evaluate = commands.add_parser(
        "evaluate", help="run held-out phantom subjects through a method and its baselines: metrics.json, figure, "
        "table", description="Evaluate METHOD on held-out phantom subjects of each split against its baselines, all "
        "with the same settings and seed, in one run. Writes OUT_DIR/<split>/metrics.json (mean, SD and n per model "
        "and metric, every case, paired Wilcoxon tests of the method against each model), figure.png and table.md, "
        "and OUT_DIR/table.md. A baseline that cannot run here is reported as unavailable, with the reason.")
    evaluated = evaluate.add_subparsers(dest="evaluate_method", required=True, metavar="METHOD")
    for spec in specs:
        if spec.evaluation is None:
            continue
        aliases = [spec.command] if spec.command != spec.name else []
        parser_of_method = evaluated.add_parser(spec.name, aliases=aliases, help=spec.help)
        parser_of_method.add_argument("--out-dir", type=Path, required=True, help="folder for the results")
        parser_of_method.add_argument("--split", default=",".join(spec.evaluation.splits),
                                      help=f"held-out splits, separated by commas: "
                                      f"{', '.join(spec.evaluation.splits)}; or {TUNING_SPLIT} (the subjects watched "
                                      "during training) to choose settings before the held-out run")
        parser_of_method.add_argument("--subjects", type=int, default=spec.evaluation.subjects,
                                      help="phantom subjects per split")
        parser_of_method.add_argument("--baselines-from", type=Path,
                                      help="folder with the baselines' checkpoints under their shipped names (e.g. "
                                      "another training seed's models; default: the shipped ones)")
        add_settings(parser_of_method, spec, evaluation=True)
        parser_of_method.set_defaults(evaluate=True)
    return parser


def run_t1map(args: argparse.Namespace, progress: Reporter) -> dict[str, Any]:
    from .analysis.t1mapping import t1_maps
    from .io import check_output_paths, read_volume, write_volumes
    from .io.itk_files import WRITE_SUFFIXES, itk_suffix
    from .io.t1_series import parse_inversion_times, read_t1_series

    series = read_t1_series(args.molli, parse_inversion_times(args.ti))
    protected = list(series.images.metadata.get("source_files") or [args.molli]) + ([args.mask] if args.mask else [])
    suffix = itk_suffix(args.out, WRITE_SUFFIXES) or args.out.suffix
    stem = args.out.name[: len(args.out.name) - len(suffix)]
    targets = {"t1": args.out, **{name: args.out.with_name(f"{stem}_{label}{suffix}") for name, label in (
        ("a", "A"), ("b", "B"), ("t1_star", "T1star"), ("r2", "R2"), ("failed", "failed"))}}
    check_output_paths(list(targets.values()), protected=protected)
    mask = read_volume(args.mask) if args.mask else None
    maps = t1_maps(series, mask, scheme=args.scheme, progress=progress)
    written = write_volumes([(maps[name], path) for name, path in targets.items()], protected=protected)
    slices = []
    for z in range(series.slices):
        good, failed = maps["t1"].array[z] > 0, maps["failed"].array[z] > 0  # failed fits hold T1 0
        slices.append({"slice": z, "scheme": maps["t1"].metadata["t1_scheme_per_slice"][z],
                       "inversion_times_ms": series.inversion_times_ms[:, z].tolist(),
                       "fitted_voxels": int(good.sum() + failed.sum()), "failed_voxels": int(failed.sum()),
                       "median_t1_ms": float(np.median(maps["t1"].array[z][good])) if good.any() else None})
    summary = {"inversion_time_source": series.time_source, "acquisition_order_source": series.order_source,
               "images_per_slice": int(series.images.array.shape[0]), "slices": slices,
               "slice_positions_mm": series.images.metadata.get("slice_positions_mm"), "notes": series.notes,
               "skipped": series.skipped}
    return {"outputs": {key: str(path.resolve()) for key, path in zip(targets, written)}, "summary": summary}


def run_ecv(args: argparse.Namespace, progress: Reporter) -> dict[str, Any]:
    from .analysis.ecv import ecv_map
    from .io import check_output_paths, read_volume, write_volume

    inputs = [path for path in (args.native, args.post, args.blood, args.myocardium) if path is not None]
    check_output_paths([args.out], protected=inputs)
    progress(0.0, "reading the maps")
    native, post, blood = (read_volume(path) for path in (args.native, args.post, args.blood))
    myocardium = read_volume(args.myocardium) if args.myocardium else None
    progress(0.5, "computing ECV")
    ecv, summary = ecv_map(native, post, args.haematocrit, blood, myocardium=myocardium, resample=args.resample)
    written = write_volume(ecv, args.out, protected=inputs)
    progress(1.0, "ECV written")
    return {"outputs": {"ecv": str(written.resolve())}, "summary": summary}


def run_aha(args: argparse.Namespace, progress: Reporter) -> dict[str, Any]:
    from .analysis.aha import aha_segments, segment_statistics, write_segment_table
    from .analysis.bullseye import write_bullseye_png
    from .display import display_for
    from .io import check_output_paths, read_volume, write_volume

    inputs = [path for path in (args.myocardium, args.map, args.blood, args.rv) if path is not None]
    stem = args.out_dir / f"aha_{args.quantity}"
    outputs = {"segments": args.out_dir / "aha_segments.nrrd", "csv": stem.with_suffix(".csv"),
               "json": stem.with_suffix(".json"), "bullseye": args.out_dir / f"aha_{args.quantity}_bullseye.png"}
    check_output_paths([outputs["segments"]], protected=inputs)
    check_output_paths([outputs[key] for key in ("csv", "json", "bullseye")], protected=inputs, images=False)
    progress(0.0, "reading the masks and the map")
    myocardium, values = read_volume(args.myocardium), read_volume(args.map)
    progress(0.3, "segmenting the myocardium")
    segmentation = aha_segments(
        myocardium, blood_pool=read_volume(args.blood) if args.blood else None,
        rv=read_volume(args.rv) if args.rv else None,
        insertion_points_lps=_points_lps(args.insertion_points, args.points_space) if args.insertion_points else None,
        base=args.base, allow_missing=args.allow_missing)
    physical = args.quantity.startswith("t1") or args.quantity in ("ecv", "t2")
    rows = segment_statistics(segmentation, values, mask=values.array > 0 if physical else None)
    progress(0.7, "writing the segments, tables and bullseye")
    units = args.units or display_for(args.quantity).units
    write_volume(segmentation.labels, outputs["segments"], protected=inputs)
    write_segment_table(rows, outputs["csv"], outputs["json"], quantity=args.quantity, units=units, protected=inputs)
    write_bullseye_png(rows, outputs["bullseye"], protected=inputs, quantity=args.quantity, units=units)
    progress(1.0, "AHA segments written")
    summary = {"quantity": args.quantity, "units": units, "segments": rows, "missing": segmentation.missing,
               "levels": {str(z): level for z, level in sorted(segmentation.levels.items())}}
    return {"outputs": {key: str(path.resolve()) for key, path in outputs.items()}, "summary": summary}


def run_strain(args: argparse.Namespace, progress: Reporter) -> dict[str, Any]:
    from .analysis.cardiac_phases import blood_pool_volumes_ml, ed_es_frames
    from .analysis.strain import check_strain_inputs, myocardial_strain, write_strain_figures
    from .io import atomic_write_bytes, check_output_paths, read_volume, write_volumes
    from .io.cine import read_cine, sidecar_path, write_cine

    inputs = [path for path in (args.cine, args.myocardium, args.blood, args.rv) if path is not None]
    anchored = args.rv is not None or args.insertion_points is not None or args.myocardium is None
    images = {name: args.out_dir / f"strain_{name}.nii.gz" for name in ("radial", "circumferential", "radial_peak",
                                                                       "circumferential_peak")}
    files = {"json": args.out_dir / "strain.json", "curves": args.out_dir / "strain_curves.png",
             **{f"{name}_times": sidecar_path(images[name]) for name in ("radial", "circumferential")}}
    segment_files = {"segments": args.out_dir / "strain_aha_segments.nrrd",
                     "bullseye": args.out_dir / "strain_bullseye.png"}
    if anchored:
        images["segments"], files["bullseye"] = segment_files["segments"], segment_files["bullseye"]
    check_output_paths(list(images.values()), protected=inputs)
    check_output_paths(list(files.values()), protected=inputs, images=False)
    progress(0.0, "reading the cine")
    cine = read_cine(args.cine, frame_interval_ms=args.frame_interval_ms)
    check_strain_inputs(cine, 0 if args.ed is None else args.ed, args.es)
    blood = read_volume(args.blood) if args.blood else None
    rv = read_volume(args.rv) if args.rv else None
    es, extra = args.es, {}
    if args.myocardium is not None:
        myocardium = read_volume(args.myocardium)
        ed = 0 if args.ed is None else args.ed
        sources = {"ed": "user" if args.ed is not None else "frame 0 (cine assumed to start at the R wave)",
                   "es": "user" if args.es is not None else None}
        extra["notes"] = [] if args.ed is not None else ["ED = frame 0: the cine is assumed to start at the R wave"]
        start = 0.05
    else:
        labels = _segment_cine(cine, args, stage(progress, 0.0, 0.3))
        curve = blood_pool_volumes_ml(labels.array, cine.spacing)
        ed_curve, es_curve = ed_es_frames(curve)
        ed = ed_curve if args.ed is None else args.ed
        sources = {"ed": "LV blood-pool volume curve (largest)" if args.ed is None else "user",
                   "es": "LV blood-pool volume curve (smallest)" if args.es is None else "user"}
        es = es_curve if args.es is None else args.es
        extra["lv_blood_volume_ml"] = curve.tolist()
        myocardium = labels.with_array((labels.array[ed] == 2).astype(np.uint8))
        blood = blood if blood is not None else labels.with_array((labels.array[ed] == 1).astype(np.uint8))
        if rv is None and args.insertion_points is None:
            rv = labels.with_array((labels.array[ed] == 3).astype(np.uint8))
            extra["notes"] = [("the AHA segments are anchored at the cine segmenter's RV at ED (give --rv or "
                               "--insertion-points to anchor them yourself)")]
        start = 0.3
    result = myocardial_strain(
        cine, myocardium, ed_frame=ed, es_frame=es, blood_pool_ed=blood, rv_ed=rv,
        insertion_points=_points_lps(args.insertion_points, args.points_space) if args.insertion_points else None,
        base=args.base, progress=stage(progress, start, 0.95))
    progress(0.95, "writing the maps, strain.json and figures")
    volumes = [(result.peak_radial, images["radial_peak"]), (result.peak_circumferential, images["circumferential_peak"])]
    if anchored:
        volumes.append((result.segmentation.labels, images["segments"]))
    write_volumes(volumes, protected=inputs)
    for name, maps in (("radial", result.radial), ("circumferential", result.circumferential)):
        write_cine(maps, images[name], protected=inputs, maps=True)  # frame interval in the header, times in the JSON
    details = result.summary()
    stale = [path for path in segment_files.values()
             if not anchored and path.exists() and path.resolve() not in {item.resolve() for item in inputs}]
    for path in stale:  # an earlier strain run's segment outputs (names only strain writes) would contradict this one
        path.unlink()
    removed = [f"removed {path.name} of an earlier run (no AHA segments without an RV mask or insertion points)"
               for path in stale]
    summary = {"ed_frame": result.ed_frame, "es_frame": result.es_frame,
               "ed_es_source": {"ed": sources["ed"], "es": sources["es"] or result.es_source}, **details,
               **extra, "notes": cine.metadata.get("notes", []) + extra.get("notes", []) + details["notes"] + removed}
    atomic_write_bytes(files["json"], (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    write_strain_figures(result, files["curves"], files.get("bullseye"), protected=inputs)
    progress(1.0, "strain written")
    outputs = {**images, **files}
    return {"outputs": {key: str(path.resolve()) for key, path in outputs.items()}, "summary": summary}


def _segment_cine(cine: Any, args: argparse.Namespace, progress: Any) -> Any:
    """Labels (t, z, y, x) of every frame by the cine segmenter: 1 LV blood, 2 LV myocardium, 3 RV blood."""
    from .errors import InputError

    try:
        from .methods.cine_segmentation import segment_cine
    except ModuleNotFoundError as err:
        if err.name != f"{__package__}.methods.cine_segmentation":
            raise
        raise InputError("no cine segmenter is installed; give --myocardium (the LV myocardium mask at ED, on the "
                         "cine's grid) and --rv or --insertion-points for the AHA segments") from err
    return segment_cine(cine, None, device=args.device, checkpoint=args.segmenter, progress=progress)


def _points_lps(text: str, space: str) -> list[list[float]]:
    """'x,y,z;x,y,z' in RAS or LPS millimetres -> two LPS points."""
    from .errors import InputError

    try:
        points = [[float(value) for value in point.split(",")] for point in text.split(";") if point.strip()]
    except ValueError as err:
        raise InputError(f"insertion points must be 'x,y,z;x,y,z' in mm; got {text!r}") from err
    if len(points) != 2 or any(len(point) != 3 for point in points):
        raise InputError(f"give exactly two insertion points of three coordinates, 'x,y,z;x,y,z'; got {text!r}")
    sign = np.array([-1.0, -1.0, 1.0]) if space == "ras" else np.ones(3)  # RAS <-> LPS: x and y change sign
    return [(np.asarray(point) * sign).tolist() for point in points]


def run_batch_command(spec: Any, args: argparse.Namespace, progress: Reporter) -> dict[str, Any]:
    """`cmrsynth batch METHOD`: the study list read and checked, the model loaded once on this rank's device, this
    rank's share of the studies run (see `batch.run_batch`)."""
    from .batch import read_study_list, run_batch
    from .distributed import setup, teardown
    from .io.writing import check_writable_folder

    studies = read_study_list(args.studies, spec)
    check_writable_folder(args.out_dir, args.out_dir / "batch_status.csv")
    context = setup(args.device)
    try:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        device = str(context.device) if context.world_size > 1 else args.device
        method = spec.load(args.checkpoint, device, **{role.name: getattr(args, role.name)
                                                       for role in spec.checkpoints[1:]})
        result = run_batch(spec, method, studies, args.out_dir, args, context, progress)
    finally:
        teardown(context)
    outputs = {"status_csv": str((args.out_dir / "batch_status.csv").resolve())} if context.is_main else {}
    return {"outputs": outputs, "summary": {"rank": context.rank, "world_size": context.world_size, **result}}


def run_evaluate_command(spec: Any, args: argparse.Namespace, progress: Reporter) -> dict[str, Any]:
    """`cmrsynth evaluate METHOD`: the method's declared evaluation (`evaluation.evaluate`) on the chosen splits, with
    the command line's settings, checkpoints and device."""
    from .evaluation import evaluate, parse_splits
    from .method_commands import method_options

    result = evaluate(spec, args.out_dir, splits=parse_splits(args.split, spec.evaluation), subjects=args.subjects,
                      options=method_options(spec, args), checkpoint=args.checkpoint,
                      checkpoints={role.name: getattr(args, role.name) for role in spec.checkpoints[1:]},
                      device=args.device, progress=progress, baselines_from=args.baselines_from)
    result.pop("documents")  # in metrics.json; the result keeps the summary
    return result


def run_phantom(args: argparse.Namespace, progress: Reporter) -> dict[str, Any]:
    from . import phantom

    ids = phantom.subject_ids(args.split, args.subjects)
    written = {}
    for done, subject_id in enumerate(ids):
        progress(done / max(len(ids), 1), f"subject {subject_id}")
        folder = args.out / f"subject_{subject_id:07d}"
        phantom.write_subject(subject_id, folder)
        written[subject_id] = str(folder / "subject.json")
    return {"outputs": written}


def _run(args: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    if args.command == "phantom":
        return run_phantom(args, reporter)
    if args.command == "t1map":
        return run_t1map(args, reporter)
    if args.command == "ecv":
        return run_ecv(args, reporter)
    if args.command == "aha":
        return run_aha(args, reporter)
    if args.command == "strain":
        return run_strain(args, reporter)
    if getattr(args, "evaluate", False):
        return run_evaluate_command(method_specs(strict=False)[args.method], args, reporter)
    if getattr(args, "batch", False):
        return run_batch_command(method_specs(strict=False)[args.method], args, reporter)
    if getattr(args, "method", None):
        return run_method(method_specs(strict=False)[args.method], args, reporter)
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
    elif args.command in ("demo", "evaluate"):
        print(result["table"])
    else:
        print(json.dumps(result, indent=2))
    failed = result.get("summary", {}).get("counts", {}).get("failed", 0) if getattr(args, "batch", False) else 0
    if failed:
        total = len(result["summary"]["studies"])
        others = " (the others ran)" if failed < total else ""
        print(f"error: {failed} of {total} studies failed{others}: see {result['outputs']['status_csv']}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
