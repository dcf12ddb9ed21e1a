"""Tests of the beating phantom: cine contrast and timing, incompressible motion, regional dysfunction of the infarct,
true displacement and strain, T2w / T1 contrasts, field strength, the out-of-distribution family, subject folders."""

import dataclasses
import json

import numpy as np
import pytest

from CMRSynthesisLib import phantom
from CMRSynthesisLib.errors import OutputError
from CMRSynthesisLib.phantom import LABELS

SCAR_ID = 5  # train subject with a transmural-ish infarct over several slices (checked below)


@pytest.fixture(scope="module")
def beating() -> dict:
    subject = phantom.make_subject(SCAR_ID)
    cine, labels = phantom.render_cine(subject)
    return {"subject": subject, "cine": cine, "labels": labels}


def _blood_ml(labels: np.ndarray, spacing) -> np.ndarray:
    return (labels == LABELS["lv_blood"]).sum(axis=(1, 2, 3)) * np.prod(spacing) / 1000.0


def test_cine_frames_times_and_bssfp_contrast(beating):
    subject, cine, labels = beating["subject"], beating["cine"], beating["labels"]
    frames = subject.acquisition.cine_frames
    assert 25 <= frames <= 30 and cine.array.shape == (frames, *subject.geometry.shape) == labels.array.shape
    assert cine.array.dtype == np.int16 and labels.array.dtype == np.uint8
    times = np.asarray(cine.metadata["trigger_times_ms"])
    assert times[0] == 0.0 and np.all(np.diff(times) > 0) and times[-1] < cine.metadata["rr_interval_ms"]
    np.testing.assert_array_equal(labels.array[0], phantom.render_labels(subject).array)  # frame 0 is ED
    ed = cine.array[0].astype(float)
    blood, myocardium = labels.array[0] == LABELS["lv_blood"], labels.array[0] == LABELS["lv_myocardium"]
    lung = labels.array[0] == LABELS["lung"]
    assert ed[blood].mean() > 1.8 * ed[myocardium].mean() > 1.8 * ed[lung].mean()  # bright blood, grey muscle, dark lung


def test_volume_curve_ejection_fraction_and_incompressible_wall(beating):
    labels = beating["labels"].array
    volumes = _blood_ml(labels, beating["cine"].spacing)
    es = int(np.argmin(volumes))
    assert int(np.argmax(volumes)) == 0 and 0.25 < es / len(volumes) < 0.45
    assert 0.4 < (volumes[0] - volumes[es]) / volumes[0] < 0.72
    wall = np.isin(labels, [LABELS["lv_myocardium"], LABELS["scar"]]).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(wall, wall[0], rtol=0.06)  # the myocardium keeps its volume
    scar = (labels == LABELS["scar"]).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(scar, scar[0], rtol=0.15)  # the scar moves with the tissue


def _ejection_fraction(subject) -> float:
    phases = phantom.cine_phases(subject)
    es_phase = float(phases[np.argmin(np.abs(phases - subject.lv.end_systole_phase))])
    ed, es = ((phantom.render_labels(subject, phase).array == LABELS["lv_blood"]).sum() for phase in (0.0, es_phase))
    return float((ed - es) / ed)


def test_ejection_fraction_is_normal_without_infarct_and_lower_with_a_large_one():
    subjects = [phantom.make_subject(i) for i in phantom.subject_ids("train", 30)]
    healthy = [_ejection_fraction(s) for s in subjects if s.scar is None]
    assert len(healthy) >= 3 and all(0.5 < f < 0.72 for f in healthy)
    large = [s for s in subjects if s.scar is not None and s.scar.transmurality > 0.7 and np.ptp(s.scar.slices) >= 3]
    assert large
    for subject in large:  # the same heart without its infarct ejects more
        assert _ejection_fraction(subject) < 0.97 * _ejection_fraction(dataclasses.replace(subject, scar=None))


