"""Localized scar enhancement of LGE (paper 002, Hasny et al., MICCAI): tissue-specific gamma-corrected targets,
a heart-ROI segmenter, and a conditional DDPM whose noise lives only in the heart ROI, sampled by partial
diffusion from t0 (paper: 250) with the mean of k samples (paper: 5).

Inference on a stack: ROI (user mask, or the segmenter's where it is plausible) -> per slice a square crop around the
ROI, min-max scaled to [-1, 1] -> partial diffusion inside the ROI conditioned on the crop -> mean of k -> back to
input units on the input grid. Voxels outside the ROI are copied from the input, so they come back bit-identical.
Each slice is sampled on its own with its own generator (seed, slice index), so its result does not depend on the
other slices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from skimage.morphology import convex_hull_image
from skimage.transform import resize

from ..checkpoints import load_checkpoint, shipped_checkpoint
from ..device import check_seed, resolve_device
from ..diffusion.conditioning import Condition
from ..diffusion.model import DiffusionModel
from ..diffusion.networks import build_network, load_weights
from ..diffusion.samplers import DEFAULT_DDIM_STEPS, SAMPLERS, sample, sampler_eta, sampling_record, timestep_pairs
from ..errors import CheckpointError, InputError
from ..evaluation import input_baseline
from ..metrics import contrast_metrics, lpips_unavailable, region_metrics
from ..preprocess import (
    IntensityScale,
    SquareCrop,
    crop_around,
    pad_to_multiple,
    percentile_normalise,
    resample_to_spacing,
    roi_mask,
    structure_contrast,
    to_dtype,
)
from ..progress import Progress, report
from ..slice_runner import run_slices
from ..volume import Volume
from .registry import (
    CheckpointRole,
    Column,
    Evaluation,
    EvaluationCase,
    InputRole,
    MethodSpec,
    Option,
    OutputRole,
    ReferenceRow,
    Sampling,
)

METHOD = "scar_enhancement"
SEGMENTER_METHOD = "heart_segmentation"
SHIPPED_ENHANCER = "scar_enhancement"
SHIPPED_SEGMENTER = "scar_enhancement_segmenter"

# Target preparation (paper 2.1): the scar is lifted this fraction of the way from the brighter of scar and blood
# towards white, so it ends up brighter than the blood pool; gammas are bounded to keep targets realistic.
SCAR_LIFT = 0.5
SCAR_GAMMA_RANGE = (1.0, 4.0)
BLOOD_GAMMA_RANGE = (0.5, 1.0)

# Plausibility of a heart ROI in one slice. Measured with the shipped segmenter on 40 test and 10 validation phantom
# subjects (466 slices) and the real Philips 1.5 T LGE (3 slices): area 2090-4458 mm2 (phantom), 2574-4214 mm2
# (Philips); solidity (area / convex hull area) >= 0.960 (phantom), >= 0.811 (Philips); structure contrast 0.46-1.41
# (phantom), 0.72-0.77 (Philips). What it returns on images without a heart: constant or all-zero slices have
# contrast 0, constant + Gaussian noise 0.005, Rician noise 0.05-0.06, pure Rayleigh noise 0.11-0.13; an intensity
# ramp has solidity 0.36. The bounds leave a margin for apical slices, dilated hearts and other scanners.
HEART_AREA_MM2 = (300.0, 12000.0)
MIN_HEART_SOLIDITY = 0.7
MIN_STRUCTURE_CONTRAST = 0.25

# The enhancer sees [x_t, the LGE crop] on the channel axis; the crop is always given (no null, no guidance).
CONDITIONS = (Condition("image", "concat"),)


@dataclasses.dataclass(frozen=True)
class TargetGammas:
    """Gamma values applied to one slice's scar and blood pool (1.0 = unchanged)."""

    scar: float
    blood: float


