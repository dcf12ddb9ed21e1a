"""Images of a synthetic subject from its labels and tissue table: LGE, MOLLI, native T1 map, T2-weighted dark blood
and bSSFP cine, each with the subject's acquisition (texture, partial-volume blur, coil shading, Rician noise,
stored intensity scale). Every image lies on the subject's grid, so all contrasts overlay exactly.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter, map_coordinates

from ..io.t1_series import T1Series
from ..volume import Volume
from .anatomy import LABELS, Acquisition, Subject, Tissue
from .motion import cine_phases, cine_trigger_times_ms, material_positions_mm, render_labels

# MOLLI readout saturation: the apparent relaxation rate is 1/T1* = 1/T1 + this (ms^-1), so T1* / T1 is about 0.8 in
# myocardium, as in bSSFP-read MOLLI.
LOOK_LOCKER_RATE_PER_MS = 1.0 / 4000.0
T2W_REPETITION_MS = 1800.0  # dark-blood TSE triggered every other heartbeat
_NOISE_TAGS = {"lge": 20251, "molli": 20252, "t2w": 20253, "cine": 20254, "oedema": 20255}
OEDEMA_MARGIN_MM = (4.0, 12.0)  # how far the oedema reaches beyond the infarct in the myocardium (area at risk)
OEDEMA_T2_FACTOR = (1.25, 1.6)  # oedematous myocardium's T2 over the remote one's (acute infarct: T2 up 20-60 %)
OEDEMA_T1_FACTOR = 1.1  # and its native T1, as the acute scar's


def tissue_values(subject: Subject, signal) -> np.ndarray:
    """Lookup table over label values: signal(tissue) for every label of LABELS (index = label value)."""
    table = np.zeros(max(LABELS.values()) + 1)
    for name, index in LABELS.items():
        table[index] = signal(subject.tissues[name])
    return table


def render_lge(subject: Subject, labels: Volume | None = None) -> Volume:
    """int16 magnitude inversion-recovery LGE (z, y, x): PD |1 - 2 exp(-TI / T1post)| with smooth texture,
    partial-volume blur, coil shading and Rician noise (blood signal / lge_snr). Raises GeometryError for labels on
    another grid."""
    labels = _labels_on_grid(subject, labels)
    ti = subject.inversion_time_ms
    lut = tissue_values(subject, lambda t: t.proton_density * abs(1.0 - 2.0 * math.exp(-ti / t.t1_post_ms)))
    acquisition = subject.acquisition
    image = _acquire(subject, lut[labels.array], "lge", lut[LABELS["lv_blood"]] / acquisition.lge_snr)
    return subject.geometry.volume(
        image, modality="MR", contrast="LGE", inversion_time_ms=round(ti, 1), phantom_subject=subject.subject_id,
        units="a.u.", field_strength_t=acquisition.field_strength_t,
        slice_thickness_mm=subject.geometry.slice_thickness_mm)


def render_t1_map(subject: Subject, labels: Volume | None = None, *, post_contrast: bool = False) -> Volume:
    """float32 true T1 map (z, y, x) in ms: each tissue's native (or post-contrast) T1, 0 in air."""
    labels = _labels_on_grid(subject, labels)
    lut = tissue_values(subject, lambda t: t.t1_post_ms if post_contrast else t.t1_native_ms)
    lut[LABELS["background"]] = 0.0
    return subject.geometry.volume(lut[labels.array].astype(np.float32), units="ms", quantity="T1",
                                   contrast="T1 post-contrast" if post_contrast else "T1 native",
                                   phantom_subject=subject.subject_id,
                                   field_strength_t=subject.acquisition.field_strength_t)


def molli_inversion_times(first_ms: float = 100.0, rr_ms: float = 1000.0, offset_ms: float = 80.0
                          ) -> tuple[list[float], list[int]]:
    """MOLLI 5(3)3 inversion times in acquisition order and the inversion each image follows (0 or 1)."""
    times = [first_ms + k * rr_ms for k in range(5)] + [first_ms + offset_ms + k * rr_ms for k in range(3)]
    return times, [0] * 5 + [1] * 3