def test_true_displacement_carries_the_ed_wall_onto_the_wall_of_each_frame(beating):
    subject, labels = beating["subject"], beating["labels"].array
    wall_ed = np.isin(labels[0], [LABELS["lv_myocardium"], LABELS["scar"]])
    phases = phantom.cine_phases(subject)
    es = int(np.argmin(_blood_ml(labels, beating["cine"].spacing)))
    displacement = phantom.lagrangian_displacement_mm(subject, phases[[0, es]], wall_ed)
    assert np.all(np.isnan(displacement[:, :, ~wall_ed])) and np.abs(displacement[0][:, wall_ed]).max() < 1e-6
    z, y, x = np.nonzero(wall_ed)
    pixel = subject.geometry.spacing[0]
    moved_x = np.rint(x + displacement[1, 0][wall_ed] / pixel).astype(int)
    moved_y = np.rint(y + displacement[1, 1][wall_ed] / pixel).astype(int)
    landed = labels[es][z, moved_y, moved_x]
    assert np.mean(np.isin(landed, [LABELS["lv_myocardium"], LABELS["scar"]])) > 0.95
    scar_ed = labels[0][wall_ed] == LABELS["scar"]
    assert np.mean(landed[scar_ed] == LABELS["scar"]) > 0.75  # a scar voxel is still scar where it went
    assert np.nanmax(np.abs(displacement[1])) > 3.0  # millimetres: the wall really moves


def test_infarct_shortens_and_thickens_less_than_remote_myocardium(beating):
    subject, labels = beating["subject"], beating["labels"].array
    assert subject.scar is not None and subject.scar.dysfunction > 0.6
    wall_ed = np.isin(labels[0], [LABELS["lv_myocardium"], LABELS["scar"]])
    es = int(np.argmin(_blood_ml(labels, beating["cine"].spacing)))
    strain = phantom.true_strain(subject, phantom.cine_phases(subject)[[es]], wall_ed)
    first, last = subject.scar.slices
    in_range = np.zeros(wall_ed.shape, bool)
    in_range[first:last + 1] = True
    scar_core = (labels[0] == LABELS["scar"]) & in_range
    remote = wall_ed & in_range & ~np.isin(labels[0], [LABELS["scar"]])
    circumferential, radial = strain["circumferential"][0], strain["radial"][0]
    assert np.nanmean(circumferential[remote]) < -0.12 and np.nanmean(radial[remote]) > 0.2
    assert np.nanmean(circumferential[scar_core]) > np.nanmean(circumferential[remote]) + 0.05
    assert np.nanmean(radial[scar_core]) < 0.6 * np.nanmean(radial[remote])


def test_t2w_dark_blood_and_t1_map_values():
    subject = phantom.make_subject(SCAR_ID)
    labels = phantom.render_labels(subject)
    t2w = phantom.render_t2w(subject, labels).array.astype(float)
    t1 = phantom.render_t1_map(subject, labels)
    blood, myocardium = labels.array == LABELS["lv_blood"], labels.array == LABELS["lv_myocardium"]
    assert t2w[blood].mean() < 0.6 * t2w[myocardium].mean()
    assert t1.metadata["units"] == "ms" and t1.array.dtype == np.float32
    assert t1.array[myocardium].mean() == pytest.approx(subject.tissues["lv_myocardium"].t1_native_ms)
    assert t1.array[labels.array == LABELS["scar"]].mean() > 1.15 * t1.array[myocardium].mean()


def test_field_strength_sets_the_tissue_table():
    subjects = [phantom.make_subject(i) for i in phantom.subject_ids("train", 20)]
    by_field = {field: [s for s in subjects if s.acquisition.field_strength_t == field] for field in (1.5, 3.0)}
    assert by_field[1.5] and by_field[3.0]
    myocardium = {field: np.mean([s.tissues["lv_myocardium"].t1_native_ms for s in group])
                  for field, group in by_field.items()}
    assert 900 < myocardium[1.5] < 1100 and 1100 < myocardium[3.0] < 1320


def test_out_of_distribution_family_is_noisier_and_more_shaded():
    train = [phantom.make_subject(i).acquisition for i in phantom.subject_ids("train", 30)]
    ood = [phantom.make_subject(i).acquisition for i in phantom.subject_ids("ood", 30)]
    assert all(phantom.split_of(i) == "ood" for i in phantom.subject_ids("ood", 3))
    assert np.median([a.lge_snr for a in ood]) < 0.5 * np.median([a.lge_snr for a in train])
    spread = lambda a: a.shading_range[1] / a.shading_range[0]
    assert min(spread(a) for a in ood) > np.median([spread(a) for a in train])
    assert all(a.coil_hot_spot is not None for a in ood) and all(a.coil_hot_spot is None for a in train)
    scales = [a.intensity_scale for a in ood]
    assert min(scales) < 300 or max(scales) > 4000  # outside the training intensity range