def gamma_target(image01: np.ndarray, scar: np.ndarray, blood: np.ndarray, blood_reference: float
                 ) -> tuple[np.ndarray, TargetGammas]:
    """Scar-enhanced training target of one slice scaled to [0, 1] (paper 2.1): I_e = I^(1/gamma) per tissue.

    Scar gets gamma > 1, stronger when its contrast to the blood pool is poor, so the brightened scar separates from
    the blood; a blood pool brighter than `blood_reference` (the mean blood brightness of the training set) gets
    gamma < 1 down to that reference. Everything else is unchanged. Returns the target and the gammas used.
    """
    target = np.asarray(image01, dtype=np.float32).copy()
    scar_gamma = blood_gamma = 1.0
    blood_mean = float(image01[blood].mean()) if blood.any() else 0.0
    if blood.any() and blood_reference < blood_mean < 1.0:
        blood_gamma = float(np.clip(np.log(blood_mean) / np.log(blood_reference), *BLOOD_GAMMA_RANGE))
        target[blood] = np.power(image01[blood], 1.0 / blood_gamma)
    if scar.any():
        scar_mean = float(np.clip(image01[scar].mean(), 1e-3, 0.999))
        ceiling = max(scar_mean, float(target[blood].mean()) if blood.any() else 0.0)
        goal = min(ceiling + SCAR_LIFT * (1.0 - ceiling), 0.999)
        scar_gamma = float(np.clip(np.log(scar_mean) / np.log(goal), *SCAR_GAMMA_RANGE))
        target[scar] = np.power(image01[scar], 1.0 / scar_gamma)
    return target, TargetGammas(scar_gamma, blood_gamma)


def slice_frame(image: np.ndarray, roi: np.ndarray, crop_size: int, margin: int) -> tuple[SquareCrop, IntensityScale]:
    """The crop a slice is enhanced in (square, around its ROI) and the min-max intensity scale of that crop."""
    crop = crop_around(roi, crop_size, margin)
    return crop, IntensityScale.of(crop.extract(image))


def enhancement_target(image: np.ndarray, scar: np.ndarray, blood: np.ndarray, roi: np.ndarray, crop_size: int,
                       margin: int, blood_reference: float) -> tuple[np.ndarray, TargetGammas]:
    """The scar-enhanced target of a 2D slice in input units: `gamma_target` on the slice scaled as the model sees
    it (min-max of its ROI crop); voxels outside scar and blood pool keep their input values exactly."""
    _, scale = slice_frame(image, roi, crop_size, margin)
    unit = np.clip((image - scale.low) / (scale.high - scale.low), 0.0, 1.0)
    target01, gammas = gamma_target(unit, scar, blood, blood_reference)
    target = np.where(scar | blood, scale.low + target01 * (scale.high - scale.low), image)
    return target.astype(np.float32), gammas


