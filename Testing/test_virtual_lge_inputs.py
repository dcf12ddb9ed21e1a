"""Virtual-LGE slice inputs (methods/virtual_lge_inputs.py) on a phantom slice whose cine shows the infarct only by
its motion: the kinematic channels and the MOLLI recovery curves on the LV crop both tell the infarct from remote
myocardium, which is what CPKDM learns from."""

import numpy as np
import pytest

from CMRSynthesisLib import phantom
from CMRSynthesisLib.analysis.kinematic_maps import KINEMATIC_CHANNELS, STRAIN_LIMIT
from CMRSynthesisLib.analysis.relaxation import recovery_curves
from CMRSynthesisLib.errors import InputError
from CMRSynthesisLib.methods.virtual_lge_inputs import CURVE_FLOOR, slice_inputs
from CMRSynthesisLib.preprocess import LVCrop
from CMRSynthesisLib.slice_matching import onto_reference_slices

SUBJECT = 6  # a transmural (0.99) RCA infarct over slices 7-9
PHASES, SIZE, PIXEL = 8, 48, 2.0


@pytest.fixture(scope="module")
def infarct_slice() -> dict:
    subject = phantom.make_subject(SUBJECT)
    cine, labels = phantom.render_cine(subject, infarct_contrast=False)
    ed_labels = subject.geometry.volume(labels.array[0], units="label")
    curves = recovery_curves(phantom.render_molli(subject, ed_labels))
    on_cine, covered, notes = onto_reference_slices(curves.curves.array, curves.curves, ed_labels)
    masks = phantom.tissue_masks(ed_labels)
    z = int(np.argmax(masks["scar"].sum(axis=(1, 2))))
    spacing_yx = (cine.spacing[1], cine.spacing[0])
    myocardium = masks["myocardium"][z] | masks["scar"][z]
    rows, cols = np.nonzero(masks["blood"][z])
    crop = LVCrop((rows.mean(), cols.mean()), spacing_yx, SIZE, PIXEL)
    inputs = slice_inputs(cine.array[:, z], myocardium, masks["blood"][z], on_cine[:, z],
                          covered[z] & curves.fitted[z], spacing_yx, crop, 0, PHASES)
    es_frame = int(np.argmin((labels.array == phantom.LABELS["lv_blood"]).sum(axis=(1, 2, 3))))
    es_phase = round(es_frame * PHASES / len(cine.array))
    core_scar = crop.extract(masks["scar"][z].astype(np.float32)) > 0.9
    core_remote = crop.extract((masks["myocardium"][z]).astype(np.float32)) > 0.9
    return {"inputs": inputs, "scar": core_scar, "remote": core_remote, "es": es_phase, "notes": notes}


def test_shapes_and_ranges(infarct_slice):
    inputs = infarct_slice["inputs"]
    assert inputs["cine"].shape == (PHASES, SIZE, SIZE) and 0.0 <= inputs["cine"].min() and inputs["cine"].max() <= 1.0
    assert inputs["kinematics"].shape == (PHASES, len(KINEMATIC_CHANNELS), SIZE, SIZE)
    assert inputs["curves"].shape == (8, SIZE, SIZE) and inputs["covered"].shape == (SIZE, SIZE)
    assert inputs["curves"].min() >= CURVE_FLOOR and inputs["curves"].max() <= 1.0
    assert np.all(inputs["kinematics"][0] == 0.0)  # ED is the reference: no motion yet
    assert np.isfinite(inputs["kinematics"]).all() and np.abs(inputs["kinematics"]).max() <= STRAIN_LIMIT
    assert infarct_slice["notes"] == []  # the MOLLI lies on the cine's grid in the phantom


def test_the_infarct_shows_in_motion_and_in_relaxation_but_not_in_cine_intensity(infarct_slice):
    inputs, scar, remote, es = (infarct_slice[key] for key in ("inputs", "scar", "remote", "es"))
    assert scar.sum() >= 10 and remote.sum() >= 30
    radial = inputs["kinematics"][es, KINEMATIC_CHANNELS.index("radial_strain")]
    assert radial[remote].mean() > 0.15 and radial[scar].mean() < 0.5 * radial[remote].mean()  # akinetic infarct
    curves = inputs["curves"]
    assert curves[:, scar].mean() < curves[:, remote].mean() - 0.1  # longer native T1: slower recovery
    ed = inputs["cine"][0]
    assert abs(ed[scar].mean() - ed[remote].mean()) < 0.1 * ed[remote].mean()  # no infarct contrast in the cine


def test_a_slice_without_myocardium_or_frames_is_refused(infarct_slice):
    crop = LVCrop((10.0, 10.0), (1.5, 1.5), 16, 2.0)
    empty = np.zeros((20, 20), bool)
    with pytest.raises(InputError, match="no ED myocardium"):
        slice_inputs(np.zeros((5, 20, 20)), empty, empty, np.zeros((8, 20, 20)), empty, (1.5, 1.5), crop, 0, 4)
    with pytest.raises(InputError, match="at least 2 frames"):
        slice_inputs(np.zeros((1, 20, 20)), empty, empty, np.zeros((8, 20, 20)), empty, (1.5, 1.5), crop, 0, 4)