def test_write_subject_folder_names_every_file_by_role(tmp_path):
    from CMRSynthesisLib.io import read_volume
    from CMRSynthesisLib.io.cine import read_cine
    from CMRSynthesisLib.io.t1_series import read_t1_series

    summary = phantom.write_subject(SCAR_ID, tmp_path / "subject")
    folder = tmp_path / "subject"
    assert json.loads((folder / "subject.json").read_text()) == json.loads(json.dumps(summary))
    for key in ("cine", "labels_ed", "labels_es", "t1_native", "molli", "lge", "t2w", "displacement"):
        assert (folder / summary[key]).exists(), key
    assert summary["split"] == "train" and summary["label_values"] == LABELS and summary["ed_frame"] == 0
    cine = read_cine(folder / summary["cine"])
    assert cine.array.ndim == 4 and cine.array.shape[0] == len(summary["trigger_times_ms"])
    np.testing.assert_allclose(cine.metadata["trigger_times_ms"], summary["trigger_times_ms"], atol=0.01)
    labels_es = read_volume(folder / summary["labels_es"])
    labels_es.require_same_geometry(read_volume(folder / summary["t1_native"]))
    np.testing.assert_array_equal(labels_es.array, read_cine(folder / summary["cine_labels"]).array[summary["es_frame"]])
    molli = read_t1_series(folder / summary["molli"])
    assert molli.images.array.shape[0] == 8 and "InversionTime" in molli.time_source
    labels_es.require_same_geometry(molli.reference(), "the ES labels and the MOLLI images")
    truth = np.load(folder / summary["displacement"])
    assert truth["displacement_mm"].shape == (cine.array.shape[0], 2, *cine.array.shape[1:])
    strain = summary["true_strain"]
    assert strain["global_peak_circumferential_strain"] < -0.1 and strain["global_peak_radial_strain"] > 0.15
    before = {path: path.stat().st_mtime_ns for path in folder.rglob("*")}
    with pytest.raises(OutputError, match="subject: the folder exists and is not empty"):
        phantom.write_subject(SCAR_ID, folder)  # a second write into the same folder is refused before writing
    assert {path: path.stat().st_mtime_ns for path in folder.rglob("*")} == before


def test_without_infarct_contrast_the_cine_shows_the_infarct_only_by_its_motion():
    """infarct_contrast=False draws the scar with the remote myocardium's bSSFP signal: the same motion, texture
    and noise; an acute infarct's own signal (oedema: T1 and T2 up, bSSFP about T2 / T1) is gone."""
    from scipy.ndimage import binary_dilation, binary_erosion

    subject = phantom.make_subject(12)  # an acute (oedematous) LAD infarct
    assert subject.scar is not None and subject.scar.acute
    shown, labels = phantom.render_cine(subject)
    hidden, same_labels = phantom.render_cine(subject, infarct_contrast=False)
    np.testing.assert_array_equal(labels.array, same_labels.array)  # the same motion
    scar = labels.array == LABELS["scar"]
    core = binary_erosion(scar, np.ones((1, 1, 3, 3), bool))  # away from the partial-volume edge
    assert core[0].sum() > 20
    flip = subject.acquisition.cine_flip_deg
    tissue = {name: subject.tissues[name] for name in ("scar", "lv_myocardium")}
    scar_signal, myocardium_signal = (phantom.bssfp_signal(t.proton_density, t.t1_native_ms, t.t2_ms, flip)
                                      for t in tissue.values())
    ratio = shown.array[core].astype(float).mean() / hidden.array[core].astype(float).mean()
    assert abs(scar_signal / myocardium_signal - 1.0) > 0.05  # the default cine shows the acute infarct ...
    assert ratio == pytest.approx(scar_signal / myocardium_signal, rel=0.02)  # ... the hidden one the myocardium
    near = binary_dilation(scar.any(axis=0), np.ones((1, 9, 9), bool))  # blur carries the scar a few pixels
    np.testing.assert_array_equal(shown.array[:, ~near], hidden.array[:, ~near])  # elsewhere the very same images
