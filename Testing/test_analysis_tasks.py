"""The panel's analysis tasks without Qt or Slicer (CMRSynthesisLib.analysis_tasks): what Apply waits for, the
command lines (read back by the real `cmrsynth` parser), the strain tables and sentence, the kept files."""

import numpy as np
import pytest

from CMRSynthesisLib import analysis_tasks
from CMRSynthesisLib.analysis_tasks import GLOBAL_STRAIN_CURVES, TWO_ANCHORS
from CMRSynthesisLib.cli import build_parser
from CMRSynthesisLib.method_tasks import CHOOSE_CINE, MolliChoice
from CMRSynthesisLib.process import cli_command

NODE = object()  # anything chosen; None is nothing


def _parsed(command: tuple):
    subcommand, options = command
    return build_parser().parse_args(cli_command(subcommand, options, python="python")[3:])


def test_t1_map_waits_for_readable_source_images():
    folder = MolliChoice("/data/molli")
    assert analysis_tasks.t1map_missing(MolliChoice(), fit_mask=None, show_over=None).startswith("Choose the source")
    assert analysis_tasks.t1map_missing(folder, fit_mask=None, show_over=None) == ""
    assert "'Show over' volume" in analysis_tasks.t1map_missing(folder, fit_mask=NODE, show_over=None)
    assert analysis_tasks.t1map_missing(folder, fit_mask=NODE, show_over=NODE) == ""
    assert analysis_tasks.t1map_missing(MolliChoice("", True, "100,200"), fit_mask=NODE, show_over=None) == ""


def test_ecv_and_aha_wait_for_their_inputs():
    assert analysis_tasks.ecv_missing(native=None, post=NODE, blood=NODE) == "Choose the native T1 map."
    assert analysis_tasks.ecv_missing(native=NODE, post=None, blood=NODE) == "Choose the post-contrast T1 map."
    assert analysis_tasks.ecv_missing(native=NODE, post=NODE, blood=None).startswith("Choose the LV blood pool")
    assert analysis_tasks.ecv_missing(native=NODE, post=NODE, blood=NODE) == ""
    given = {"values": NODE, "myocardium": NODE, "rv": NODE, "points": None}
    assert analysis_tasks.aha_missing(**given) == ""
    assert analysis_tasks.aha_missing(**{**given, "values": None}) == "Choose the map to report per segment."
    assert analysis_tasks.aha_missing(**{**given, "myocardium": None}).startswith("Choose the LV myocardium")
    assert analysis_tasks.aha_missing(**{**given, "rv": None}).startswith("Anchor the segments: choose")
    assert analysis_tasks.aha_missing(**{**given, "points": NODE}) == TWO_ANCHORS


def test_strain_waits_for_a_moving_cine_and_frames_within_it():
    anchors = {"rv": None, "points": None, "ed": 0, "es": 0}
    assert analysis_tasks.strain_missing(None, 0, **anchors) == CHOOSE_CINE
    assert analysis_tasks.strain_missing("Cine", 1, **anchors) == (
        "The cine 'Cine' has 1 frame(s): strain needs the motion between frames.")
    assert analysis_tasks.strain_missing("Cine", 3, **anchors) == ""  # masks optional: the segmenter finds them
    assert analysis_tasks.strain_missing("Cine", 3, **{**anchors, "rv": NODE, "points": NODE}) == TWO_ANCHORS
    assert analysis_tasks.strain_missing("Cine", 3, **{**anchors, "ed": 3, "es": 4}) == (
        "The ES frame 4 is past the cine's last frame (3).")
    assert analysis_tasks.strain_missing("Cine", 3, **{**anchors, "ed": 3, "es": 2}) == ""


def test_t1map_and_ecv_command_lines(tmp_path):
    args = _parsed(analysis_tasks.t1map_command(tmp_path, molli=tmp_path / "molli.nrrd", mask=None,
                                                inversion_times=" 100,180 ", scheme="shmolli"))
    assert (args.command, args.molli, args.mask, args.ti, args.scheme, args.out) == (
        "t1map", tmp_path / "molli.nrrd", None, "100,180", "shmolli", tmp_path / "T1.nrrd")
    assert _parsed(analysis_tasks.t1map_command(tmp_path, molli=tmp_path, mask=tmp_path / "mask.nrrd",
                                                inversion_times="", scheme="auto")).ti is None
    args = _parsed(analysis_tasks.ecv_command(tmp_path, native=tmp_path / "native.nrrd", post=tmp_path / "post.nrrd",
                                              blood=tmp_path / "blood.nrrd", myocardium=None, haematocrit=0.42,
                                              resample=True))
    assert (args.command, args.native, args.post, args.blood, args.myocardium, args.haematocrit, args.resample,
            args.out) == ("ecv", tmp_path / "native.nrrd", tmp_path / "post.nrrd", tmp_path / "blood.nrrd", None,
                          0.42, True, tmp_path / "ECV.nrrd")


