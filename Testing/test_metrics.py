"""Metrics against hand-computed values and skimage; LPIPS availability reporting."""

import math
import sys
import types

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from CMRSynthesisLib import metrics
from CMRSynthesisLib.errors import InputError


def test_cnr_hand_computed():
    # region1 = top row: mean 12. region2 = bottom row (2, 4, 6): mean 4, population std sqrt((4 + 0 + 4) / 3).
    # CNR = |12 - 4| / sqrt(8 / 3) = sqrt(24).
    image = np.array([[10.0, 12.0, 14.0], [2.0, 4.0, 6.0]])
    top = np.array([[True, True, True], [False, False, False]])
    assert metrics.cnr(image, top, ~top) == pytest.approx(math.sqrt(24))
    # Swapped: |4 - 12| / std(10, 12, 14) = 8 / sqrt(8 / 3), the same value here.
    assert metrics.cnr(image, ~top, top) == pytest.approx(math.sqrt(24))


def test_cnr_on_3d_and_contrast_metrics():
    # Two slices; scar voxels 9, myocardium 1 and 3 (mean 2, std 1), blood 5 and 7 (mean 6, std 1).
    image = np.array([[[9.0, 1.0], [5.0, 0.0]], [[9.0, 3.0], [7.0, 0.0]]])
    scar, myo, blood = np.zeros((3, 2, 2, 2), bool)
    scar[:, 0, 0] = myo[:, 0, 1] = blood[:, 1, 0] = True
    assert metrics.contrast_metrics(image, scar, myo, blood) == pytest.approx(
        {"cnr_scar_myo": 7.0, "cnr_scar_blood": 3.0})


def test_cnr_errors():
    image = np.arange(6.0).reshape(2, 3)
    region = np.array([[True, True, False], [False, False, False]])
    with pytest.raises(InputError, match="region2 mask is empty"):
        metrics.cnr(image, region, np.zeros_like(region))
    with pytest.raises(InputError, match="standard deviation"):
        metrics.cnr(np.ones((2, 3)), region, ~region)
    with pytest.raises(InputError, match=r"\(3, 2\).*\(2, 3\)"):
        metrics.cnr(image, region, np.ones((3, 2), bool))


def test_mse_psnr_nmse_known_difference():
    reference = np.zeros((4, 4))
    test = reference + 2.0
    assert metrics.mse(reference, test) == pytest.approx(4.0)
    # 10 log10(10^2 / 4) = 10 log10(25)
    assert metrics.psnr(reference, test, data_range=10.0) == pytest.approx(10 * math.log10(25))
    assert metrics.psnr(test, test, data_range=10.0) == math.inf
    # sum((2 - 3)^2) / sum(2^2) = 16 / 64
    assert metrics.nmse(np.full((4, 4), 2.0), np.full((4, 4), 3.0)) == pytest.approx(0.25)


def test_ssim_identical_and_perturbed_match_skimage():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 100, (20, 24))
    test = reference + rng.normal(0, 10, reference.shape)
    assert metrics.ssim(reference, reference, data_range=100.0) == pytest.approx(1.0)
    value = metrics.ssim(reference, test, data_range=100.0)
    assert value < 0.99
    assert value == pytest.approx(structural_similarity(reference, test, win_size=7, data_range=100.0))
    # A 6 x 8 crop gets the largest odd window that fits: 5.
    small = metrics.ssim(reference[:6, :8], test[:6, :8], data_range=100.0)
    assert small == pytest.approx(structural_similarity(reference[:6, :8], test[:6, :8], win_size=5, data_range=100.0))


