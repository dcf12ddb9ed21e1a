"""The `cmrsynth` sub-command of every registered method, built from its declaration (`methods.registry.MethodSpec`).

Options: one per input role (--<role>, read by its kind: a cine from a 4D file or a DICOM cine, MOLLI source images
from a DICOM folder or a 4D file with --ti, any other image with `io.read_volume`), --out for the main output and
--<output>-out for the others, one per checkpoint role (--checkpoint, ...: default the shipped demo model), one per
option, the sampling settings of a diffusion method, --device and --progress. The command checks its output paths
before the long work, never writes onto an input, writes a cine-shaped output as a 4D file with its trigger-time
sidecar (`io.cine.write_cine`) and every other output all or nothing (`io.write_volumes`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .methods.registry import MethodSpec, Option
from .progress import MODES, Reporter, stage


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    if option.type is bool:  # --name / --no-name, so a default of True can be switched off
        parser.add_argument(_flag(option.name), action=argparse.BooleanOptionalAction, default=bool(option.default),
                            help=option.help)
        return
    shown = "" if option.default is None else " (default: %(default)s)"
    parser.add_argument(_flag(option.name), type=option.type, default=option.default, choices=option.choices,
                        help=option.help + shown)


def add_method_command(commands: Any, spec: MethodSpec) -> argparse.ArgumentParser:
    """Add the sub-command of `spec` to an argparse sub-parser collection; returns the new parser."""
    parser = commands.add_parser(spec.command, help=spec.help, description=f"{spec.help}. Method: {spec.paper}.")
    for role in spec.inputs:
        parser.add_argument(_flag(role.name), type=Path, required=role.required, help=role.help)
    main, *others = spec.outputs
    parser.add_argument("--out", type=Path, required=True, help=f"{main.help}: a .nii.gz, .nii, .nrrd or .mha file, or "
                        "with --format dicom a new folder")
    for role in others:
        parser.add_argument(_flag(f"{role.name}_out"), type=Path, help=f"also write: {role.help}")
    parser.add_argument("--format", choices=("dicom", "nifti", "nrrd", "mha"),
                        help="output format (default: from the file suffix); dicom: each output a new DICOM series "
                        "folder marked SYNTHETIC (DERIVED for labels), in the source study when the input is DICOM")
    add_settings(parser, spec)
    return parser


def add_settings(parser: argparse.ArgumentParser, spec: MethodSpec, evaluation: bool = False) -> None:
    """The options every run of `spec` takes besides its input and output paths: reading options of its input kinds,
    its own options (with `evaluation`, only those that are not facts of one study: `Option.per_study`), sampling
    settings, checkpoints, --device and --progress."""
    parser.set_defaults(method=spec.name)
    kinds = {role.kind for role in spec.inputs}
    if "cine" in kinds:
        parser.add_argument("--frame-interval-ms", type=float, help="time between frames when the cine holds no times")
    if "molli" in kinds:
        parser.add_argument("--ti", help="inversion times in ms in acquisition order (e.g. 100,180,260) or a JSON "
                            "sidecar, when the MOLLI files hold none")
    for option in spec.options:
        if not (evaluation and option.per_study):
            _add_option(parser, option)
    if spec.sampling is not None:
        sampling = spec.sampling
        if sampling.steps is not None:
            parser.add_argument("--steps", type=int, default=sampling.steps, help=sampling.steps_help)
        parser.add_argument("--samples", type=int, default=sampling.samples,
                            help="k samples, run as one batch: their mean is the result, their SD the uncertainty "
                            "(default: %(default)s)")
        parser.add_argument("--sampler", choices=("ddpm", "ddim"), default=sampling.sampler,
                            help="ddpm: every step; ddim: a faster coarse grid (default: %(default)s)")
        parser.add_argument("--ddim-steps", type=int, default=sampling.ddim_steps, help="DDIM steps (with --sampler "
                            "ddim; default: %(default)s)")
        parser.add_argument("--ddim-eta", type=float, default=sampling.ddim_eta, help="DDIM noise level in [0, 1] "
                            "(with --sampler ddim): 0 deterministic, 1 as much noise as DDPM (default: %(default)s)")
        parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same result, per slice "
                            "(default: %(default)s)")
    for role in spec.checkpoints:
        parser.add_argument(_flag(role.name), type=Path, help=f"{role.help} (default: the shipped demo model "
                            f"{role.shipped})")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--progress", choices=MODES, default="bar", help="bar, json (one line per update) or none")


def read_input(kind: str, path: Path, args: argparse.Namespace) -> tuple[Any, list[Path]]:
    """The input of a role of `kind` read from `path`, and the files it was read from (protected from writing)."""
    from .io import read_volume

    if kind == "cine":
        from .io.cine import read_cine_or_stack

        volume = read_cine_or_stack(path, args.frame_interval_ms)
        return volume, [path]
    if kind == "molli":
        from .io.t1_series import parse_inversion_times, read_t1_series

        series = read_t1_series(path, parse_inversion_times(args.ti))
        return series, [path, *(series.images.metadata.get("source_files") or [])]
    if kind == "phenotype":
        from .errors import InputError

        try:
            return json.loads(Path(path).read_text(encoding="utf-8")), [path]
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: the phenotype must be a readable JSON file: {error}") from error
    return read_volume(path), [path]


def read_inputs(spec: MethodSpec, paths: dict[str, Path | None], args: argparse.Namespace
                ) -> tuple[dict[str, Any], list[Path]]:
    """Every input role of `spec` read from its path (None: absent, for optional roles), and all files read (to be
    protected from writing)."""
    inputs: dict[str, Any] = {}
    protected: list[Path] = []
    for role in spec.inputs:
        path = paths.get(role.name)
        inputs[role.name], files = read_input(role.kind, path, args) if path is not None else (None, [])
        protected += [path, *files] if path is not None else []
    return inputs, protected


def cine_shaped(spec: MethodSpec, inputs: dict[str, Any], names: Any) -> set[str]:
    """The outputs among `names` written as cines: those declared `frames` whose grid input is 4D."""
    roles = {role.name: role for role in spec.outputs}
    return {name for name in names if roles[name].frames
            and getattr(getattr(inputs[roles[name].grid_input(inputs)], "array", None), "ndim", 0) == 4}


def check_outputs(paths: dict[str, Path], framed: set[str], protected: list[Path]) -> None:
    """OutputError unless every output path can be written without touching an input; cine-shaped outputs need a
    4D NIfTI / NRRD name and a writable trigger-time sidecar."""
    from .errors import OutputError
    from .io import check_output_paths
    from .io.cine import CINE_SUFFIXES, sidecar_path
    from .io.itk_files import itk_suffix

    for name in framed:
        if itk_suffix(paths[name], CINE_SUFFIXES) is None:
            raise OutputError(f"{paths[name]}: a cine's {name} are written as 4D NIfTI (.nii, .nii.gz) or NRRD (.nrrd)")
        check_output_paths([sidecar_path(paths[name])], protected=protected, images=False)
    check_output_paths(list(paths.values()), protected=protected)


def write_outputs(outputs: dict[str, Any], paths: dict[str, Path], framed: set[str], protected: list[Path]
                  ) -> dict[str, str]:
    """Write the outputs named in `paths` (cine-shaped ones with `write_cine`, the others all or nothing); returns
    the absolute path written for each."""
    from .io import write_volumes
    from .io.cine import write_cine

    written = {name: write_cine(outputs[name], paths[name], protected=protected) for name in framed}
    rest = [name for name in paths if name not in framed]
    written.update(zip(rest, write_volumes([(outputs[name], paths[name]) for name in rest], protected=protected)))
    return {name: str(Path(written[name]).resolve()) for name in paths}


def method_options(spec: MethodSpec, args: argparse.Namespace) -> dict[str, Any]:
    """The `run` keywords (options and sampling settings) the command line takes (`add_settings`)."""
    names = [option.name for option in spec.options] + (list(spec.sampling.defaults()) if spec.sampling else [])
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def load_from_args(spec: MethodSpec, args: argparse.Namespace) -> Any:
    """The method loaded with the command line's checkpoints and device."""
    return spec.load(args.checkpoint, args.device, **{role.name: getattr(args, role.name)
                                                       for role in spec.checkpoints[1:]})


