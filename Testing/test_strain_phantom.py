"""Strain on the beating phantom: the measured global strain against the phantom's true strain, and infarct segments
(hypo- to akinetic by transmurality) against remote ones."""

import numpy as np
import pytest

from CMRSynthesisLib import phantom
from CMRSynthesisLib.analysis.strain import core_myocardium, myocardial_strain
from CMRSynthesisLib.phantom import LABELS
from CMRSynthesisLib.volume import Volume

SUBJECT = 3  # train subject: transmural-ish RCA infarct over three slices


@pytest.fixture(scope="module")
def measured() -> dict:
    subject = phantom.make_subject(SUBJECT)
    assert subject.scar is not None and subject.scar.transmurality > 0.7
    cine, labels = phantom.render_cine(subject)
    first, last = subject.scar.slices
    slices = slice(max(first - 1, 0), last + 2)  # the infarct's slices and one on each side
    normal = np.reshape(cine.direction, (3, 3))[:, 2]
    origin = np.asarray(cine.origin) + normal * cine.spacing[2] * slices.start
    cine = Volume(cine.array[:, slices], cine.spacing, origin, cine.direction, cine.metadata)
    ed = labels.array[0, slices]
    wall = np.isin(ed, [LABELS["lv_myocardium"], LABELS["scar"]])
    result = myocardial_strain(cine, wall, blood_pool_ed=ed == LABELS["lv_blood"],
                               rv_ed=np.isin(ed, [LABELS["rv_blood"], LABELS["rv_wall"]]))
    full_wall = np.zeros(labels.array.shape[1:], bool)
    full_wall[slices] = wall
    truth = phantom.true_strain(subject, phantom.cine_phases(subject), full_wall)
    return {"subject": subject, "result": result, "labels_ed": ed, "wall": wall,
            "truth": {name: values[:, slices] for name, values in truth.items()}}


def test_global_strain_follows_the_phantom_truth(measured):
    result, truth, wall = measured["result"], measured["truth"], measured["wall"]
    core = np.stack([core_myocardium(w) for w in wall])
    true_cc = [np.nanmean(frame[core]) for frame in truth["circumferential"]]
    true_rr = [np.nanmean(frame[core]) for frame in truth["radial"]]
    assert result.global_peak_circumferential < -0.1 and result.global_peak_radial > 0.15
    assert result.global_peak_circumferential == pytest.approx(min(true_cc), abs=0.03)
    assert result.global_peak_radial == pytest.approx(max(true_rr), abs=0.08)
    assert abs(int(np.argmin(result.global_circumferential)) - int(np.argmin(true_cc))) <= 2


def test_infarct_segments_strain_less_than_remote_segments(measured):
    result, labels = measured["result"], measured["labels_ed"]
    segments = result.segmentation.labels.array
    scar = labels == LABELS["scar"]
    infarct, remote = [], []
    for row in result.segments:
        inside = segments == row["segment"]
        if not inside.any() or row["peak_circumferential"] is None:
            continue
        fraction = scar[inside].mean()
        if fraction >= 0.15:
            infarct.append(row)
        elif fraction == 0.0:
            remote.append(row)
    assert infarct and len(remote) >= 6
    for key, sign in (("peak_circumferential", -1.0), ("peak_radial", 1.0)):
        infarct_mean = np.mean([sign * row[key] for row in infarct])
        remote_mean = np.mean([sign * row[key] for row in remote])
        assert infarct_mean < 0.75 * remote_mean, key
