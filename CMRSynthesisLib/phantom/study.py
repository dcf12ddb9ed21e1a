"""Whole synthetic studies: the LGE study the scar models train on, and a subject folder with every contrast on one
geometry plus the ground truth, described by `subject.json` (every file named by its role)."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError
from ..io.cine import write_cine
from ..io.dicom_export import check_new_folder, write_dicom_series
from ..io.writing import atomic_write_bytes, write_volumes
from ..volume import Volume
from .anatomy import LABELS, Subject, make_subject
from .contrast import oedema_mask, render_cine, render_lge, render_molli, render_t1_map, render_t2w
from .motion import cine_phases, lagrangian_displacement_mm, render_labels, true_strain

SUBJECT_FILES = {
    "cine": "cine.nii.gz", "cine_labels": "cine_labels.nii.gz", "labels_ed": "labels_ed.nrrd",
    "labels_es": "labels_es.nrrd", "t1_native": "t1_native.nrrd", "molli": "molli", "lge": "lge.nrrd",
    "t2w": "t2w.nrrd", "heart_roi": "heart_roi.nrrd", "oedema": "oedema.nrrd", "displacement": "displacement.npz",
}
DISPLACEMENT_FORMAT = ("NumPy .npz with 'displacement_mm' (t, 2, z, y, x) float32 on the cine grid: in-plane "
                       "Lagrangian displacement from the ED frame of every ED LV-wall voxel (component 0 along the "
                       "image columns, 1 along the rows, in mm), NaN elsewhere; 'radial_strain' and "
                       "'circumferential_strain' (t, z, y, x): the true Green-Lagrange strain there")


def tissue_masks(labels: Volume) -> dict[str, np.ndarray]:
    """Boolean (z, y, x) masks: healthy LV "myocardium", "scar", LV "blood" pool, their union "heart_roi", "rv"."""
    array = labels.array
    masks = {
        "myocardium": array == LABELS["lv_myocardium"],
        "scar": array == LABELS["scar"],
        "blood": array == LABELS["lv_blood"],
        "rv": (array == LABELS["rv_blood"]) | (array == LABELS["rv_wall"]),
    }
    masks["heart_roi"] = masks["myocardium"] | masks["scar"] | masks["blood"]
    return masks


def true_ecv_percent(subject: Subject, label: str, haematocrit: float) -> float:
    """The ECV (%) of tissue `label` implied by the subject's native and post-contrast T1s and the haematocrit."""
    tissue, blood = subject.tissues[label], subject.tissues["lv_blood"]
    delta_tissue = 1.0 / tissue.t1_post_ms - 1.0 / tissue.t1_native_ms
    delta_blood = 1.0 / blood.t1_post_ms - 1.0 / blood.t1_native_ms
    return 100.0 * (1.0 - haematocrit) * delta_tissue / delta_blood


def lge_study(subject_id: int) -> dict:
    """One LGE study: {"subject": Subject, "lge": Volume, "labels": Volume, "masks": tissue_masks(labels)}."""
    subject = make_subject(subject_id)
    labels = render_labels(subject)
    return {"subject": subject, "lge": render_lge(subject, labels), "labels": labels, "masks": tissue_masks(labels)}


def multi_sequence_study(subject_id: int) -> dict:
    """The three sequences of one slice stack at end-diastole, on one grid, as MyoPS holds them: {"subject",
    "bssfp" (the cine's ED frame, z, y, x), "t2w" (dark blood, oedema bright), "lge", "labels" (ED), "masks":
    tissue_masks(labels) with "oedema" (`contrast.oedema_mask`: around an acute infarct, excluding the scar)}."""
    subject = make_subject(subject_id)
    cine, cine_labels = render_cine(subject)
    labels = subject.geometry.volume(cine_labels.array[0], units="label", phantom_subject=subject_id)
    timing = ("trigger_times_ms", "rr_interval_ms")
    bssfp = Volume(cine.array[0], cine.spacing, cine.origin, cine.direction,
                   {**{key: value for key, value in cine.metadata.items() if key not in timing},
                    "contrast": "bSSFP (cine frame at ED)"})
    return {"subject": subject, "bssfp": bssfp, "t2w": render_t2w(subject, labels), "lge": render_lge(subject, labels),
            "labels": labels, "masks": {**tissue_masks(labels), "oedema": oedema_mask(subject, labels)}}