def render_molli(subject: Subject, labels: Volume | None = None, *, post_contrast: bool = False,
                 snr: float = 40.0) -> T1Series:
    """Magnitude MOLLI 5(3)3 source images of every slice from the Look-Locker signal equation.

    Each voxel follows |M0 (T1*/T1 - (1 + T1*/T1) exp(-TI/T1*))| with 1/T1* = 1/T1 + LOOK_LOCKER_RATE_PER_MS and
    M0 the proton density: an ideal MOLLI (full recovery between the inversions), so a correct fit returns the
    tissue table's T1 exactly (T1 = T1* (B/A - 1)). Coil shading and Rician noise (blood signal / `snr`) are added.
    """
    labels = _labels_on_grid(subject, labels)
    times, _ = molli_inversion_times()
    lut_t1 = tissue_values(subject, lambda t: t.t1_post_ms if post_contrast else t.t1_native_ms)
    lut_pd = tissue_values(subject, lambda t: t.proton_density)
    t1 = lut_t1[labels.array]
    pd = lut_pd[labels.array] * shading_field(subject.acquisition, labels.spatial_shape)
    t1_star = 1.0 / (1.0 / t1 + LOOK_LOCKER_RATE_PER_MS)
    ti = np.asarray(times)[:, None, None, None]
    signal = pd * np.abs(t1_star / t1 - (1.0 + t1_star / t1) * np.exp(-ti / t1_star))
    rng = np.random.default_rng([subject.subject_id, _NOISE_TAGS["molli"], int(post_contrast)])
    noisy = _rician(signal, subject.tissues["lv_blood"].proton_density / snr, rng)
    images = labels.with_array((1000.0 * noisy).astype(np.float32), modality="MR",
                               contrast="MOLLI post-contrast" if post_contrast else "MOLLI native", units="a.u.")
    order = np.argsort(times)
    slices = labels.spatial_shape[0]
    return T1Series(images.with_array(images.array[order]), np.repeat(np.asarray(times)[order, None], slices, 1),
                    np.repeat(order[:, None], slices, 1), "phantom MOLLI 5(3)3")


def oedema_tissue(subject: Subject) -> tuple[float, Tissue] | None:
    """The myocardial oedema around an acute infarct: (margin in mm, its tissue: the remote myocardium with T2 times
    a factor in OEDEMA_T2_FACTOR and native T1 times OEDEMA_T1_FACTOR), drawn from the subject id alone; None without
    an acute infarct (a chronic scar has no oedema)."""
    if subject.scar is None or not subject.scar.acute:
        return None
    rng = np.random.default_rng([subject.subject_id, _NOISE_TAGS["oedema"]])
    margin, t2_factor = rng.uniform(*OEDEMA_MARGIN_MM), rng.uniform(*OEDEMA_T2_FACTOR)
    myocardium = subject.tissues["lv_myocardium"]
    return margin, Tissue(myocardium.proton_density, myocardium.t1_native_ms * OEDEMA_T1_FACTOR,
                          myocardium.t1_post_ms, myocardium.t2_ms * t2_factor)


def oedema_mask(subject: Subject, labels: Volume | None = None) -> np.ndarray:
    """(z, y, x) bool: the oedema of an acute infarct (`oedema_tissue`): the healthy LV myocardium within the margin
    of the scar in its slice, so it surrounds the infarct and reaches beyond it (through the wall over a
    subendocardial scar, and to either side), and excludes the scar itself, as MyoPS labels oedema. All False
    without an acute infarct. It changes only the T2-weighted image (the other contrasts ignore it)."""
    labels = _labels_on_grid(subject, labels)
    oedema = oedema_tissue(subject)
    mask = np.zeros(labels.spatial_shape, bool)
    if oedema is None:
        return mask
    spacing_yx = (labels.spacing[1], labels.spacing[0])
    for z in range(labels.spatial_shape[0]):
        scar = labels.array[z] == LABELS["scar"]
        if scar.any():
            near = distance_transform_edt(~scar, sampling=spacing_yx) <= oedema[0]
            mask[z] = near & (labels.array[z] == LABELS["lv_myocardium"])
    return mask


