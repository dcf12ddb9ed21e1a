"""Recovery curves on common inversion times (analysis/relaxation.py) and their spectral clustering
(analysis/curve_clustering.py): every scheme gives the same curve of one tissue, the real Philips MOLLI study (10
images per slice, TIs in a private tag) is read, and the clusters of a phantom slice separate blood from
myocardium in a canonical order."""

import numpy as np
import pytest
from scanner_references import PHILIPS, _slice_index, reference_boxes

from CMRSynthesisLib import phantom
from CMRSynthesisLib.analysis.curve_clustering import cluster_curves, curve_features, positional_encoding
from CMRSynthesisLib.analysis.relaxation import (
    STANDARD_INVERSION_TIMES_MS,
    describe_scheme,
    model_curve,
    recovery_curves,
)
from CMRSynthesisLib.errors import InputError
from CMRSynthesisLib.io import read_volume
from CMRSynthesisLib.io.t1_series import T1Series, read_t1_series
from CMRSynthesisLib.volume import Volume

TISSUE_T1_MS = (400.0, 1000.0, 1600.0)  # one tissue per column block
LOOK_LOCKER_RATE = 1.0 / 4000.0


def _series(times_in_order: list[float], order_source: str | None = "InstanceNumber") -> T1Series:
    """A noise-free ideal Look-Locker series, 1 slice of 6 x 6 pixels: three tissues (2 columns each), A = 500 x
    proton density 0.8 / 1 / 1.2 over rows (gain and density must not change the normalised curve)."""
    times = np.asarray(times_in_order, dtype=float)
    t1 = np.repeat(np.asarray(TISSUE_T1_MS), 2)[None, :].repeat(6, axis=0)
    density = np.repeat([0.8, 1.0, 1.2], 2)[:, None].repeat(6, axis=1)
    t1_star = 1.0 / (1.0 / t1 + LOOK_LOCKER_RATE)
    signal = 500.0 * density * np.abs(t1_star / t1 - (1.0 + t1_star / t1) * np.exp(-times[:, None, None] / t1_star))
    sorted_index = np.argsort(times, kind="stable")
    images = signal[sorted_index][:, None].astype(np.float32)
    rank = sorted_index if order_source else np.arange(times.size)  # acquisition position of each image
    return T1Series(Volume(images, (1.5, 1.5, 8.0)), times[sorted_index][:, None], rank[:, None], "InversionTime",
                    order_source)


MOLLI_533 = [100.0 + k * 1000 for k in range(5)] + [180.0 + k * 1000 for k in range(3)]
MOLLI_4132 = ([120.0 + k * 900 for k in range(4)] + [220.0 + k * 900 for k in range(3)]
              + [320.0 + k * 900 for k in range(2)])
SHMOLLI_511 = [100.0 + k * 1000 for k in range(5)] + [180.0, 260.0]
PHILIPS_LIKE_10 = [95.0 + k * 850 for k in range(5)] + [240.0 + k * 850 for k in range(5)]


def _true_curve(t1: float) -> np.ndarray:
    t1_star = 1.0 / (1.0 / t1 + LOOK_LOCKER_RATE)
    return 1.0 - (1.0 + t1 / t1_star) * np.exp(-np.asarray(STANDARD_INVERSION_TIMES_MS) / t1_star)


def test_model_curve_is_the_normalised_look_locker_curve_and_zero_without_a_fit():
    curve = model_curve(np.array([2.0, 0.0]), np.array([3.6, 1.0]), np.array([800.0, 800.0]), [0.0, 800.0, 1e6])
    assert curve[:, 0] == pytest.approx([1 - 1.8, 1 - 1.8 * np.exp(-1.0), 1.0], abs=1e-6)
    assert np.all(curve[:, 1] == 0.0)


@pytest.mark.parametrize("times", [MOLLI_533, MOLLI_4132, SHMOLLI_511, PHILIPS_LIKE_10],
                         ids=["MOLLI 5(3)3", "MOLLI 4(1)3(1)2", "ShMOLLI 5(1)(1)", "10 images (Philips-like)"])
def test_every_scheme_gives_each_tissue_the_same_curve_on_the_common_times(times):
    result = recovery_curves(_series(times))
    assert result.curves.array.shape == (len(STANDARD_INVERSION_TIMES_MS), 1, 6, 6)
    assert result.fitted.all()
    for block, t1 in enumerate(TISSUE_T1_MS):
        measured = result.curves.array[:, 0, :, 2 * block:2 * block + 2].reshape(len(STANDARD_INVERSION_TIMES_MS), -1)
        assert np.abs(measured - _true_curve(t1)[:, None]).max() < 0.01, (t1, measured[:, 0], _true_curve(t1))


def test_the_scheme_read_is_named():
    assert describe_scheme(_series(MOLLI_533)) == "MOLLI 5+3 (8 images per slice); inversion times from InversionTime"
    assert describe_scheme(_series(MOLLI_4132)).startswith("MOLLI 4+3+2 (9 images")
    assert describe_scheme(_series(SHMOLLI_511)).startswith("ShMOLLI 5+1+1 (7 images")
    assert "acquisition order unknown" in describe_scheme(_series(MOLLI_533, order_source=None))
    assert "rising inversion-time order" in describe_scheme(_series(sorted(MOLLI_533)))
    assert recovery_curves(_series(MOLLI_533)).curves.metadata["t1_scheme"].startswith("MOLLI 5+3")


