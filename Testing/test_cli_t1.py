"""`cmrsynth t1map` and `cmrsynth ecv` end to end on real DICOM and phantom maps; bad input writes nothing."""

import json
from pathlib import Path

import numpy as np
import pytest

from CMRSynthesisLib.cli import main
from CMRSynthesisLib.io import file_sha256, read_volume, write_volume
from CMRSynthesisLib.io.t1_series import read_t1_series
from CMRSynthesisLib.volume import Volume

DATA = Path(__file__).parent / "Data"
NATIVE = DATA / "molli_patient_philips" / "native"
POST = DATA / "molli_patient_philips" / "postcontrast"


def _box_mask(folder: Path, path: Path, shift_mm: float = 0.0) -> Path:
    """A mask on the series grid selecting the LV blood box of the README (rows 122-138, cols 131-147), written to
    `path`; its origin moved by `shift_mm` along the slice normal."""
    reference = read_t1_series(folder).reference()
    mask = np.zeros(reference.spatial_shape, dtype=np.uint8)
    mask[:, 122:139, 131:148] = 1
    volume = reference.with_array(mask)
    normal = np.reshape(volume.direction, (3, 3))[:, 2]
    volume.origin = tuple(np.asarray(volume.origin) + shift_mm * normal)
    return write_volume(volume, path)


def _hashes(folder: Path) -> dict[str, str]:
    return {path.name: file_sha256(path) for path in sorted(folder.glob("*.dcm"))}