def render_t2w(subject: Subject, labels: Volume | None = None) -> Volume:
    """int16 dark-blood T2-weighted turbo spin echo (z, y, x): PD (1 - exp(-TR/T1)) exp(-TE/T2), blood suppressed to
    t2w_blood_residual of its signal; an acute infarct and its surrounding oedema (`oedema_mask`) bright. Texture,
    blur, shading, Rician noise (myocardial signal / t2w_snr)."""
    labels = _labels_on_grid(subject, labels)
    acquisition = subject.acquisition

    def t2w(t: Tissue) -> float:
        return (t.proton_density * (1.0 - math.exp(-T2W_REPETITION_MS / t.t1_native_ms))
                * math.exp(-acquisition.t2w_echo_ms / t.t2_ms))

    lut = tissue_values(subject, t2w)
    for name in ("lv_blood", "rv_blood", "aorta"):
        lut[LABELS[name]] *= acquisition.t2w_blood_residual
    sigma = lut[LABELS["lv_myocardium"]] / acquisition.t2w_snr
    signal = lut[labels.array]
    oedema = oedema_tissue(subject)
    if oedema is not None:
        signal = np.where(oedema_mask(subject, labels), t2w(oedema[1]), signal)
    image = _acquire(subject, signal, "t2w", sigma)
    return subject.geometry.volume(image, modality="MR", contrast="T2w dark blood", units="a.u.",
                                   echo_time_ms=round(acquisition.t2w_echo_ms, 1), phantom_subject=subject.subject_id,
                                   field_strength_t=acquisition.field_strength_t)


def bssfp_signal(proton_density: float, t1_ms: float, t2_ms: float, flip_deg: float) -> float:
    """Balanced SSFP steady-state magnitude for TR << T1, T2 at TE = TR / 2 on resonance:
    M0 sin(a) / ((T1/T2 + 1) - cos(a) (T1/T2 - 1)) (Scheffler & Lehnhardt, Eur Radiol 2003)."""
    alpha = math.radians(flip_deg)
    ratio = t1_ms / t2_ms
    return proton_density * math.sin(alpha) / ((ratio + 1.0) - math.cos(alpha) * (ratio - 1.0))


def render_cine(subject: Subject, *, infarct_contrast: bool = True) -> tuple[Volume, Volume]:
    """bSSFP cine of every slice over one RR interval, and its labels at every frame.

    Returns (cine, labels): int16 (t, z, y, x) with metadata trigger_times_ms (t,) and rr_interval_ms, and uint8
    labels (t, z, y, x) (values in LABELS). Blood bright (bSSFP T2/T1 contrast times inflow), myocardium grey, fat
    bright, lungs dark. The myocardial texture moves with the tissue (sampled at each voxel's end-diastolic
    position), so motion can be tracked; blood texture (flow) changes from frame to frame.

    infarct_contrast False: the scar is drawn with the remote myocardium's bSSFP signal (the same draws of texture
    and noise otherwise), so the infarct shows in the cine only through its motion: what a method that claims to see
    infarct from motion must be tested on (an acute infarct's oedema would otherwise brighten it by about 15 %).
    """
    acquisition = subject.acquisition
    lut = tissue_values(subject, lambda t: bssfp_signal(t.proton_density, t.t1_native_ms, t.t2_ms,
                                                         acquisition.cine_flip_deg))
    if not infarct_contrast:
        lut[LABELS["scar"]] = lut[LABELS["lv_myocardium"]]
    for name in ("lv_blood", "rv_blood", "aorta"):
        lut[LABELS[name]] *= acquisition.blood_inflow
    phases = cine_phases(subject)
    shape = subject.geometry.shape
    rng = np.random.default_rng([subject.subject_id, _NOISE_TAGS["cine"]])
    tissue_texture = _smooth_noise(rng, shape)
    shading = shading_field(acquisition, shape)
    sigma = lut[LABELS["lv_blood"]] / acquisition.cine_snr
    pixel = subject.geometry.spacing[0]
    signals, labels = [], []
    for phase in phases:
        frame_labels = render_labels(subject, float(phase)).array
        x_ed, y_ed = material_positions_mm(subject, float(phase))
        rows = y_ed / pixel + (shape[1] - 1) / 2
        cols = x_ed / pixel + (shape[2] - 1) / 2
        texture = np.stack([map_coordinates(tissue_texture[z], [rows[z], cols[z]], order=1, mode="nearest")
                            for z in range(shape[0])])
        blood = np.isin(frame_labels, [LABELS["lv_blood"], LABELS["rv_blood"]])
        texture = np.where(blood, 0.5 * _smooth_noise(rng, shape), texture)
        signal = lut[frame_labels] * (1.0 + acquisition.texture * texture)
        signal = gaussian_filter(signal, sigma=(0.0, acquisition.blur_px, acquisition.blur_px)) * shading
        signals.append(_rician(signal, sigma, rng))
        labels.append(frame_labels)
    noisy = np.stack(signals)
    reference = np.percentile(np.stack([lut[frame] for frame in labels[:1]]) * shading, 99.5)
    image = np.clip(np.rint(noisy * acquisition.intensity_scale / reference), 0, np.iinfo(np.int16).max)
    times = [round(float(t), 2) for t in cine_trigger_times_ms(subject)]
    cine = subject.geometry.volume(image.astype(np.int16), modality="MR", contrast="cine bSSFP", units="a.u.",
                                   trigger_times_ms=times, rr_interval_ms=round(acquisition.rr_interval_ms, 2),
                                   flip_angle_deg=round(acquisition.cine_flip_deg, 1),
                                   phantom_subject=subject.subject_id, field_strength_t=acquisition.field_strength_t)
    label_series = subject.geometry.volume(np.stack(labels), units="label", trigger_times_ms=times,
                                           phantom_subject=subject.subject_id)
    return cine, label_series