def write_subject(subject_id: int, folder: str | Path) -> dict[str, Any]:
    """Write every contrast of one subject and its ground truth into `folder`; return the subject.json content.

    Files (SUBJECT_FILES, paths relative to the folder): the bSSFP cine (4D NIfTI, trigger times in its JSON sidecar)
    and its labels at every frame, labelmaps at ED and ES on the cine grid, the true native T1 map (ms, at ED), the
    native MOLLI 5(3)3 source images as a DICOM folder (InversionTime and AcquisitionTime per image, as a scanner
    writes them), LGE, T2-weighted dark blood, the LGE heart ROI, the oedema mask (empty without an acute infarct;
    `contrast.oedema_mask`) and the true displacement and strain
    (DISPLACEMENT_FORMAT). subject.json also holds ed_frame, es_frame (smallest LV blood pool), field_strength_t,
    split, label_values, the scar, the LV ejection fraction from the labels and the true global strain.
    OutputError, before anything is written, when `folder` exists and is not empty or cannot be written.
    """
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()):
        raise OutputError(f"{folder}: the folder exists and is not empty (a subject written there before?); choose a "
                          "new folder")
    check_new_folder(folder / SUBJECT_FILES["molli"])
    subject = make_subject(subject_id)
    cine, cine_labels = render_cine(subject)
    blood_ml = (cine_labels.array == LABELS["lv_blood"]).sum(axis=(1, 2, 3)) * np.prod(cine.spacing) / 1000.0
    es_frame = int(np.argmin(blood_ml))
    labels_ed = subject.geometry.volume(cine_labels.array[0], units="label", phantom_subject=subject_id)
    labels_es = subject.geometry.volume(cine_labels.array[es_frame], units="label", phantom_subject=subject_id)
    masks = tissue_masks(labels_ed)
    lge = render_lge(subject, labels_ed)
    volumes = {"labels_ed": labels_ed, "labels_es": labels_es, "t1_native": render_t1_map(subject, labels_ed),
               "lge": lge, "t2w": render_t2w(subject, labels_ed),
               "heart_roi": lge.with_array(masks["heart_roi"].astype(np.uint8)),
               "oedema": lge.with_array(oedema_mask(subject, labels_ed).astype(np.uint8))}
    write_volumes([(volume, folder / SUBJECT_FILES[name]) for name, volume in volumes.items()])
    write_cine(cine, folder / SUBJECT_FILES["cine"])
    write_cine(cine_labels, folder / SUBJECT_FILES["cine_labels"])
    _write_molli(subject, labels_ed, folder / SUBJECT_FILES["molli"])
    strain = _write_motion_truth(subject, masks, folder / SUBJECT_FILES["displacement"])
    summary = {
        **SUBJECT_FILES,
        "subject_id": subject_id, "split": subject.split, "field_strength_t": subject.acquisition.field_strength_t,
        "ed_frame": 0, "es_frame": es_frame, "trigger_times_ms": cine.metadata["trigger_times_ms"],
        "rr_interval_ms": cine.metadata["rr_interval_ms"], "label_values": dict(LABELS),
        "lv_blood_volume_ml": [round(float(v), 3) for v in blood_ml],
        "lv_ejection_fraction": round(float((blood_ml[0] - blood_ml[es_frame]) / blood_ml[0]), 4),
        "scar": None if subject.scar is None else {**dataclasses.asdict(subject.scar),
                                                   "dysfunction": subject.scar.dysfunction},
        "true_strain": strain, "displacement_format": DISPLACEMENT_FORMAT,
        "acquisition": dataclasses.asdict(subject.acquisition),
        "tissues": {name: dataclasses.asdict(tissue) for name, tissue in subject.tissues.items()},
        "lge_inversion_time_ms": round(subject.inversion_time_ms, 1),
        "note": "synthetic phantom subject made by CMRSynthesisLib.phantom; not patient data",
    }
    atomic_write_bytes(folder / "subject.json", json.dumps(summary, indent=2).encode())
    return summary


def _write_molli(subject: Subject, labels: Volume, folder: Path) -> None:
    """Native MOLLI images as a DICOM series: each image with its InversionTime and an AcquisitionTime one heartbeat
    after the previous image of its slice (acquisition order), TI-sorted instance numbers."""
    series = render_molli(subject, labels)
    rank = series.acquisition_rank[:, 0]
    rr_s = subject.acquisition.rr_interval_ms / 1000.0
    elements = [{"InversionTime": round(float(ti), 2), "AcquisitionTime": f"{100000 + rr_s * int(k):013.6f}",
                 "MagneticFieldStrength": subject.acquisition.field_strength_t}
                for ti, k in zip(series.inversion_times_ms[:, 0], rank)]
    images = series.images.with_array(series.images.array, slice_thickness_mm=subject.geometry.slice_thickness_mm)
    write_dicom_series(images, folder, description="MOLLI 5(3)3 native (synthetic)", frame_elements=elements,
                       image_type=("ORIGINAL", "PRIMARY", "M"), comment="synthetic phantom MOLLI, not patient data")


def _write_motion_truth(subject: Subject, masks: dict[str, np.ndarray], path: Path) -> dict[str, Any]:
    """Write the displacement and true strain (.npz) and return the true global strain: the mean over the ED LV wall
    of slices with a cavity, per frame, and its extremes (peak circumferential: most negative; radial: largest)."""
    wall = masks["myocardium"] | masks["scar"]
    phases = cine_phases(subject)
    displacement = lagrangian_displacement_mm(subject, phases, wall)
    strain = true_strain(subject, phases, wall)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, displacement_mm=displacement, radial_strain=strain["radial"],
                        circumferential_strain=strain["circumferential"])
    atomic_write_bytes(path, buffer.getvalue())
    ring = wall & masks["blood"].any(axis=(1, 2))[:, None, None]
    curves = {name: [round(float(frame[ring].mean()), 5) for frame in values] for name, values in strain.items()}
    return {"global_circumferential_curve": curves["circumferential"], "global_radial_curve": curves["radial"],
            "global_peak_circumferential_strain": min(curves["circumferential"]),
            "global_peak_radial_strain": max(curves["radial"]),
            "definition": "Green-Lagrange, mean over the ED LV wall of slices with a cavity, fractions"}