def test_aha_and_strain_command_lines(tmp_path):
    """Insertion points in RAS (negative coordinates too), frames counted from 1 in the panel and from 0 by the
    command, 0 meaning "let the command find it"."""
    points = np.array([[-12.5, 40.0, 3.0], [10.0, -20.0, 30.0]])
    args = _parsed(analysis_tasks.aha_command(tmp_path, values=tmp_path / "map.nrrd", myocardium=tmp_path / "m.nrrd",
                                              blood=None, rv=None, points=points, quantity="ecv", allow_missing=True))
    assert (args.command, args.map, args.myocardium, args.rv, args.quantity, args.allow_missing, args.out_dir) == (
        "aha", tmp_path / "map.nrrd", tmp_path / "m.nrrd", None, "ecv", True, tmp_path / "aha")
    assert (args.insertion_points, args.points_space) == ("-12.500,40.000,3.000;10.000,-20.000,30.000", "ras")
    args = _parsed(analysis_tasks.strain_command(tmp_path, cine=tmp_path / "cine.nii", myocardium=None, blood=None,
                                                 rv=tmp_path / "rv.nrrd", points=None, ed=1, es=3))
    assert (args.command, args.cine, args.rv, args.insertion_points, args.ed, args.es, args.out_dir) == (
        "strain", tmp_path / "cine.nii", tmp_path / "rv.nrrd", None, 0, 2, tmp_path / "strain")
    args = _parsed(analysis_tasks.strain_command(tmp_path, cine=tmp_path / "cine.nii", myocardium=None, blood=None,
                                                 rv=None, points=None, ed=0, es=0))
    assert (args.ed, args.es) == (None, None)


def _strain_summary(times: bool = True) -> dict:
    """strain.json of three frames, with segment 1 measured and segment 2 without myocardium."""
    curves = {"frame": [0, 1, 2], "global_circumferential": [0.0, -0.1, -0.2], "global_radial": [0.0, 0.2, 0.4]}
    if times:
        curves["trigger_time_ms"] = [0.0, 40.0, 80.0]
    measured = {"segment": 1, "name": "basal anterior", "missing": False, "n": 12,
                "circumferential_curve": [0.0, -0.05, -0.15], "peak_circumferential": -0.15,
                "peak_circumferential_frame": 2, "peak_radial": 0.3, "peak_radial_frame": 2}
    empty = {"segment": 2, "name": "basal anteroseptal", "missing": True, "n": 0, "circumferential_curve": None,
             "peak_circumferential": None, "peak_circumferential_frame": None, "peak_radial": None,
             "peak_radial_frame": None}
    return {"curves": curves, "segments": [measured, empty], "core_voxels": 40, "ed_frame": 0, "es_frame": 2,
            "global_peak_circumferential_strain": -0.2, "global_peak_circumferential_frame": 2,
            "global_peak_radial_strain": 0.4, "global_peak_radial_frame": 2}


def test_strain_tables_and_sentence():
    summary = _strain_summary()
    rows = analysis_tasks.strain_curve_rows(summary)
    assert [row["frame"] for row in rows] == [1, 2, 3] and rows[1]["time (ms)"] == 40.0
    assert list(rows[0]) == ["frame", "time (ms)", *GLOBAL_STRAIN_CURVES, "1 basal anterior (%)"]
    assert rows[2][GLOBAL_STRAIN_CURVES[0]] == pytest.approx(-20.0) and rows[2]["1 basal anterior (%)"] == (
        pytest.approx(-15.0))
    assert analysis_tasks.strain_chart_columns(rows) == ("time (ms)", [*GLOBAL_STRAIN_CURVES, "1 basal anterior (%)"])
    untimed = analysis_tasks.strain_curve_rows(_strain_summary(times=False))
    assert analysis_tasks.strain_chart_columns(untimed)[0] == "frame"
    peaks = analysis_tasks.strain_peak_rows(summary)
    assert [row["region"] for row in peaks] == ["global", "1 basal anterior", "2 basal anteroseptal"]
    assert (peaks[0]["voxels"], peaks[0]["peak circumferential (%)"], peaks[0]["peak radial frame"]) == (
        40, pytest.approx(-20.0), 3)
    assert peaks[2]["peak radial (%)"] is None and peaks[2]["peak circumferential frame"] is None
    assert analysis_tasks.strain_peak_rows({**summary, "segments": None})[1:] == []
    assert analysis_tasks.strain_sentence(summary) == (
        "Global peak circumferential strain -20.0 %, radial 40.0 % (ED frame 1, ES frame 3).")


def test_kept_files_of_runs_in_one_second_stay_apart(tmp_path):
    """Two runs of one input within a second keep their files in two folders, not mixed in one; a folder that
    cannot be made is said, not raised."""
    first, second = tmp_path / "strain.json", tmp_path / "strain_bullseye.png"
    first.write_text("{}")
    second.write_bytes(b"png")
    kept = [analysis_tasks.keep_files(files, tmp_path / "kept", "Ring: strain", "strain.json and the figures")
            for files in ([first, second], [first])]
    (one, said), (other, _) = kept
    assert one != other and said == f"strain.json and the figures saved in {one}."
    assert one.parent == tmp_path / "kept" and one.name.startswith("Ring_ strain ")
    assert [sorted(path.name for path in folder.iterdir()) for folder in (one, other)] == [
        ["strain.json", "strain_bullseye.png"], ["strain.json"]]
    blocked = tmp_path / "a file"
    blocked.write_text("")
    folder, said = analysis_tasks.keep_files([first], blocked, "Ring strain", "strain.json")
    assert folder is None and said.startswith("strain.json could not be saved: ")