def shading_field(acquisition: Acquisition, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth receive-coil shading (z, y, x): a random low-order polynomial rescaled to the subject's range, times a
    surface-coil hot spot where the acquisition has one."""
    nz, ny, nx = shape
    w = np.linspace(-1.0, 1.0, nz)[:, None, None]
    v = np.linspace(-1.0, 1.0, ny)[None, :, None]
    u = np.linspace(-1.0, 1.0, nx)[None, None, :]
    c = acquisition.shading
    field = c[0] * u + c[1] * v + c[2] * u * v + c[3] * u**2 + c[4] * v**2 + 0.3 * c[5] * w
    field = np.broadcast_to(field, shape)
    low, high = acquisition.shading_range
    span = field.max() - field.min()
    field = low + (high - low) * (field - field.min()) / (span if span > 0 else 1.0)
    if acquisition.coil_hot_spot is not None:
        hot_u, hot_v, width = acquisition.coil_hot_spot
        field = field * (1.0 + 1.5 * np.exp(-((u - hot_u) ** 2 + (v - hot_v) ** 2) / (2 * width**2)))
    return field


def _labels_on_grid(subject: Subject, labels: Volume | None) -> Volume:
    if labels is None:
        return render_labels(subject)
    reference = subject.geometry.volume(np.zeros(subject.geometry.shape, dtype=np.uint8))
    reference.require_same_geometry(labels, f"the labelmap and phantom subject {subject.subject_id}'s grid")
    return labels


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Unit-SD Gaussian noise smoothed in plane (sigma 2 px): tissue texture."""
    texture = gaussian_filter(rng.normal(0.0, 1.0, shape), sigma=(0.0, 2.0, 2.0))
    return texture / texture.std()


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation `sigma` per channel."""
    return np.hypot(signal + rng.normal(0.0, sigma, signal.shape), rng.normal(0.0, sigma, signal.shape))


def _acquire(subject: Subject, signal: np.ndarray, contrast: str, sigma: float) -> np.ndarray:
    """Texture, blur, shading and Rician noise on a noise-free (z, y, x) signal; stored as int16 with the 99.5th
    percentile of the shaded noise-free image at the acquisition's intensity scale."""
    acquisition = subject.acquisition
    rng = np.random.default_rng([subject.subject_id, _NOISE_TAGS[contrast]])
    signal = signal * (1.0 + acquisition.texture * _smooth_noise(rng, signal.shape))
    signal = gaussian_filter(signal, sigma=(0.0, acquisition.blur_px, acquisition.blur_px))
    signal = signal * shading_field(acquisition, signal.shape)
    noisy = _rician(signal, sigma, rng)
    scale = acquisition.intensity_scale / np.percentile(signal, 99.5)
    return np.clip(np.rint(noisy * scale), 0, np.iinfo(np.int16).max).astype(np.int16)
