"""T1 fitting: exact recovery of noiseless MOLLI curves, precision at the Cramér-Rao bound under noise, polarity
restoration, masks and failure flags, the ShMOLLI conditional fit (synthetic and the Siemens phantom's tube
means), the Philips LV-blood curve, scheme detection, bad inputs, chunked progress and cancelling."""

import numpy as np
import pytest

from CMRSynthesisLib.analysis import t1fit
from CMRSynthesisLib.analysis.t1fit import MOLLI, SHMOLLI, detect_scheme, fit_t1
from CMRSynthesisLib.errors import Cancelled, InputError

# Philips native MOLLI, slice 1 (Testing/Data/molli_patient_philips/README.md): TIs and the mean stored values of
# the LV blood box; the README's own fit gives A 661.6, B 1349.7, T1* 1603.7 ms, T1 1668 ms; the scanner 1664.9.
PHILIPS_TI = np.array([231.0, 350, 1184, 1243, 2128, 2150, 3007, 3110, 4063, 5017])
PHILIPS_BLOOD = np.array([505.2, 427.0, 19.6, 42.1, 300.1, 307.4, 448.3, 467.4, 567.6, 596.1])

# Siemens ShMOLLI phantom (Testing/Data/shmolli_phantom_siemens/README.md): TIs in instance order, the mean stored
# magnitude of each tube box (rows: tubes 1-9; columns: the 7 images) and the scanner map's median T1 per tube.
SHMOLLI_TI = [100.0, 1100, 2100, 3100, 4100, 180, 260]
TUBES = np.array([
    [467.7, 146.9, 60.8, 195.5, 282.6, 316.8, 26.0],
    [459.3, 62.0, 302.7, 413.2, 463.9, 376.1, 135.4],
    [480.9, 232.3, 49.8, 84.4, 183.5, 265.7, 4.8],
    [256.6, 162.9, 280.6, 313.6, 323.8, 196.7, 103.3],
    [315.9, 115.8, 268.2, 323.7, 343.5, 246.6, 116.4],
    [287.2, 52.5, 196.2, 257.2, 283.2, 223.0, 88.0],
    [160.6, 363.1, 385.6, 386.4, 387.1, 42.0, 51.0],
    [329.1, 65.7, 224.1, 289.8, 315.7, 247.0, 102.2],
    [262.0, 281.3, 374.6, 391.2, 394.2, 179.2, 88.1],
])
TUBE_SCANNER_T1 = np.array([2644.0, 1364, 3627, 808, 1064, 1310, 301, 1299, 560])


def molli_curves(t1: np.ndarray, a: float = 500.0, b_over_a: float = 1.95,
                 ti: np.ndarray = PHILIPS_TI) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noiseless signed curves (n, p) of A - B exp(-TI/T1*) with T1* = T1 / (B/A - 1); also B and T1*."""
    t1 = np.asarray(t1, dtype=float)
    b = a * np.broadcast_to(b_over_a, t1.shape)
    t1_star = t1 / (b / a - 1.0)
    return a - b * np.exp(-ti[:, None] / t1_star[None, :]), b, t1_star


def rician(signed: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of SD sigma per channel."""
    return np.abs(signed + rng.normal(0.0, sigma, signed.shape) + 1j * rng.normal(0.0, sigma, signed.shape))


def t1_cramer_rao_sd(t1: float, sigma: float, a: float = 500.0, b_over_a: float = 1.95,
                     ti: np.ndarray = PHILIPS_TI) -> float:
    """Cramér-Rao SD of T1 = T1* (B/A - 1) for Gaussian noise SD sigma on every sample (sign known)."""
    b, t1_star = a * b_over_a, t1 / (b_over_a - 1.0)
    decay = np.exp(-ti / t1_star)
    jacobian = np.stack([np.ones_like(ti), -decay, -b * decay * ti / t1_star**2], axis=1)  # d/dA, d/dB, d/dT1*
    covariance = sigma**2 * np.linalg.inv(jacobian.T @ jacobian)
    gradient = np.array([-t1_star * b / a**2, t1_star / a, b / a - 1.0])  # dT1/dA, dT1/dB, dT1/dT1*
    return float(np.sqrt(gradient @ covariance @ gradient))