def test_bad_common_times_are_refused():
    for times in ([], [100.0, -5.0], [float("nan")]):
        with pytest.raises(InputError, match="common inversion times"):
            recovery_curves(_series(MOLLI_533), inversion_times_ms=times)


def test_real_philips_molli_with_ten_images_per_slice_is_read():
    series = read_t1_series(PHILIPS / "native")
    boxes = [box for box in reference_boxes() if box.study == "native"]
    reference = series.reference()
    mask = np.zeros(reference.spatial_shape, dtype=np.uint8)
    placed = []
    for box in boxes:
        z = _slice_index(reference, read_volume(box.map_file))
        mask[z][box.mask(mask.shape[1:])] = 1
        placed.append((box, z))
    result = recovery_curves(series, reference.with_array(mask))
    assert result.scheme.startswith("10 images per slice in rising inversion-time order"), result.scheme
    assert result.curves.metadata["frame_of_reference_uid"] == series.reference().metadata["frame_of_reference_uid"]
    assert "2005,1572" in result.scheme
    means = {}
    for box, z in placed:
        inside = box.mask(mask.shape[1:]) & result.fitted[z]
        assert inside.sum() > 0.7 * box.mask(mask.shape[1:]).sum(), box.region
        curve = result.curves.array[:, z][:, inside].mean(axis=1)
        assert np.all(np.diff(curve) > 0) and curve[0] < -0.3 and curve[-1] > 0.5, (box.region, curve)
        means.setdefault("blood" if "blood" in box.region else "myocardium", []).append(curve.mean())
    assert max(means["blood"]) < min(means["myocardium"])  # blood (T1 ~1.5 s) recovers slower than myocardium


def test_positional_encoding_is_the_transformer_encoding():
    encoding = positional_encoding(np.array([0.0, 3.0]), 4)
    assert encoding[0] == pytest.approx([0.0, 1.0, 0.0, 1.0])
    assert encoding[1] == pytest.approx([np.sin(3.0), np.cos(3.0), np.sin(0.03), np.cos(0.03)])
    with pytest.raises(InputError, match="even"):
        positional_encoding(np.zeros(2), 3)
    features = curve_features(np.zeros((8, 4, 4)), np.ones((4, 4), bool), encoding_dims=4, position_weight=0.0)
    assert features.shape == (16, 8)


@pytest.fixture(scope="module")
def phantom_slice() -> dict:
    subject = phantom.make_subject(phantom.subject_ids("test", 1)[0])
    labels = phantom.render_labels(subject, 0.0)
    curves = recovery_curves(phantom.render_molli(subject, labels))
    masks = phantom.tissue_masks(labels)
    z = int(np.argmax(masks["blood"].sum(axis=(1, 2))))
    rows, cols = np.nonzero(masks["heart_roi"][z])
    box = (slice(rows.min() - 4, rows.max() + 5), slice(cols.min() - 4, cols.max() + 5))
    region = np.zeros(labels.spatial_shape[1:], bool)
    region[box] = True
    return {"curves": curves.curves.array[:, z], "region": region & curves.fitted[z],
            "blood": masks["blood"][z], "myocardium": masks["myocardium"][z] | masks["scar"][z]}


def test_clusters_separate_blood_from_myocardium_in_recovery_order(phantom_slice):
    clusters = cluster_curves(phantom_slice["curves"], phantom_slice["region"], clusters=4)
    assert set(np.unique(clusters[phantom_slice["region"]])) == {1, 2, 3, 4}
    assert np.all(clusters[~phantom_slice["region"]] == 0)
    means = [phantom_slice["curves"][:, clusters == k].mean() for k in range(1, 5)]
    assert means == sorted(means, reverse=True)  # label 1 recovers fastest
    blood = np.bincount(clusters[phantom_slice["blood"] & phantom_slice["region"]], minlength=5)
    myocardium = np.bincount(clusters[phantom_slice["myocardium"] & phantom_slice["region"]], minlength=5)
    blood_label, myocardium_label = int(np.argmax(blood)), int(np.argmax(myocardium))
    assert blood_label > myocardium_label  # blood's long T1: a later (slower) cluster
    assert blood[blood_label] > 0.8 * blood.sum() and myocardium[myocardium_label] > 0.8 * myocardium.sum()


def test_clustering_is_the_same_for_the_same_seed(phantom_slice):
    first = cluster_curves(phantom_slice["curves"], phantom_slice["region"], seed=3)
    assert np.array_equal(first, cluster_curves(phantom_slice["curves"], phantom_slice["region"], seed=3))


def test_clustering_bad_input_is_refused(phantom_slice):
    with pytest.raises(InputError, match="do not match"):
        cluster_curves(phantom_slice["curves"], phantom_slice["region"][:-1])
    with pytest.raises(InputError, match="too few"):
        cluster_curves(phantom_slice["curves"], np.zeros_like(phantom_slice["region"]))
    with pytest.raises(InputError, match="at least 2"):
        cluster_curves(phantom_slice["curves"], phantom_slice["region"], clusters=1)