def test_shape_mismatch_and_nan_are_refused():
    with pytest.raises(InputError, match=r"\(4, 4\).*\(4, 5\)"):
        metrics.mse(np.zeros((4, 4)), np.zeros((4, 5)))
    bad = np.zeros((4, 4))
    bad[1, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        metrics.psnr(np.zeros((4, 4)), bad, data_range=1.0)
    with pytest.raises(InputError, match="NaN"):
        metrics.cnr(bad, np.ones((4, 4), bool), np.ones((4, 4), bool))
    with pytest.raises(InputError, match="data_range"):
        metrics.ssim(np.zeros((8, 8)), np.zeros((8, 8)), data_range=0.0)


def _mask(shape, *pixels):
    mask = np.zeros(shape, bool)
    for pixel in pixels:
        mask[pixel] = True
    return mask


def test_roi_bounding_box_enlarges_symmetrically_and_stays_inside():
    # Rows 10..13 (4 rows) grow by 6 on each side; columns 20..39 (20 wide) are already large enough.
    assert metrics.roi_bounding_box(_mask((40, 50), (10, 20), (13, 39))) == (slice(4, 20), slice(20, 40))
    # A pixel at the top-left corner: the 16 x 16 box is shifted inside the image.
    assert metrics.roi_bounding_box(_mask((40, 50), (2, 3))) == (slice(0, 16), slice(0, 16))
    # A pixel at the bottom-right corner.
    assert metrics.roi_bounding_box(_mask((40, 50), (39, 49))) == (slice(24, 40), slice(34, 50))
    # An image smaller than min_size: the whole image.
    assert metrics.roi_bounding_box(_mask((10, 12), (5, 5))) == (slice(0, 10), slice(0, 12))
    with pytest.raises(InputError, match="empty"):
        metrics.roi_bounding_box(np.zeros((8, 8), bool))


def test_region_metrics_on_the_roi_crop():
    rng = np.random.default_rng(1)
    reference = rng.uniform(0, 50, (40, 40))
    test = reference.copy()
    test[15:25, 15:25] += rng.normal(0, 5, (10, 10))
    test[0, 0] += 1000  # outside the crop: must not count
    roi = _mask((40, 40), (18, 18), (21, 21))
    crop = (slice(12, 28), slice(12, 28))
    data_range = np.ptp(reference[crop])
    result = metrics.region_metrics(reference, test, roi)
    assert result["ssim"] == pytest.approx(metrics.ssim(reference[crop], test[crop], data_range))
    assert result["psnr"] == pytest.approx(metrics.psnr(reference[crop], test[crop], data_range))
    assert result["mse"] == pytest.approx(np.mean((reference[crop] - test[crop]) ** 2))
    assert result["nmse"] == pytest.approx(np.sum((reference[crop] - test[crop]) ** 2) / np.sum(reference[crop] ** 2))
    identical = metrics.region_metrics(reference, reference, roi)
    assert identical["ssim"] == pytest.approx(1.0) and identical["psnr"] == math.inf and identical["mse"] == 0
    with pytest.raises(InputError, match="ROI mask"):
        metrics.region_metrics(reference, test, np.ones((40, 41), bool))


def test_lpips_reported_unavailable_here_with_a_reason():
    available, reason = metrics.lpips_status()
    assert available is False
    assert isinstance(reason, str) and "lpips" in reason
    assert metrics.lpips_distance(np.zeros((16, 16)), np.ones((16, 16)), 1.0) is None
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 1, (32, 32))
    result = metrics.region_metrics(image, image * 0.9, _mask((32, 32), (16, 16)))
    assert result["lpips"] is None and result["lpips_unavailable_reason"] == reason


class _FakeLpipsNet(torch.nn.Module):
    """Stands in for lpips.LPIPS: records its inputs and returns their mean squared difference."""

    def __init__(self, **kwargs):
        super().__init__()
        self.inputs = None

    def forward(self, in0, in1):
        self.inputs = (in0, in1)
        return ((in0 - in1) ** 2).mean().reshape(1, 1, 1, 1)


@pytest.fixture
def fake_lpips(tmp_path, monkeypatch):
    """A stand-in `lpips` package and torchvision, with the hub cache in tmp_path; returns the backbone path."""
    package = tmp_path / "lpips"
    (package / "weights" / "v0.1").mkdir(parents=True)
    (package / "weights" / "v0.1" / "alex.pth").write_bytes(b"weights")
    lpips = types.ModuleType("lpips")
    lpips.__file__ = str(package / "__init__.py")
    lpips.LPIPS = _FakeLpipsNet
    url = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    torchvision = types.ModuleType("torchvision")
    torchvision.models = types.SimpleNamespace(get_weight=lambda name: types.SimpleNamespace(url=url))
    monkeypatch.setitem(sys.modules, "lpips", lpips)
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"


def test_lpips_without_backbone_weights_is_unavailable(fake_lpips):
    metric = metrics.LPIPS()
    assert not metric.available
    assert str(fake_lpips) in metric.reason and "never downloaded" in metric.reason
    assert metric.distance(np.zeros((16, 16)), np.ones((16, 16)), 1.0) is None


def test_lpips_inputs_are_scaled_to_minus_one_one_three_channels_and_upsampled(fake_lpips):
    fake_lpips.parent.mkdir(parents=True)
    fake_lpips.write_bytes(b"backbone")
    metric = metrics.LPIPS()
    assert metric.available and str(fake_lpips) in metric.reason
    reference = np.linspace(10.0, 30.0, 16 * 16).reshape(16, 16)
    # A shift of 2 on a data range of 20 is 2 * 2 / 20 = 0.2 in [-1, 1] units everywhere: squared 0.04.
    assert metric.distance(reference, reference + 2.0) == pytest.approx(0.04, rel=1e-5)
    in0, in1 = metric._model.inputs
    assert in0.shape == in1.shape == (1, 3, 64, 64)
    assert in0.min().item() == pytest.approx(-1.0) and in0.max().item() == pytest.approx(1.0)


def test_summarise_mean_sd_n_ignoring_none():
    rows = [{"a": 1.0, "b": None, "reason": "x"}, {"a": 3.0, "b": 2.0, "reason": None}, {"a": 5.0}]
    summary = metrics.summarise(rows)
    # a: mean 3, sample SD sqrt(((-2)^2 + 0 + 2^2) / 2) = 2
    assert summary["a"] == {"mean": pytest.approx(3.0), "sd": pytest.approx(2.0), "n": 3, "n_nonfinite": 0}
    assert summary["b"] == {"mean": 2.0, "sd": None, "n": 1, "n_nonfinite": 0}
    assert "reason" not in summary
    assert metrics.summarise([{"lpips": None}]) == {"lpips": {"mean": None, "sd": None, "n": 0, "n_nonfinite": 0}}
    with_inf = metrics.summarise([{"psnr": float("inf")}, {"psnr": 30.0}, {"psnr": 40.0}])
    assert with_inf["psnr"] == {"mean": 35.0, "sd": pytest.approx(50**0.5), "n": 2, "n_nonfinite": 1}