def shmolli_signal(t1: np.ndarray, rr: float = 1000.0, t1_star_ratio: float = 0.9,
                   m0: float = 1000.0) -> np.ndarray:
    """ShMOLLI 5(1)1(1)1 magnitudes (7, p), acquisition order, TIs as SHMOLLI_TI, from the Look-Locker model.

    Images sit at 100 ms + j RR (j = 0..4 after inversion 1, 6 and 8 after inversions 2 and 3 at TI 180 and
    260 ms). While images are read (from an inversion to half a beat after its last image) Mz relaxes with T1*
    towards M0* = M0 T1*/T1; in the rest beats it relaxes freely with T1 towards M0; inversions are perfect. So
    the first inversion's samples follow A - B exp(-TI/T1*) with T1*(B/A - 1) = T1 exactly, and the 2nd and 3rd
    inversions start from incomplete recovery unless T1 is short.
    """
    t1 = np.asarray(t1, dtype=float)
    t1_star, m0_star = t1_star_ratio * t1, t1_star_ratio * m0

    def read(mz: np.ndarray, ms: float) -> np.ndarray:
        return m0_star - (m0_star - mz) * np.exp(-ms / t1_star)

    def rest(mz: np.ndarray, ms: float) -> np.ndarray:
        return m0 - (m0 - mz) * np.exp(-ms / t1)

    mz = np.full_like(t1, -m0)  # inversion 1 at time 0, from equilibrium
    samples = [read(mz, 100.0 + j * rr) for j in range(5)]
    mz, now = read(mz, 100.0 + 4.5 * rr), 100.0 + 4.5 * rr
    for ti, image_time in ((180.0, 100.0 + 6 * rr), (260.0, 100.0 + 8 * rr)):
        mz = -rest(mz, image_time - ti - now)
        samples.append(read(mz, ti))
        mz, now = read(mz, ti + rr / 2), image_time + rr / 2
    return np.abs(np.array(samples))


def test_noiseless_molli_recovers_t1_a_b_t1star():
    t1 = np.geomspace(200.0, 2500.0, 60)
    b_over_a = np.repeat([[1.8, 2.0, 2.15]], 60, axis=0).T  # spatial (3, 60): 180 curves in one call
    signed, b, t1_star = molli_curves(np.broadcast_to(t1, (3, 60)).ravel(), b_over_a=b_over_a.ravel())
    signal = np.abs(signed).reshape(10, 3, 60)
    fit = fit_t1(signal, PHILIPS_TI)
    expected = np.broadcast_to(t1, (3, 60))
    assert not fit.failed.any()
    assert np.abs(fit.t1 / expected - 1).max() < 1e-4  # 0.01 %
    assert np.abs(fit.a / 500.0 - 1).max() < 1e-4
    assert np.abs(fit.b / b.reshape(3, 60) - 1).max() < 1e-4
    assert np.abs(fit.t1_star / t1_star.reshape(3, 60) - 1).max() < 1e-4
    assert fit.r2.min() > 0.99999 and (fit.samples_used == 10).all()
    assert fit.t1.dtype == np.float32 and fit.inverted.dtype == np.int8 and fit.failed.dtype == bool
    shuffled = np.random.default_rng(0).permutation(10)  # any sample order: sorted by TI inside
    again = fit_t1(signal[shuffled], PHILIPS_TI[shuffled])
    np.testing.assert_array_equal(again.t1, fit.t1)