def test_t1map_on_real_philips_molli_writes_maps_and_summary(tmp_path, capsys):
    before = _hashes(NATIVE)
    mask = _box_mask(NATIVE, tmp_path / "mask.nrrd")
    out = tmp_path / "maps" / "T1.nii.gz"
    assert main(["t1map", "--molli", str(NATIVE), "--out", str(out), "--mask", str(mask), "--progress", "none"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["outputs"]) == {"t1", "a", "b", "t1_star", "r2", "failed"}
    for name in ("T1.nii.gz", "T1_A.nii.gz", "T1_B.nii.gz", "T1_T1star.nii.gz", "T1_R2.nii.gz", "T1_failed.nii.gz"):
        assert (out.parent / name).is_file()
    summary = result["summary"]
    assert summary["inversion_time_source"] == "Philips private (2005,1572)"
    assert summary["images_per_slice"] == 10 and len(summary["slices"]) == 3
    assert all(row["scheme"] == "molli" and row["fitted_voxels"] == 17 * 17 for row in summary["slices"])
    t1 = read_volume(out)
    assert t1.same_geometry(read_volume(mask))
    for row in summary["slices"]:  # the box holds LV blood (scanner: 1616-1665 ms) and some wall
        assert 1400 < row["median_t1_ms"] < 1800
    assert _hashes(NATIVE) == before


def test_t1map_json_progress_ends_with_the_result(tmp_path, capsys):
    mask = _box_mask(POST, tmp_path / "mask.nrrd")
    assert main(["t1map", "--molli", str(POST), "--out", str(tmp_path / "T1.nrrd"), "--mask", str(mask),
                 "--progress", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["type"] == "progress" and lines[-1]["type"] == "result"
    assert [line["fraction"] for line in lines[:-1]] == sorted(line["fraction"] for line in lines[:-1])


@pytest.mark.parametrize("case", ["no series", "mask elsewhere", "output onto input", "no times"])
def test_t1map_bad_input_is_refused_and_writes_nothing(case, tmp_path, capsys):
    out = tmp_path / "out" / "T1.nrrd"
    argv = ["t1map", "--molli", str(NATIVE), "--out", str(out), "--progress", "none"]
    expected = {"no series": "no T1-mapping series", "mask elsewhere": "does not overlap",
                "output onto input": "input", "no times": "holds no inversion times"}[case]
    if case == "no series":
        argv[2] = str(DATA / "lge_patient_philips")
    elif case == "mask elsewhere":
        argv += ["--mask", str(_box_mask(NATIVE, tmp_path / "mask.nrrd", shift_mm=200.0))]
    elif case == "output onto input":
        mask = _box_mask(NATIVE, tmp_path / "mask.nrrd")
        argv += ["--mask", str(mask)]
        argv[4] = str(mask)
    else:
        argv[2] = str(write_volume(read_t1_series(NATIVE).images, tmp_path / "molli.nrrd"))
    before = sorted(tmp_path.rglob("*"))
    assert main(argv) == 1
    message = capsys.readouterr().err
    assert message.startswith("error: ") and expected in message and len(message.strip().splitlines()) == 1
    assert sorted(tmp_path.rglob("*")) == before


def test_ecv_command_and_its_errors(tmp_path, capsys):
    y, x = np.mgrid[:24, :24] - 11.5
    radius = np.hypot(x, y)
    blood, ring = radius < 5, (radius >= 5) & (radius < 9)

    def save(array, name):
        return write_volume(Volume(np.repeat(array[None], 3, 0), spacing=(1.5, 1.5, 8.0)), tmp_path / name)

    native = save(np.where(blood, 1550.0, np.where(ring, 1000.0, 0.0)).astype(np.float32), "native.nrrd")
    post = save(np.where(blood, 300.0, np.where(ring, 450.0, 0.0)).astype(np.float32), "post.nrrd")
    blood_mask, myocardium = save(blood.astype(np.uint8), "blood.nrrd"), save(ring.astype(np.uint8), "myo.nrrd")
    out = tmp_path / "ecv.nrrd"
    argv = ["ecv", "--native", str(native), "--post", str(post), "--blood", str(blood_mask), "--myocardium",
            str(myocardium), "--out", str(out)]
    assert main([*argv, "--hct", "0.45"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    expected = 100 * 0.55 * (1 / 450 - 1 / 1000) / (1 / 300 - 1 / 1550)
    assert summary["myocardium_ecv_median_percent"] == pytest.approx(expected, rel=1e-5)
    assert read_volume(out).array[1][ring] == pytest.approx(expected, rel=1e-5)
    out.unlink()
    assert main([*argv, "--hct", "0.8"]) == 1
    assert "haematocrit 0.8 is outside 0.1-0.7" in capsys.readouterr().err and not out.exists()
    real = ["ecv", "--native", str(NATIVE / "IM_0031.dcm"), "--post", str(POST / "IM_0049.dcm"), "--blood",
            str(NATIVE / "IM_0031.dcm"), "--hct", "0.42", "--out", str(out)]
    assert main(real) == 1
    assert "different grids" in capsys.readouterr().err and not out.exists()


@pytest.fixture(scope="module")
def aha_files(tmp_path_factory):
    """A phantom subject's fitted native T1 map and its myocardium, blood and RV masks, as files."""
    from CMRSynthesisLib import phantom
    from CMRSynthesisLib.analysis.t1mapping import t1_maps

    folder = tmp_path_factory.mktemp("aha")
    subject = phantom.make_subject(8)
    labels = phantom.render_labels(subject)
    masks = phantom.tissue_masks(labels)
    heart = labels.with_array((masks["heart_roi"] | masks["rv"]).astype(np.uint8))
    files = {"map": write_volume(t1_maps(phantom.render_molli(subject, labels), heart)["t1"], folder / "t1.nrrd")}
    for name, mask in (("myocardium", masks["myocardium"] | masks["scar"]), ("blood", masks["blood"]),
                       ("rv", masks["rv"])):
        files[name] = write_volume(labels.with_array(mask.astype(np.uint8)), folder / f"{name}.nrrd")
    return files


def _aha(files: dict, out: Path, *anchor: str) -> list[str]:
    return ["aha", "--myocardium", str(files["myocardium"]), "--map", str(files["map"]), "--blood",
            str(files["blood"]), *anchor, "--out-dir", str(out)]


def test_aha_command_writes_segments_tables_and_bullseye(aha_files, tmp_path, capsys):
    from CMRSynthesisLib.analysis.aha import aha_segments

    out = tmp_path / "aha"
    assert main(_aha(aha_files, out, "--rv", str(aha_files["rv"]))) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["outputs"]) == {"segments", "csv", "json", "bullseye"}
    rows = result["summary"]["segments"]
    assert [row["segment"] for row in rows] == list(range(1, 17)) and not result["summary"]["missing"]
    table = json.loads((out / "aha_t1_native.json").read_text())
    assert table["units"] == "ms" and [row["median"] for row in table["segments"]] == [row["median"] for row in rows]
    assert (out / "aha_t1_native.csv").read_text().splitlines()[0].startswith("segment,name,level")
    assert (out / "aha_t1_native_bullseye.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = read_volume(out / "aha_segments.nrrd")
    t1 = read_volume(aha_files["map"]).array
    for row in rows:  # the table holds the statistics of the written labels
        values = t1[(labels.array == row["segment"]) & (t1 > 0)]
        assert row["n"] == values.size and row["median"] == pytest.approx(float(np.median(values)))

    # Insertion points given in RAS (as Slicer shows them) reproduce the RV-based segments; read as LPS they do not.
    segmentation = aha_segments(read_volume(aha_files["myocardium"]), rv=read_volume(aha_files["rv"]),
                                blood_pool=read_volume(aha_files["blood"]))
    z = sorted(segmentation.levels)[len(segmentation.levels) // 2]
    centre, (e1, e2) = np.asarray(segmentation.centres_lps[z]), np.asarray(segmentation.in_plane_axes_lps)
    points_lps = [centre + 30.0 * (np.cos(np.radians(angle)) * e1 + np.sin(np.radians(angle)) * e2)
                  for angle in segmentation.insertion_deg[z]]
    ras = ";".join(",".join(f"{value:.3f}" for value in point * [-1, -1, 1]) for point in points_lps)
    assert main(_aha(aha_files, tmp_path / "ras", f"--insertion-points={ras}", "--points-space", "ras")) == 0
    capsys.readouterr()
    same = np.mean(read_volume(tmp_path / "ras" / "aha_segments.nrrd").array[labels.array > 0]
                   == labels.array[labels.array > 0])
    assert same > 0.85
    # read as LPS, the points are mirrored through the origin, far from this heart, where they lie a few degrees apart
    # about the LV centre: refused, nothing written (before that check, they gave segments that disagreed)
    code = main(_aha(aha_files, tmp_path / "lps", f"--insertion-points={ras}", "--points-space", "lps"))
    assert code == 1 and "degrees apart about the LV centre" in capsys.readouterr().err
    assert not (tmp_path / "lps" / "aha_segments.nrrd").exists()


def test_aha_command_bad_input(aha_files, tmp_path, capsys):
    shifted = read_volume(aha_files["map"])
    shifted.origin = tuple(np.asarray(shifted.origin) + 500.0)
    elsewhere = write_volume(shifted, tmp_path / "elsewhere.nrrd")
    argv = _aha({**aha_files, "map": elsewhere}, tmp_path / "out", "--rv", str(aha_files["rv"]))
    assert main(argv) == 1
    assert f"the map ({elsewhere}) and the AHA segmentation differ in origin" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(_aha(aha_files, tmp_path / "out", "--insertion-points", "1,2,3")) == 1
    assert "exactly two insertion points" in capsys.readouterr().err
