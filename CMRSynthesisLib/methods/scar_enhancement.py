"""Localized scar enhancement of LGE (paper 002, Hasny et al., MICCAI): tissue-specific gamma-corrected targets,
a heart-ROI segmenter, and a conditional DDPM whose noise lives only in the heart ROI, sampled by partial
diffusion from t0 (paper: 250) with the mean of k samples (paper: 5).

Inference on a stack: ROI (user mask, or the segmenter) -> per slice a square crop around the ROI, min-max scaled to
[-1, 1] -> partial diffusion inside the ROI conditioned on the crop -> mean of k -> back to input units on the input
grid. Voxels outside the ROI are copied from the input, so they come back bit-identical.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from skimage.transform import resize

from ..checkpoints import load_checkpoint, shipped_checkpoint
from ..device import resolve_device, seeded_generator
from ..diffusion.networks import build_network, load_weights
from ..diffusion.roi_diffusion import DEFAULT_DDIM_STEPS, RoiDiffusion
from ..errors import CheckpointError, InputError
from ..preprocess import (
    IntensityScale,
    SquareCrop,
    crop_around,
    pad_to_multiple,
    percentile_normalise,
    resample_to_spacing,
    to_dtype,
)
from ..progress import Progress, report
from ..volume import Volume

METHOD = "scar_enhancement"
SEGMENTER_METHOD = "heart_segmentation"
SHIPPED_ENHANCER = "scar_enhancement"
SHIPPED_SEGMENTER = "scar_enhancement_segmenter"

# Target preparation (paper 2.1): the scar is lifted this fraction of the way from the brighter of scar and blood
# towards white, so it ends up brighter than the blood pool; gammas are bounded to keep targets realistic.
SCAR_LIFT = 0.5
SCAR_GAMMA_RANGE = (1.0, 4.0)
BLOOD_GAMMA_RANGE = (0.5, 1.0)


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

    config keys (enhancer checkpoint): network, schedule, crop_size, roi_margin_px, blood_reference. The heart
    segmenter is loaded from `segmenter` (a checkpoint folder; None: the shipped one) the first time a run has no ROI.
    """

    name = METHOD
    REQUIRED_CONFIG = ("network", "schedule", "crop_size", "roi_margin_px", "blood_reference")

    def __init__(self, diffusion: RoiDiffusion, config: dict[str, Any], device: torch.device,
                 segmenter: str | Path | None = None) -> None:
        missing = [key for key in self.REQUIRED_CONFIG if key not in config]
        if missing:
            raise CheckpointError(f"the scar-enhancement checkpoint config lacks {', '.join(missing)}")
        self.diffusion = diffusion
        self.config = config
        self.device = device
        self.segmenter_checkpoint = segmenter
        self._segmenter: HeartSegmenter | None = None
        diffusion.network.to(device).eval()

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, device: str | torch.device = "auto",
             segmenter: str | Path | None = None) -> ScarEnhancement:
        """Load the enhancer (shipped demo model when `checkpoint` is None) on `device`."""
        torch_device = resolve_device(device)
        folder = Path(checkpoint) if checkpoint else shipped_checkpoint(SHIPPED_ENHANCER)
        weights, config = load_checkpoint(folder, expected_method=METHOD)
        network = load_weights(build_network(config["network"]), weights)
        return cls(RoiDiffusion(network, config["schedule"]), config, torch_device, segmenter)

    @property
    def segmenter(self) -> HeartSegmenter:
        """The heart-ROI segmenter, loaded on first use."""
        if self._segmenter is None:
            self._segmenter = HeartSegmenter.load(self.segmenter_checkpoint, self.device)
        return self._segmenter

    def run(self, inputs: dict[str, Volume | None], *, steps: int = 250, samples: int = 5, seed: int = 0,
            sampler: str = "ddpm", ddim_steps: int = DEFAULT_DDIM_STEPS, guidance: float | None = None,
            progress: Progress | None = None) -> dict[str, Volume]:
        """Enhance an LGE stack. inputs: "lge" (z, y, x), optional "roi" (same grid, non-zero = heart ROI).

        steps: partial-diffusion start t0; samples: k; sampler "ddpm" (every step) or "ddim" (`ddim_steps` steps).
        Returns "enhanced" (input dtype, input grid), "roi" (uint8) and "spread" (per-voxel SD over k, input units).
        """
        if guidance is not None:
            raise InputError("scar enhancement has no guidance scale; leave guidance unset")
        lge = _checked_lge(inputs.get("lge"))
        roi = self._roi(lge, inputs.get("roi"), progress)
        slices = [index for index in range(lge.spatial_shape[0]) if roi[index].any()]
        enhanced, spread = self.enhance_slices(lge.array[slices], roi[slices], steps=steps, samples=samples,
                                               seed=seed, sampler=sampler, ddim_steps=ddim_steps, progress=progress)
        output = lge.array.copy()
        output[slices] = enhanced
        spread_volume = np.zeros(lge.spatial_shape, dtype=np.float32)
        spread_volume[slices] = spread
        settings = {"method": METHOD, "t0": steps, "samples": samples, "seed": seed, "sampler": sampler}
        if sampler == "ddim":
            settings["ddim_steps"] = ddim_steps
        return {
            "enhanced": lge.with_array(output, description="scar-enhanced LGE", synthesis=settings),
            "roi": lge.with_array(roi.astype(np.uint8), description="heart ROI used for enhancement"),
            "spread": lge.with_array(spread_volume, description="per-voxel SD of the k samples"),
        }

    def _roi(self, lge: Volume, roi: Volume | None, progress: Progress | None) -> np.ndarray:
        if roi is None:
            mask = self.segmenter.segment(lge, progress=lambda f, m: report(progress, 0.1 * f, m))
            if not mask.any():
                raise InputError("the heart segmenter found no heart in any slice; draw an ROI and pass it")
            return mask
        if roi.array.ndim != 3:
            raise InputError(f"the ROI mask must be a 3D volume (slices, rows, cols); got shape {roi.array.shape}")
        lge.require_same_geometry(roi, "the LGE volume and the ROI mask")
        mask = np.asarray(roi.array) != 0
        if not mask.any():
            raise InputError("the ROI mask is empty (no non-zero voxel); draw the heart ROI")
        return mask

    def enhance_slices(self, images: np.ndarray, rois: np.ndarray, *, steps: int = 250, samples: int = 5,
                       seed: int = 0, sampler: str = "ddpm", ddim_steps: int = DEFAULT_DDIM_STEPS,
                       progress: Progress | None = None, max_batch: int = 40) -> tuple[np.ndarray, np.ndarray]:
        """Enhance 2D slices (N, y, x) inside boolean ROIs (N, y, x); every ROI must be non-empty.

        Returns the enhanced slices in the images' dtype, equal to the input outside the ROIs, and the per-voxel SD
        of the k samples (float32, input units, zero outside). The model's change is what is mapped back to the
        input grid, so a crop resized for the model does not blur the unchanged image.
        """
        size, margin = int(self.config["crop_size"]), int(self.config["roi_margin_px"])
        crops, scales = zip(*(slice_frame(image, roi, size, margin) for image, roi in zip(images, rois)))
        x = np.stack([scale.forward(crop.extract(image)) for crop, scale, image in zip(crops, scales, images)])
        m = np.stack([crop.extract(roi, order=0) > 0.5 for crop, roi in zip(crops, rois)]).astype(np.float32)
        generator = seeded_generator(seed, self.device)
        per_batch = max(1, max_batch // max(samples, 1))
        chunks = [range(start, min(start + per_batch, len(x))) for start in range(0, len(x), per_batch)]
        means, sds = [], []
        for number, chunk in enumerate(chunks):
            image = torch.from_numpy(x[chunk.start:chunk.stop, None]).to(self.device)
            mask = torch.from_numpy(m[chunk.start:chunk.stop, None]).to(self.device)

            def chunk_progress(fraction: float, message: str, number: int = number, chunk: range = chunk) -> bool | None:
                overall = 0.1 + 0.9 * (number + fraction) / len(chunks)
                return progress(overall, f"slices {chunk.start + 1}-{chunk.stop}/{len(x)}: {message}") if progress else None

            result = self.diffusion.sample(image, image, mask, t0=steps, samples=samples, sampler=sampler,
                                           ddim_steps=ddim_steps, generator=generator, progress=chunk_progress)
            means.append(result.mean[:, 0].cpu().numpy())
            sds.append(result.std[:, 0].cpu().numpy())
        mean, sd = np.concatenate(means), np.concatenate(sds)
        enhanced = images.copy()
        spread = np.zeros(images.shape, dtype=np.float32)
        for index, (crop, scale) in enumerate(zip(crops, scales)):
            region, change = crop.restore(scale.inverse(mean[index]) - scale.inverse(x[index]))
            inside = rois[index][region]
            values = images[index][region].astype(np.float32) + change
            enhanced[index][region] = np.where(inside, to_dtype(values, images.dtype), images[index][region])
            region, values = crop.restore(sd[index] * 0.5 * (scale.high - scale.low))
            spread[index][region] = np.where(inside, values, 0.0)
        return enhanced, spread


def _checked_lge(lge: Volume | None) -> Volume:
    """The LGE input must be a finite, numeric 3D stack."""
    if lge is None:
        raise InputError("scar enhancement needs an LGE volume (input 'lge')")
    if lge.array.ndim != 3:
        raise InputError(f"the LGE input must be a 3D stack (slices, rows, cols); got shape {lge.array.shape}")
    if lge.array.dtype == bool or not np.issubdtype(lge.array.dtype, np.number):
        raise InputError(f"the LGE volume must hold intensities; got voxels of type {lge.array.dtype}")
    if not np.isfinite(lge.array).all():
        raise InputError("the LGE volume contains NaN or infinite voxels; fix or mask them before enhancement")
    return lge