class HeartSegmenter:
    """2D U-Net for the heart ROI (scar + myocardium + LV blood pool), applied slice by slice at a fixed pixel size.

    config keys: network, target_spacing_mm, threshold, dilation_mm.
    """

    def __init__(self, network: torch.nn.Module, config: dict[str, Any], device: torch.device) -> None:
        self.network = network.to(device).eval()
        self.config = config
        self.device = device

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, device: str | torch.device = "auto") -> HeartSegmenter:
        folder = Path(checkpoint) if checkpoint else shipped_checkpoint(SHIPPED_SEGMENTER)
        weights, config = load_checkpoint(folder, expected_method=SEGMENTER_METHOD)
        return cls(load_weights(build_network(config["network"]), weights), config, resolve_device(device))

    def prepare(self, image: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
        """A 2D slice as the network sees it: percentile-normalised and resampled to the training pixel size."""
        return resample_to_spacing(percentile_normalise(image), spacing_yx, self.config["target_spacing_mm"])

    @torch.no_grad()
    def segment(self, volume: Volume, progress: Progress | None = None) -> np.ndarray:
        """Boolean heart ROI (z, y, x) of a 3D stack: threshold, largest 2D component, holes filled, dilated."""
        spacing_yx = (volume.spacing[1], volume.spacing[0])
        roi = np.zeros(volume.spatial_shape, dtype=bool)
        for index, image in enumerate(volume.array):
            report(progress, index / len(volume.array), f"heart segmentation, slice {index + 1}/{len(volume.array)}")
            prepared, shape = pad_to_multiple(self.prepare(image, spacing_yx), 16)
            logits = self.network(torch.from_numpy(prepared)[None, None].to(self.device))
            probability = torch.sigmoid(logits)[0, 0, : shape[0], : shape[1]].cpu().numpy()
            back = resize(probability, image.shape, order=1, preserve_range=True)
            roi[index] = self._clean(back > self.config.get("threshold", 0.5), spacing_yx)
        return roi

    def _clean(self, mask: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
        labels, count = ndimage.label(mask)
        if count == 0:
            return mask
        largest = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
        filled = ndimage.binary_fill_holes(largest)
        dilation_px = round(self.config.get("dilation_mm", 0.0) / min(spacing_yx))
        return ndimage.binary_dilation(filled, iterations=dilation_px) if dilation_px > 0 else filled


class ScarEnhancement:
    """The scar-enhancement method: `run({"lge": Volume, "roi": Volume | None}, ...)` -> enhanced LGE.

    config keys (enhancer checkpoint): network, schedule (`DiffusionModel.from_config`), crop_size, roi_margin_px,
    blood_reference. The heart segmenter is loaded from `segmenter` (a checkpoint folder; None: the shipped one) the
    first time a run has no ROI.
    """

    name = METHOD
    REQUIRED_CONFIG = ("network", "schedule", "crop_size", "roi_margin_px", "blood_reference")

    def __init__(self, model: DiffusionModel, config: dict[str, Any], device: torch.device,
                 segmenter: str | Path | None = None) -> None:
        missing = [key for key in self.REQUIRED_CONFIG if key not in config]
        if missing:
            raise CheckpointError(f"the scar-enhancement checkpoint config lacks {', '.join(missing)}")
        self.model = model
        self.config = config
        self.device = device
        self.segmenter_checkpoint = segmenter
        self._segmenter: HeartSegmenter | None = None
        model.network.to(device).eval()

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, device: str | torch.device = "auto",
             segmenter: str | Path | None = None) -> ScarEnhancement:
        """Load the enhancer (shipped demo model when `checkpoint` is None) on `device`."""
        torch_device = resolve_device(device)
        folder = Path(checkpoint) if checkpoint else shipped_checkpoint(SHIPPED_ENHANCER)
        weights, config = load_checkpoint(folder, expected_method=METHOD)
        network = load_weights(build_network(config["network"]), weights)
        return cls(DiffusionModel.from_config(network, config["schedule"], CONDITIONS), config, torch_device, segmenter)

    @property
    def segmenter(self) -> HeartSegmenter:
        """The heart-ROI segmenter, loaded on first use."""
        if self._segmenter is None:
            self._segmenter = HeartSegmenter.load(self.segmenter_checkpoint, self.device)
        return self._segmenter

    def run(self, inputs: dict[str, Volume | None], *, steps: int = 250, samples: int = 5, seed: int = 0,
            sampler: str = "ddpm", ddim_steps: int = DEFAULT_DDIM_STEPS, ddim_eta: float = 0.0,
            guidance: float | None = None, roi_label: int | None = None, progress: Progress | None = None
            ) -> dict[str, Volume]:
        """Enhance an LGE stack. inputs: "lge" (z, y, x), optional "roi" (same grid: a binary mask, a probability map
        in [0, 1] thresholded at 0.5, or a label map whose heart ROI label is `roi_label`).

        steps: partial-diffusion start t0; samples: k; sampler "ddpm" (every step) or "ddim" (`ddim_steps` steps,
        noise level `ddim_eta`);
        seed: non-negative, each slice draws from its own generator (seed, slice position). Returns "enhanced" (input
        dtype, input grid; metadata "synthesis" holds the settings and "notes" on how the ROI was read), "roi"
        (uint8) and "spread" (per-voxel SD over k, input units). InputError for unusable inputs (see `_roi`).
        """
        if guidance is not None:
            raise InputError("scar enhancement has no guidance scale; leave guidance unset")
        check_seed(seed)
        self.sampling_steps(steps, samples, sampler, ddim_steps)  # checked before the segmenter's work
        sampler_eta(sampler, ddim_eta)
        lge = _checked_lge(inputs.get("lge"))
        roi, notes = self._roi(lge, inputs.get("roi"), roi_label, progress)
        slices = [index for index in range(lge.spatial_shape[0]) if roi[index].any()]
        keys = lge.slice_keys()
        enhanced, spread = self.enhance_slices(lge.array[slices], roi[slices], slice_keys=[keys[z] for z in slices],
                                               steps=steps,
                                               samples=samples, seed=seed, sampler=sampler, ddim_steps=ddim_steps,
                                               ddim_eta=ddim_eta, progress=progress)
        output = lge.array.copy()
        output[slices] = enhanced
        spread_volume = np.zeros(lge.spatial_shape, dtype=np.float32)
        spread_volume[slices] = spread
        sampling, sampling_notes = sampling_record(True, samples, seed, sampler, ddim_steps, ddim_eta)
        settings = {"method": METHOD, "t0": steps, **sampling}
        if roi_label is not None:
            settings["roi_label"] = roi_label
        notes += sampling_notes
        if notes:
            settings["notes"] = notes
        return {
            "enhanced": lge.with_array(output, description="scar-enhanced LGE", synthesis=settings),
            "roi": lge.with_array(roi.astype(np.uint8), description="heart ROI used for enhancement"),
            "spread": lge.with_array(spread_volume, description="per-voxel SD of the k samples"),
        }

    def _roi(self, lge: Volume, roi: Volume | None, roi_label: int | None, progress: Progress | None
             ) -> tuple[np.ndarray, list[str]]:
        """The boolean (z, y, x) heart ROI and notes on how it was obtained.

        A user ROI (binary mask, probability map or label map with `roi_label`, see `roi_mask`) must lie on the LGE
        grid, and the LGE must show contrast in the crop of every slice it covers. Without one, the segmenter's ROI
        is kept in the slices where it is plausible (`implausible_heart`); the others are left out with a note.
        InputError when no slice keeps a plausible heart, naming the file and the reasons.
        """
        spacing_yx = (lge.spacing[1], lge.spacing[0])
        size, margin = int(self.config["crop_size"]), int(self.config["roi_margin_px"])
        if roi is None:
            if roi_label is not None:
                raise InputError("a ROI label was chosen (--roi-label / roi_label) but no ROI mask was given")
            mask = self.segmenter.segment(lge, progress=lambda f, m: report(progress, 0.1 * f, m))
            reasons = {z: implausible_heart(lge.array[z], mask[z], spacing_yx, size, margin) if mask[z].any()
                       else "nothing segmented" for z in range(len(mask))}
            rejected = {z: reason for z, reason in reasons.items() if reason}
            if len(rejected) == len(mask):
                raise InputError(f"no heart found in {lge.describe_source()}: the heart segmenter found no plausible "
                                 f"heart in any slice ({_slice_list(rejected)}); draw the heart ROI and pass it "
                                 "(--roi)")
            mask[list(rejected)] = False
            dropped = {z: reason for z, reason in rejected.items() if reason != "nothing segmented"}
            notes = [f"heart segmenter: left out {_slice_list(dropped)}"] if dropped else []
            return mask, notes
        if roi.array.ndim != 3:
            raise InputError(f"{roi.named('the ROI mask')} must be a 3D volume (slices, rows, cols); got "
                             f"shape {roi.array.shape}")
        lge.require_same_geometry(roi, f"{lge.named('the LGE volume')} and {roi.named('the ROI mask')}")
        mask, note = roi_mask(roi, roi_label)
        contrasts = {z: structure_contrast(lge.array[z], crop_around(mask[z], size, margin), spacing_yx)
                     for z in range(len(mask)) if mask[z].any()}
        flat = {z: contrast for z, contrast in contrasts.items() if contrast < MIN_STRUCTURE_CONTRAST}
        if flat:
            listed = ", ".join(f"{z + 1} ({contrast:.2f})" for z, contrast in flat.items())
            raise InputError(f"{lge.named('the LGE volume')} shows no image structure in the ROI crop of "
                             f"slice(s) {listed}: its structure contrast is below {MIN_STRUCTURE_CONTRAST} (a heart on "
                             "LGE measures 0.45 or more); check that the slice holds an image and the ROI lies on the "
                             "heart")
        return mask, [note] if note else []

    def sampling_steps(self, t0: int, samples: int, sampler: str, ddim_steps: int = DEFAULT_DDIM_STEPS
                       ) -> list[tuple[int, int]]:
        """The reverse chain's (t, t_prev) pairs of these sampling settings: every step from t0 (ddpm) or
        `ddim_steps` steps below t0 (ddim, `samplers.ddim_timesteps`). InputError naming the setting and its
        command-line option, before any work."""
        if samples < 1:
            raise InputError(f"the number of samples k (--samples) must be at least 1; got {samples}")
        last = self.model.schedule.num_train_timesteps - 1
        if not 1 <= t0 <= last:
            raise InputError(f"the partial-diffusion start step t0 (--steps) must be in 1..{last}; got {t0}")
        if sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {sampler!r} (--sampler); choose one of {SAMPLERS}")
        if sampler == "ddim" and ddim_steps < 1:
            raise InputError(f"the number of DDIM steps (--ddim-steps) must be at least 1; got {ddim_steps}")
        return timestep_pairs(sampler, t0, last + 1, ddim_steps)

    def enhance_slices(self, images: np.ndarray, rois: np.ndarray, *, slice_keys: Sequence[int] | None = None,
                       steps: int = 250, samples: int = 5, seed: int = 0, sampler: str = "ddpm",
                       ddim_steps: int = DEFAULT_DDIM_STEPS, ddim_eta: float = 0.0, progress: Progress | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Enhance 2D slices (N, y, x) inside boolean ROIs (N, y, x); every ROI must be non-empty.

        slice_keys: each slice's key (`Volume.slice_keys`: its position along the normal; default 0..N-1). Slice i is
        sampled on its own (its k samples as one batch) with the generator `slice_generator(seed, slice_keys[i])`, so
        its result depends on the seed, its key and its own pixels only: enhanced alone or in any stack, it comes out
        the same.

        Returns the enhanced slices in the images' dtype, equal to the input outside the ROIs, and the per-voxel SD
        of the k samples (float32, input units, zero outside). The model's change is what is mapped back to the
        input grid, so a crop resized for the model does not blur the unchanged image.
        """
        keys = list(range(len(images))) if slice_keys is None else [int(key) for key in slice_keys]
        if len(keys) != len(images):
            raise InputError(f"got {len(keys)} slice keys for {len(images)} slices")
        pairs = self.sampling_steps(steps, samples, sampler, ddim_steps)
        eta = sampler_eta(sampler, ddim_eta)
        size, margin = int(self.config["crop_size"]), int(self.config["roi_margin_px"])
        enhanced = images.copy()
        spread = np.zeros(images.shape, dtype=np.float32)

        def enhance(number: int, generator: torch.Generator, slice_progress: Progress) -> None:
            image, roi = images[number], rois[number]
            crop, scale = slice_frame(image, roi, size, margin)
            x = scale.forward(crop.extract(image))
            m = (crop.extract(roi, order=0) > 0.5).astype(np.float32)
            crop_image = torch.from_numpy(x[None, None]).to(self.device)
            result = sample(self.model, pairs, image=crop_image, mask=torch.from_numpy(m[None, None]).to(self.device),
                            conditions={"image": crop_image}, sampler=sampler, eta=eta, samples=samples,
                            generator=[generator], progress=slice_progress)
            mean, sd = result.mean[0, 0].cpu().numpy(), result.sd[0, 0].cpu().numpy()
            region, change = crop.restore(scale.inverse(mean) - scale.inverse(x))
            inside = roi[region]
            values = image[region].astype(np.float32) + change
            enhanced[number][region] = np.where(inside, to_dtype(values, images.dtype), image[region])
            region, values = crop.restore(sd * 0.5 * (scale.high - scale.low))
            spread[number][region] = np.where(inside, values, 0.0)

        run_slices(keys, enhance, seed=seed, device=self.device, progress=progress, start=0.1, end=1.0)
        return enhanced, spread


def implausible_heart(image: np.ndarray, roi: np.ndarray, spacing_yx: tuple[float, float], crop_size: int,
                      margin: int) -> str | None:
    """Why a non-empty 2D ROI (y, x) of one slice is not a plausible heart, or None when it is.

    Checks its area (HEART_AREA_MM2, mm2 from the pixel spacing (sy, sx) in mm), its shape (solidity = area /
    convex hull area >= MIN_HEART_SOLIDITY) and that the image shows structure in the enhancer's crop around it
    (`structure_contrast` >= MIN_STRUCTURE_CONTRAST: not a flat or noise-only region).
    """
    area = float(roi.sum()) * spacing_yx[0] * spacing_yx[1]
    low, high = HEART_AREA_MM2
    if not low <= area <= high:
        return f"area {area:.0f} mm2, outside {low:.0f}-{high:.0f} mm2"
    solidity = float(roi.sum()) / float(convex_hull_image(roi).sum())
    if solidity < MIN_HEART_SOLIDITY:
        return f"irregular shape, solidity {solidity:.2f} < {MIN_HEART_SOLIDITY}"
    contrast = structure_contrast(image, crop_around(roi, crop_size, margin), spacing_yx)
    if contrast < MIN_STRUCTURE_CONTRAST:
        return f"no image structure, contrast {contrast:.2f} < {MIN_STRUCTURE_CONTRAST}"
    return None


def _slice_list(reasons: dict[int, str], most: int = 4) -> str:
    """"slice 1: reason; slice 2: reason; ... and 6 more" (1-based slice numbers) for notes and messages."""
    items = [f"slice {z + 1}: {reason}" for z, reason in sorted(reasons.items())]
    return "; ".join(items[:most]) + (f"; and {len(items) - most} more" if len(items) > most else "")


def _checked_lge(lge: Volume | None) -> Volume:
    """The LGE input must be a 3D stack of finite real intensities that are not all the same."""
    if lge is None:
        raise InputError("scar enhancement needs an LGE volume (input 'lge')")
    if lge.array.ndim != 3:
        raise InputError(f"{lge.named('the LGE volume')} must be a 3D stack (slices, rows, cols); got "
                         f"shape {lge.array.shape}")
    if lge.array.dtype == bool or not np.issubdtype(lge.array.dtype, np.number):
        raise InputError(f"{lge.named('the LGE volume')} must hold intensities; got voxels of type "
                         f"{lge.array.dtype}")
    lge.require_finite("the LGE volume")
    low, high = lge.array.min(), lge.array.max()
    if low == high:
        raise InputError(f"{lge.named('the LGE volume')} has the same value ({low:g}) in every voxel: there "
                         "is no image to enhance")
    return lge


def _summary(inputs: dict[str, Any], outputs: dict[str, Volume]) -> dict[str, Any]:
    """The command's facts: ROI size, slices enhanced, the mean change inside the ROI and the sampling settings."""
    roi = outputs["roi"].array.astype(bool)
    change = outputs["enhanced"].array[roi].astype(float) - inputs["lge"].array[roi].astype(float)
    settings = dict(outputs["enhanced"].metadata["synthesis"])
    return {"roi_voxels": int(roi.sum()), "slices_with_roi": int(roi.any(axis=(1, 2)).sum()),
            "mean_change_in_roi": float(change.mean()) if change.size else 0.0, **settings,
            "notes": list(settings.pop("notes", []))}


# --- evaluation (`cmrsynth evaluate scar_enhancement`, `cmrsynth demo`) -------------------------------------------


def scarred_subjects(split: str, subjects: int, slices: int, segmenter: HeartSegmenter) -> list[dict[str, Any]]:
    """The first `subjects` phantom subjects of `split` with scar inside the segmenter's ROI (looking at up to 4x as
    many): each {"study": phantom.lge_study, "roi": the segmenter's ROI (z, y, x) on the whole stack, "slices": up to
    `slices` scarred slice indices, largest scar inside the ROI first, in increasing order}."""
    from .. import phantom

    found = []
    for subject_id in phantom.subject_ids(split, 4 * subjects):
        study = phantom.lge_study(subject_id)
        if not study["masks"]["scar"].any():
            continue
        roi = segmenter.segment(study["lge"])
        inside = (study["masks"]["scar"] & roi).reshape(len(roi), -1).sum(axis=1)
        chosen = sorted(int(i) for i in np.argsort(-inside)[:slices] if inside[i] > 0)
        if chosen:
            found.append({"study": study, "roi": roi, "slices": chosen})
        if len(found) == subjects:
            break
    return found


def slice_metrics(values: np.ndarray, target: np.ndarray | None, masks: dict[str, np.ndarray]) -> dict[str, Any]:
    """Paper-002 metrics of one 2D slice (paper section 3.3): CNR(scar, myo) and CNR(scar, blood) on the ground-truth
    masks, and, against the gamma `target` (None: not measured), SSIM, PSNR (dB), MSE, NMSE and LPIPS (None when
    unavailable) on the crop around the ground-truth heart ROI. Intensities are taken as float32, in input units."""
    values = values.astype(np.float32)
    metrics: dict[str, Any] = dict(contrast_metrics(values, masks["scar"], masks["myocardium"], masks["blood"]))
    if target is not None:
        metrics.update(region_metrics(target, values, masks["heart_roi"]))
    return {key: value for key, value in metrics.items() if not key.endswith("reason")}


def evaluation_cases(split: str, subjects: int, method: ScarEnhancement, slices: int = 2) -> list[EvaluationCase]:
    """One case per scarred slice (up to `slices` per subject) of the held-out subjects of `split` with scar
    (`scarred_subjects`): inputs the subject's whole LGE stack and the segmenter's ROI on that slice only (so `run`
    enhances that slice, seeded by its position as in any stack); reference the tissue-specific gamma target of the
    slice (`enhancement_target`, with the enhancer's crop settings); facts the Dice of the ROI used against the
    ground-truth heart ROI. InputError when no subject of the split has scar the segmenter's ROI covers."""
    config, cases = method.config, []
    for found in scarred_subjects(split, subjects, slices, method.segmenter):
        lge, masks, roi = found["study"]["lge"], found["study"]["masks"], found["roi"]
        for z in found["slices"]:
            slice_masks = {name: masks[name][z] for name in ("scar", "myocardium", "blood", "heart_roi")}
            target, _ = enhancement_target(lge.array[z], slice_masks["scar"], slice_masks["blood"],
                                           slice_masks["heart_roi"], config["crop_size"],
                                           config.get("roi_margin_px", 4), config["blood_reference"])
            only = np.zeros(roi.shape, dtype=np.uint8)
            only[z] = roi[z]
            dice = 2 * np.logical_and(roi[z], slice_masks["heart_roi"]).sum() / max(
                roi[z].sum() + slice_masks["heart_roi"].sum(), 1)
            cases.append(EvaluationCase(
                subject=int(found["study"]["subject"].subject_id), family=split,
                inputs={"lge": lge, "roi": lge.with_array(only)}, reference=target, slice=z,
                context={"masks": slice_masks, "roi": roi}, facts={"roi_dice": float(dice)}))
    if not cases:
        raise InputError(f"no {split} phantom subject with scar inside the segmenter's heart ROI among the first "
                         f"{4 * subjects}")
    return cases


def _case_metrics(output: Volume, target: np.ndarray, case: EvaluationCase) -> dict[str, Any]:
    return slice_metrics(output.array[case.slice], target, case.context["masks"])


EVALUATION = Evaluation(
    cases=evaluation_cases, metrics=(_case_metrics,),
    columns=(Column("ssim", "SSIM %", scale=100.0), Column("psnr", "PSNR dB"), Column("lpips", "LPIPS"),
             Column("cnr_scar_myo", "CNR(scar, myo)"), Column("cnr_scar_blood", "CNR(scar, blood)")),
    higher_is_better=("ssim", "psnr", "cnr_scar_myo", "cnr_scar_blood"), lower_is_better=("mse", "nmse", "lpips"),
    baselines=(input_baseline("input", "Baseline (input LGE)", "lge", "the LGE as acquired, not enhanced"),),
    method_label="Enhanced (this run)",
    reference_row=ReferenceRow("target", "Target (gamma)",
                               lambda target, case: slice_metrics(target, None, case.context["masks"])),
    unavailable_metrics=lpips_unavailable,
    published=(("Paper: baseline (real HCM LGE)", {"cnr_scar_myo": "3.62", "cnr_scar_blood": "0.85"}),
               ("Paper: ours (real HCM LGE)", {"ssim": "96.06", "psnr": "43.75", "lpips": "0.04",
                                               "cnr_scar_myo": "4.97", "cnr_scar_blood": "1.65"})),
    subjects=6, title="Scar enhancement (paper 002), SSIM/PSNR on the ROI crop against the gamma target",
)


SPEC = MethodSpec(
    name=METHOD, command="enhance", title="Scar enhancement (LGE)",
    help="localized scar enhancement of an LGE stack",
    paper="Hasny et al., Myocardial Scar Enhancement in LGE Cardiac MRI using Localized Diffusion, MICCAI (seed 002)",
    factory=ScarEnhancement.load,
    inputs=(InputRole("lge", "lge", "LGE volume: NIfTI, NRRD, a DICOM file or folder"),
            InputRole("roi", "mask", "heart ROI on the LGE grid: a binary mask, or a probability map (0-1, "
                      "thresholded at 0.5), or a label map with --roi-label (default: the segmenter's)", required=False)),
    outputs=(OutputRole("enhanced", "image", "enhanced LGE to write", grid="lge"),
             OutputRole("roi", "mask", "the heart ROI used", grid="lge"),
             OutputRole("spread", "sd", "the per-voxel SD of the k samples", grid="lge")),
    checkpoints=(CheckpointRole("checkpoint", "enhancer checkpoint folder", SHIPPED_ENHANCER),
                 CheckpointRole("segmenter", "heart-ROI segmenter checkpoint folder", SHIPPED_SEGMENTER)),
    options=(Option("roi_label", int, None, "the heart ROI's label when --roi is a label map", per_study=True),),
    sampling=Sampling(steps=250, samples=5, steps_help="partial-diffusion start step t0 (paper: 250)"),
    summarise=_summary, recipes=("scar_enhancement", "scar_enhancement_segmenter"), evaluation=EVALUATION,
)