def summarise(spec: MethodSpec, method: Any, inputs: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """The result's facts: device, the method's own summary, the inputs' reading notes and skipped files."""
    summary: dict[str, Any] = {"device": str(method.device)}
    if spec.summarise is not None:
        summary.update(spec.summarise(inputs, outputs))
    images = [value for value in inputs.values() if hasattr(value, "metadata")]
    summary["notes"] = [note for image in images for note in image.metadata.get("notes") or []] + list(
        summary.get("notes") or [])
    summary["skipped"] = [item for image in images for item in image.metadata.get("skipped") or []]
    return summary


def run_method(spec: MethodSpec, args: argparse.Namespace, progress: Reporter) -> dict[str, Any]:
    """Run the method of `spec` with the parsed command line: check the outputs, read the inputs, load the
    checkpoints, run, write. Returns {"outputs": {role: path}, "summary": {...}}."""
    from .io import check_output_paths

    paths = {spec.main_output.name: args.out}
    paths.update({role.name: getattr(args, f"{role.name}_out") for role in spec.outputs[1:]
                  if getattr(args, f"{role.name}_out") is not None})
    given = {role.name: getattr(args, role.name) for role in spec.inputs}
    dicom = args.format == "dicom"
    if dicom:
        _check_dicom_folders(paths, [path for path in given.values() if path is not None])
    else:
        _check_format(paths, args.format)
        check_output_paths(list(paths.values()), protected=[path for path in given.values() if path is not None])
    progress(0.0, "reading the inputs")
    inputs, protected = read_inputs(spec, given, args)
    framed = cine_shaped(spec, inputs, paths)
    if not dicom:
        check_outputs(paths, framed, protected)
    method = load_from_args(spec, args)
    outputs = method.run(inputs, progress=stage(progress, 0.05, 0.95), **method_options(spec, args))
    progress(0.95, "writing the results")
    if dicom:
        written = _write_dicom(spec, args, inputs, outputs, paths)
    else:
        written = write_outputs(outputs, paths, framed, protected)
    progress(1.0, "results written")
    return {"outputs": written, "summary": summarise(spec, method, inputs, outputs)}


def _check_format(paths: dict[str, Path], fmt: str | None) -> None:
    """OutputError when --format names a file format that an output's file name does not end in (None: the
    suffix decides)."""
    from .errors import OutputError
    from .io.itk_files import itk_suffix
    from .io.output import OUTPUT_FORMATS

    if fmt is None:
        return
    for path in paths.values():
        if itk_suffix(path, OUTPUT_FORMATS[fmt]) is None:
            raise OutputError(f"{path}: --format {fmt} writes {' or '.join(OUTPUT_FORMATS[fmt])} files; name the "
                              "output so, or leave out --format (the suffix decides)")


def _check_dicom_folders(paths: dict[str, Path], inputs: list[Path]) -> None:
    """OutputError unless every output is a new or empty folder that is none of the inputs (nor inside one)."""
    from .errors import OutputError
    from .io.dicom_export import check_new_folder
    from .io.itk_files import itk_suffix

    for name, folder in paths.items():
        if itk_suffix(folder):
            raise OutputError(f"{folder}: --format dicom writes each output as a folder of DICOM files; give a folder "
                              "name, not an image file name (or leave out --format to write that file)")
        check_new_folder(folder)
        for source in inputs:
            if folder.resolve() == source.resolve() or source.resolve() in folder.resolve().parents:
                raise OutputError(f"{folder}: the DICOM series of {name} would go into the input {source}; choose "
                                  "a folder outside the inputs")
    if len({folder.resolve() for folder in paths.values()}) < len(paths):
        raise OutputError("two outputs name the same DICOM folder; give each its own")


def _write_dicom(spec: MethodSpec, args: argparse.Namespace, inputs: dict[str, Any], outputs: dict[str, Any],
                 paths: dict[str, Path]) -> dict[str, str]:
    """Each output as a DICOM series (io.derived_series.write_derived_series; the folders checked by
    `_check_dicom_folders`): images, maps and SD maps marked SYNTHETIC, labels and masks DERIVED; the checkpoint named
    in the header; the DICOM files of the input the output lies on (its declared grid) as the source, so the series
    joins that study and references them (none for a NIfTI / NRRD input: one new study for all the outputs). The
    outputs' series numbers follow one another from the first's (its source's + 1000), so none is listed twice."""
    from .io.derived_series import write_derived_series
    from .io.itk_files import itk_suffix

    roles = {role.name: role for role in spec.outputs}
    checkpoint = str(args.checkpoint) if args.checkpoint else f"shipped {spec.checkpoints[0].shipped}"
    first = None
    for index, (name, folder) in enumerate(paths.items()):
        grid = getattr(inputs[roles[name].grid_input(inputs)], "metadata", {})
        source = [path for path in grid.get("source_files") or [] if not itk_suffix(path)]
        joined = {} if first is None else {"series_number": first.series_number + index}
        if first is not None and first.new_study and not source:
            joined["new_study"] = {"StudyInstanceUID": first.study_instance_uid}
        written = write_derived_series(outputs[name], folder, method=spec.name, checkpoint=checkpoint,
                                       synthetic=roles[name].is_synthetic, source=source,
                                       description=f"{spec.title}: {roles[name].name}", **joined)
        first = first or written
    return {name: str(folder.resolve()) for name, folder in paths.items()}