def test_noise_precision_at_cramer_rao_bound():
    # Complex Gaussian noise of SD 1 % of A. The fitted T1's SD must match the Cramér-Rao SD computed from the
    # model's Jacobian (the best any unbiased estimator can do), and its median must not be biased: with 1000
    # pixels the SD estimate is good to about 2 % and the median to 0.04 SD, so the bounds below are 4-5 of those.
    rng = np.random.default_rng(2)
    sigma, values, pixels = 5.0, (600.0, 1000.0, 1500.0, 2000.0, 2500.0), 1000
    t1 = np.repeat(values, pixels)
    fit = fit_t1(rician(molli_curves(t1)[0], sigma, rng), PHILIPS_TI)
    assert not fit.failed.any()
    for value in values:
        estimates = fit.t1[t1 == value]
        bound = t1_cramer_rao_sd(value, sigma)
        assert 0.90 < np.std(estimates) / bound < 1.12, value
        assert abs(np.median(estimates) - value) < 0.15 * bound, value


def test_polarity_restoration_chooses_the_inverted_samples():
    t1 = np.array([150.0, 300.0, 700.0, 1000.0, 1700.0, 2500.0, 4000.0])
    signed, b, t1_star = molli_curves(t1)
    null_ms = t1_star * np.log(b / 500.0)  # where A - B exp(-TI/T1*) crosses zero
    expected = (PHILIPS_TI[:, None] < null_ms[None, :]).sum(axis=0)
    assert len(set(expected)) >= 5  # several different k are exercised
    fit = fit_t1(np.abs(signed), PHILIPS_TI)
    np.testing.assert_array_equal(fit.inverted, expected)
    np.testing.assert_allclose(fit.t1, t1, rtol=1e-4)


def test_mask_respected_outside_zero_and_not_failed():
    rng = np.random.default_rng(4)
    t1 = rng.uniform(300.0, 2000.0, (12, 9))
    signal = np.abs(molli_curves(t1.ravel())[0]).reshape(10, 12, 9)
    labels = np.zeros((12, 9), dtype=np.uint8)
    labels[3:9, 2:7] = 2  # integer labels are accepted as a mask
    fit = fit_t1(signal, PHILIPS_TI, labels)
    inside = labels > 0
    np.testing.assert_allclose(fit.t1[inside], t1[inside], rtol=1e-4)
    for name in ("t1", "a", "b", "t1_star", "r2", "inverted", "samples_used", "failed"):
        assert not getattr(fit, name)[~inside].any(), name
        assert getattr(fit, name).shape == (12, 9), name


def test_garbage_is_flagged_never_nan():
    rng = np.random.default_rng(5)
    pure_noise = np.abs(rng.normal(0, 10, (10, 2000)) + 1j * rng.normal(0, 10, (10, 2000)))
    constant = np.full((10, 1), 300.0)
    zero = np.zeros((10, 1))
    falling = np.linspace(600.0, 100.0, 10)[:, None]  # no recovery: not an inversion-recovery curve
    good = np.abs(molli_curves(np.array([1000.0, 3000.0]))[0])
    signal = np.concatenate([constant, zero, falling, good, pure_noise], axis=1)
    fit = fit_t1(signal, PHILIPS_TI, t1_range_ms=(50.0, 2000.0))
    for name in ("t1", "a", "b", "t1_star", "r2"):
        assert np.all(np.isfinite(getattr(fit, name))), name
    assert fit.failed[:3].all() and (fit.t1[:3] == 0).all()
    assert not fit.failed[3] and fit.t1[3] == pytest.approx(1000.0, rel=1e-4)
    assert fit.failed[4] and fit.t1[4] == 0  # T1 3000 ms: a good fit outside the plausible range given
    noise_fit = slice(5, None)
    assert fit.failed[noise_fit].mean() > 0.5  # polarity restoration can fit noise; most such fits are caught
    kept = ~fit.failed[noise_fit]
    assert (fit.r2[noise_fit][kept] >= t1fit.DEFAULT_MIN_R2).all()
    assert ((fit.t1[noise_fit][kept] >= 50) & (fit.t1[noise_fit][kept] <= 2000)).all()
    assert (fit.t1[noise_fit][~kept] == 0).all()


