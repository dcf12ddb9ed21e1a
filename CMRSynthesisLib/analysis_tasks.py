"""The Slicer panel's analysis tasks (T1 map, ECV, AHA segments, cine strain), without Qt or Slicer: what Apply still
waits for, the `cmrsynth` command each runs (t1map, ecv, aha, strain) from the files the panel wrote for its inputs,
and the tables, sentence and kept copies of files made from what the command wrote.

The checks take what is chosen for each input as any object (e.g. an MRML node), None meaning nothing chosen. The
command builders return (sub-command, options) for `process.cli_command`, with the option names of the parser in
`cli.build_parser` and the outputs in the run's temporary folder. Importing this module needs only the standard
library (numbers of placed points may come as numpy arrays).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .method_tasks import CHOOSE_CINE, MolliChoice

TWO_ANCHORS = "Anchor the segments with either an RV mask or insertion points, not both."
GLOBAL_STRAIN_CURVES = ("global circumferential (%)", "global radial (%)")
"""Columns of the strain curves table with the global curves (emphasised in the plot)."""


# ---- what Apply waits for ----------------------------------------------------------------------------------------


def t1map_missing(molli: MolliChoice, *, fit_mask: Any, show_over: Any) -> str:
    """What the T1 map task still needs: readable source images; with a DICOM folder, a fit mask is taken on the grid
    of the 'Show over' volume, which must then be chosen."""
    problem = molli.problem()
    if not problem and molli.folder.strip() and fit_mask is not None and show_over is None:
        return ("With a DICOM folder, the fit mask is taken on the grid of the 'Show over' volume: choose the loaded "
                "source series there.")
    return problem


def ecv_missing(*, native: Any, post: Any, blood: Any) -> str:
    """What the ECV task still needs: both T1 maps and the blood pool."""
    if native is None:
        return "Choose the native T1 map."
    if post is None:
        return "Choose the post-contrast T1 map."
    if blood is None:
        return "Choose the LV blood pool: its native and post-contrast T1s scale the ECV."
    return ""


def aha_missing(*, values: Any, myocardium: Any, rv: Any, points: Any) -> str:
    """What the AHA task still needs: the map, the myocardium, and one anchor (an RV mask or insertion points)."""
    if values is None:
        return "Choose the map to report per segment."
    if myocardium is None:
        return "Choose the LV myocardium to divide into segments."
    if rv is None and points is None:
        return "Anchor the segments: choose an RV mask or the RV insertion points."
    if rv is not None and points is not None:
        return TWO_ANCHORS
    return ""


def strain_missing(cine_name: str | None, frames: int, *, rv: Any, points: Any, ed: int, es: int) -> str:
    """What the cine strain task still needs: a cine (`cine_name`, None: none chosen) of two frames or more, at most
    one way of anchoring the segments, ED / ES frames (counted from 1; 0: found by the command) within the cine."""
    if cine_name is None:
        return CHOOSE_CINE
    if frames < 2:
        return f"The cine '{cine_name}' has {frames} frame(s): strain needs the motion between frames."
    if rv is not None and points is not None:
        return TWO_ANCHORS
    for phase, frame in (("ED", ed), ("ES", es)):
        if frame > frames:
            return f"The {phase} frame {frame} is past the cine's last frame ({frames})."
    return ""


# ---- command lines -----------------------------------------------------------------------------------------------


def t1map_command(workdir: Path, *, molli: Path | None, mask: Path | None, inversion_times: str, scheme: str
                  ) -> tuple[str, dict[str, Any]]:
    """`cmrsynth t1map`: the source images (a DICOM folder or a 4D file), the fit mask on their grid, the inversion
    times (empty: the files' own), the scheme; the T1 map written to workdir/T1.nrrd."""
    return "t1map", {"molli": molli, "out": Path(workdir) / "T1.nrrd", "ti": inversion_times.strip() or None,
                     "mask": mask, "scheme": scheme}


def ecv_command(workdir: Path, *, native: Path, post: Path, blood: Path, myocardium: Path | None, haematocrit: float,
                resample: bool) -> tuple[str, dict[str, Any]]:
    """`cmrsynth ecv`: both T1 maps, the masks on the native map's grid, the haematocrit; the ECV map written to
    workdir/ECV.nrrd."""
    return "ecv", {"native": native, "post": post, "haematocrit": haematocrit, "blood": blood,
                   "myocardium": myocardium, "resample": resample, "out": Path(workdir) / "ECV.nrrd"}


def aha_command(workdir: Path, *, values: Path, myocardium: Path, blood: Path | None, rv: Path | None,
                points: Sequence[Sequence[float]] | None, quantity: str, allow_missing: bool
                ) -> tuple[str, dict[str, Any]]:
    """`cmrsynth aha`: the map and its masks, the insertion points (RAS, see insertion_point_options), the quantity;
    the segments, tables and bullseye written to workdir/aha."""
    return "aha", {"myocardium": myocardium, "map": values, "blood": blood, "rv": rv,
                   **insertion_point_options(points), "quantity": quantity, "allow_missing": allow_missing,
                   "out_dir": Path(workdir) / "aha"}


def strain_command(workdir: Path, *, cine: Path, myocardium: Path | None, blood: Path | None, rv: Path | None,
                   points: Sequence[Sequence[float]] | None, ed: int, es: int) -> tuple[str, dict[str, Any]]:
    """`cmrsynth strain`: the cine (a 4D file with its trigger times), the masks at ED on its grid, the insertion
    points (RAS), the ED and ES frames as the panel counts them (from 1; 0: found by the command; the command counts
    from 0); the maps, strain.json and figures written to workdir/strain."""
    return "strain", {"cine": cine, "myocardium": myocardium, "blood": blood, "rv": rv,
                      **insertion_point_options(points), "ed": ed - 1 if ed else None, "es": es - 1 if es else None,
                      "out_dir": Path(workdir) / "strain"}


def insertion_point_options(points: Sequence[Sequence[float]] | None) -> dict[str, str | None]:
    """The --insertion-points and --points-space options of the two RV insertion points, given in RAS (mm) as rows
    (x, y, z); both None without points."""
    if points is None:
        return {"insertion_points": None, "points_space": None}
    text = ";".join(",".join(f"{float(coordinate):.3f}" for coordinate in point) for point in points)
    return {"insertion_points": text, "points_space": "ras"}


# ---- results -----------------------------------------------------------------------------------------------------


def strain_curve_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per frame of strain.json's curves: the frame (from 1), its trigger time when known, and the global
    circumferential and radial and each segment's circumferential strain in %."""
    curves = summary["curves"]
    times = curves.get("trigger_time_ms")
    segments = [segment for segment in summary.get("segments") or [] if not segment["missing"]]
    rows = []
    for index, frame in enumerate(curves["frame"]):
        row = {"frame": frame + 1, **({"time (ms)": times[index]} if times is not None else {})}
        for column, key in zip(GLOBAL_STRAIN_CURVES, ("global_circumferential", "global_radial")):
            row[column] = 100.0 * curves[key][index]
        for segment in segments:
            row[f"{segment['segment']} {segment['name']} (%)"] = 100.0 * segment["circumferential_curve"][index]
        rows.append(row)
    return rows


def strain_chart_columns(rows: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """(x column, strain columns) of the strain curves table to plot: time when known, else the frame."""
    x = "time (ms)" if "time (ms)" in rows[0] else "frame"
    return x, [column for column in rows[0] if column.endswith("(%)")]


def strain_peak_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The global row, then one per AHA segment of strain.json: core voxels, peak circumferential and radial strain
    (%) and the frames (from 1) of the peaks; a segment without myocardium has empty values."""
    def percent(value: float | None) -> float | None:
        return None if value is None else 100.0 * value

    def number(frame: int | None) -> int | None:
        return None if frame is None else frame + 1

    rows = [{"region": "global", "voxels": summary["core_voxels"],
             "peak circumferential (%)": percent(summary["global_peak_circumferential_strain"]),
             "peak circumferential frame": number(summary["global_peak_circumferential_frame"]),
             "peak radial (%)": percent(summary["global_peak_radial_strain"]),
             "peak radial frame": number(summary["global_peak_radial_frame"])}]
    for segment in summary.get("segments") or []:
        rows.append({"region": f"{segment['segment']} {segment['name']}", "voxels": segment["n"],
                     "peak circumferential (%)": percent(segment["peak_circumferential"]),
                     "peak circumferential frame": number(segment["peak_circumferential_frame"]),
                     "peak radial (%)": percent(segment["peak_radial"]),
                     "peak radial frame": number(segment["peak_radial_frame"])})
    return rows


def strain_sentence(summary: Mapping[str, Any]) -> str:
    """The global peak strains and the ED / ES frames (from 1) of strain.json, for the status line."""
    return (f"Global peak circumferential strain {100.0 * summary['global_peak_circumferential_strain']:.1f} %, "
            f"radial {100.0 * summary['global_peak_radial_strain']:.1f} % (ED frame {summary['ed_frame'] + 1}, "
            f"ES frame {summary['es_frame'] + 1}).")


def keep_files(paths: Sequence[str | Path], parent: Path, title: str, what: str) -> tuple[Path | None, str]:
    """Copy result files into a new folder "<title> <date time>" under `parent` (the run's temporary folder goes
    after import); " (2)", " (3)", ... is added when a run of the same second has that folder. Returns (folder, a
    sentence saying where `what` was saved), or (None, why not)."""
    name = re.sub(r'[\\/:*?"<>|]+', "_", f"{title} {time.strftime('%Y-%m-%d %H%M%S')}")
    folder = Path(parent) / name
    number = 1
    while folder.exists():
        number += 1
        folder = folder.with_name(f"{name} ({number})")
    try:
        folder.mkdir(parents=True)
        for path in paths:
            shutil.copy2(path, folder / Path(path).name)
    except OSError as error:
        return None, f"{what} could not be saved: {error}"
    return folder, f"{what} saved in {folder}."