def test_shmolli_conditional_fit_on_synthetic_incomplete_recovery():
    values = np.array([300.0, 400.0, 600.0, 900.0, 1200.0, 1600.0, 2000.0, 2500.0, 3000.0])
    t1 = np.repeat(values, 200)
    signal = rician(shmolli_signal(t1), 2.0, np.random.default_rng(6))  # noise SD 0.2 % of M0
    scheme, index = detect_scheme(SHMOLLI_TI)
    assert (scheme, index) == (SHMOLLI, [0, 0, 0, 0, 0, 1, 2])
    conditional = fit_t1(signal, SHMOLLI_TI, scheme=SHMOLLI, inversion_index=index)
    plain = fit_t1(signal, SHMOLLI_TI)  # all 7 samples on one curve
    for value in values:
        chosen = t1 == value
        assert abs(np.median(conditional.t1[chosen]) / value - 1) < 0.01, value
        used = conditional.samples_used[chosen]
        if value <= 300:
            assert np.mean(used == 7) > 0.7, value  # full recovery between inversions: all three used
        if value >= 1200:
            assert (used == 5).all(), value  # incomplete recovery: the first inversion only
            assert abs(np.median(plain.t1[chosen]) / value - 1) > 0.10, value
    assert abs(np.median(plain.t1[t1 == 3000.0]) / 3000.0 - 1) > 0.5


def test_shmolli_phantom_tube_means_match_the_scanner():
    scheme, index = detect_scheme(SHMOLLI_TI)
    fit = fit_t1(TUBES.T, SHMOLLI_TI, scheme=scheme, inversion_index=index)
    error = fit.t1 / TUBE_SCANNER_T1 - 1
    assert np.abs(error).max() < 0.01, error  # measured: within 0.15 % of every tube's scanner median
    assert fit.samples_used.tolist() == [5, 5, 5, 5, 5, 5, 7, 5, 5]  # tube 7 (301 ms) uses all three inversions
    plain = fit_t1(TUBES.T, SHMOLLI_TI)
    plain_error = plain.t1 / TUBE_SCANNER_T1 - 1
    long_t1 = TUBE_SCANNER_T1 > 1000
    assert (plain_error[long_t1] < -0.10).all(), plain_error  # 12-68 % too short: why ShMOLLI is conditional
    assert plain_error[2] < -0.6  # tube 3, 3627 ms


def test_philips_blood_curve_matches_readme_and_scanner():
    fit = fit_t1(PHILIPS_BLOOD, PHILIPS_TI)  # one pixel: spatial shape ()
    assert fit.t1.shape == ()
    assert float(fit.t1) == pytest.approx(1664.9, rel=0.01)
    assert float(fit.t1) == pytest.approx(1668.0, abs=1.0)
    assert [float(fit.a), float(fit.b), float(fit.t1_star)] == pytest.approx([661.6, 1349.7, 1603.7], rel=1e-3)
    assert int(fit.inverted) == 2 and fit.r2 > 0.999


def test_detect_scheme_patterns():
    assert detect_scheme([100, 1100, 2100, 3100, 4100, 180, 1180, 2180]) == (MOLLI, [0] * 5 + [1] * 3)  # 5(3)3
    molli_335 = [100, 1100, 2100, 180, 1180, 2180, 260, 1260, 2260, 3260, 4260]
    assert detect_scheme(molli_335) == (MOLLI, [0] * 3 + [1] * 3 + [2] * 5)
    assert detect_scheme(PHILIPS_TI)[0] == MOLLI  # sorted by TI: the acquisition order is unknown
    assert detect_scheme([120, 1050, 1990, 2960, 3900, 200, 270])[0] == SHMOLLI  # irregular heartbeats


@pytest.mark.parametrize(("signal", "times", "options", "match"), [
    (np.ones((2, 4)), [100, 200], {}, "at least 3 different inversion times"),
    (np.ones((3, 4)), [100, 100, 200], {}, "at least 3 different inversion times"),
    (np.ones((3, 4)), [100, -5, 200], {}, "positive finite"),
    (np.ones((3, 4)), [100, np.nan, 200], {}, "positive finite"),
    (np.ones((4, 4)), [100, 200, 300], {}, "3 inversion times"),
    (np.ones((3, 4)), [100, 200, 300], {"mask": np.ones(5, bool)}, "mask has shape"),
    (np.ones((3, 4)), [100, 200, 300], {"mask": np.zeros(4, bool)}, "selects no pixel"),
    (np.ones((3, 4)), [100, 200, 300], {"mask": np.full(4, 0.5)}, "boolean or integer"),
    (np.array([[1.0, np.nan], [1, 1], [1, 1]]), [100, 200, 300], {}, "NaN or infinite"),
    (np.array([[1.0, np.nan], [1, 1], [1, 1]]), [100, 200, 300], {"mask": [True, False]}, None),
    (-np.ones((3, 4)), [100, 200, 300], {}, "negative values"),
    (np.ones((3, 4), complex), [100, 200, 300], {}, "real magnitude"),
    (np.ones((3, 4)), [100, 200, 300], {"scheme": "fancy"}, "unknown T1-mapping scheme"),
    (np.ones((7, 4)), SHMOLLI_TI, {"scheme": SHMOLLI}, "needs the inversion each sample follows"),
    (np.ones((7, 4)), SHMOLLI_TI, {"scheme": SHMOLLI, "inversion_index": [0, 0, 0, 0, 0, 1]}, "one integer"),
    (np.ones((7, 4)), SHMOLLI_TI, {"scheme": SHMOLLI, "inversion_index": [0] * 7}, "after each of the 2nd"),
    (np.ones((7, 4)), SHMOLLI_TI, {"scheme": SHMOLLI, "inversion_index": [0, 0, 1, 1, 1, 1, 2]}, "at least 3"),
    (np.ones((7, 4)), SHMOLLI_TI, {"scheme": SHMOLLI, "inversion_index": [0, 0, 0, 0, 0, 1, 2], "rr_ms": 0},
     "heartbeat interval rr_ms"),
    (np.ones((7, 4)), SHMOLLI_TI, {"scheme": SHMOLLI, "inversion_index": [0, 0, 0, 0, 0, 1, 2], "rr_ms": "1000"},
     "heartbeat interval rr_ms"),
    (np.ones((3, 4)), [100, 200, 300], {"t1_range_ms": (500, 100)}, "low < high"),
    (np.ones((3, 4)), [100, 200, 300], {"t1_range_ms": 500}, r"\(low, high\)"),
    (np.ones((3, 4)), [100, 200, 300], {"min_r2": 2.0}, "min_r2"),
])
def test_bad_inputs_raise_input_error(signal, times, options, match):
    if match is None:  # NaN outside the mask is fine
        fit_t1(signal, times, **options)
        return
    with pytest.raises(InputError, match=match):
        fit_t1(signal, times, **options)


def test_chunked_progress_and_cancel(monkeypatch):
    t1 = np.linspace(300.0, 2000.0, 230)
    signal = np.abs(molli_curves(t1)[0])
    whole = fit_t1(signal, PHILIPS_TI)
    monkeypatch.setattr(t1fit, "CHUNK_PIXELS", 50)
    calls = []
    chunked = fit_t1(signal, PHILIPS_TI, progress=lambda fraction, message: calls.append((fraction, message)))
    np.testing.assert_array_equal(chunked.t1, whole.t1)
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0 and len(calls) == 6
    assert "230" in calls[-1][1]
    seen = []

    def cancel_after_two(fraction: float, message: str) -> bool:
        seen.append(fraction)
        return len(seen) < 3

    with pytest.raises(Cancelled):
        fit_t1(signal, PHILIPS_TI, progress=cancel_after_two)
    assert len(seen) == 3
