"""Training recipe of the cine LV / RV segmenter (`CMRSynthesisLib.methods.cine_segmentation`).

Data: phantom cines of the train split (validation split for model selection; test and out-of-distribution subjects
are never read here). From every slice: the end-diastolic frame (largest LV blood pool), the end-systolic frame
(smallest) and `extra_frames` other random frames, each prepared exactly as at inference (percentile-normalised,
resampled to target_spacing_mm) with its labels mapped to LABEL_VALUES (LV blood 1, LV myocardium + scar 2, RV blood
3).

Each training example is a random patch_size x patch_size patch, centred near the heart most of the time, with strong
augmentation so the model transfers to real cine:
- contrast and clutter the phantom lacks: every phantom tissue scaled by its own random factor; smooth random
  texture outside the heart;
- anatomy the phantom lacks: dark papillary muscles inside the LV blood pool and trabeculae on its edge (labelled
  blood pool, as expert contours include them in the cavity); bright or grey blobs away from the heart, half of them
  in a dark rim (vessels, bowel loops, stomach, other chambers; labelled background, so a bright round region, even
  in a ring, is not yet the LV);
- spatial: rotation by any angle, per-axis scaling, shear, translation, flips and a smooth elastic deformation, as
  one warp of the whole batch (`spatial_grids`, torch `grid_sample`; measured on the 2-core CPU for a batch of 12:
  0.17 s, against 1.1 s with MONAI's per-example Rand2DElasticd, about as long as the network's training step);
- MONAI intensity transforms per example: bias field, gamma, histogram shift, Gaussian blur or sharpening, Rician
  noise and a random intensity scale.
Loss: Dice + cross-entropy over the 4 classes; the EMA weights with the best mean validation Dice (LV blood, LV
myocardium, RV blood, on whole validation slices at ED and ES) are kept.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import get_track_meta, set_track_meta
from monai.losses import DiceCELoss
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandBiasField,
    RandGaussianSharpen,
    RandGaussianSmooth,
    RandHistogramShift,
    RandRicianNoise,
    RandScaleIntensity,
)
from scipy import ndimage

from CMRSynthesisLib import phantom
from CMRSynthesisLib.diffusion.networks import build_network
from CMRSynthesisLib.methods.cine_segmentation import (
    CLASSES,
    LABEL_VALUES,
    METHOD,
    PAD_MULTIPLE,
    CineSegmenter,
    phantom_labels,
)
from CMRSynthesisLib.preprocess import pad_to_multiple, resample_to_spacing

from ..distributed import Context
from ..loop import Trainer

# Augmentation settings (pixels at target_spacing_mm; probabilities per example). A config's "augmentation" may
# override any of these keys; other keys are refused.
AUGMENTATION: dict[str, Any] = {
    "heart_centred_fraction": 0.8,  # patches centred within heart_jitter_px of the heart centre, the rest anywhere
    "heart_jitter_px": 24,
    "rotate_deg": 180.0,
    "scale": [0.75, 1.3],  # per axis
    "shear": 0.2,
    "translate_px": 12,
    "elastic_spacing_px": 20,
    "elastic_magnitude_px": [0.0, 3.0],  # SD of the control-point offsets, drawn per example from this range
    "tissue_contrast_prob": 0.7,
    "tissue_contrast": [0.6, 1.4],  # one factor per phantom tissue
    "background_texture_prob": 0.5,
    "background_texture": [0.1, 0.5],
    "papillary_prob": 0.5,
    "trabeculae_prob": 0.5,
    "distractor_prob": 0.6,
    "distractor_rim_prob": 0.5,
    "bias_field_prob": 0.5,
    "bias_field_coeff": [0.05, 0.3],  # polynomial coefficients of the log field (degree 3)
    "gamma_prob": 0.6,
    "gamma": [0.5, 2.0],
    "histogram_shift_prob": 0.3,
    "blur_prob": 0.25,
    "blur_sigma_px": [0.3, 1.2],
    "sharpen_prob": 0.15,
    "sharpen_alpha": [1.0, 5.0],  # MONAI's default (10-30) overshoots edges several-fold
    "noise_prob": 0.6,
    "noise_std": 0.1,  # Rician noise SD drawn from [0, noise_std] (image in [0, 1])
    "intensity_scale_prob": 0.5,
    "intensity_scale": [0.4, 1.3],
}


@dataclasses.dataclass
class CineSlices:
    """Prepared 2D slices (each (y, x) float32 in [0, 1] at target_spacing_mm), their phantom tissue maps (uint8,
    `phantom.LABELS`) and labels (uint8, LABEL_VALUES), with the phantom subject, frame and slice each came from."""

    images: list[np.ndarray] = dataclasses.field(default_factory=list)
    tissues: list[np.ndarray] = dataclasses.field(default_factory=list)
    labels: list[np.ndarray] = dataclasses.field(default_factory=list)
    source: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)  # (subject id, frame, slice)

    def __len__(self) -> int:
        return len(self.images)


def end_frames(labels: np.ndarray) -> tuple[int, int]:
    """(ED, ES) frame indices of a phantom label series (t, z, y, x): largest and smallest LV blood pool."""
    blood = (labels == phantom.LABELS["lv_blood"]).reshape(len(labels), -1).sum(axis=1)
    return int(np.argmax(blood)), int(np.argmin(blood))


def phantom_cine_slices(split: str, count: int, extra_frames: int, segmenter: CineSegmenter, seed: int
                        ) -> CineSlices:
    """Slices of the first `count` phantom subjects of `split`: every slice at ED and ES, plus `extra_frames` other
    frames per slice drawn with numpy's generator seeded by (seed, subject id)."""
    slices = CineSlices()
    target = float(segmenter.config["target_spacing_mm"])
    for subject_id in phantom.subject_ids(split, count):
        cine, labels = phantom.render_cine(phantom.make_subject(subject_id))
        spacing_yx = (cine.spacing[1], cine.spacing[0])
        ed, es = end_frames(labels.array)
        rng = np.random.default_rng([seed, subject_id])
        others = [frame for frame in range(len(cine.array)) if frame not in (ed, es)]
        for z in range(cine.spatial_shape[0]):
            for frame in [ed, es, *rng.choice(others, size=min(extra_frames, len(others)), replace=False)]:
                slices.images.append(segmenter.prepare(cine.array[frame, z], spacing_yx))
                tissue = labels.array[frame, z].astype(np.float32)
                slices.tissues.append(resample_to_spacing(tissue, spacing_yx, target, order=0).astype(np.uint8))
                slices.labels.append(phantom_labels(slices.tissues[-1]))
                slices.source.append((subject_id, int(frame), z))
    return slices


def _ellipse(shape: tuple[int, int], centre: tuple[float, float], semi_axes: tuple[float, float], angle: float
             ) -> np.ndarray:
    """Boolean ellipse (y, x) of `shape`: centre (y, x) and semi-axes in pixels, rotated by `angle` radians."""
    y, x = np.ogrid[: shape[0], : shape[1]]
    dy, dx = y - centre[0], x - centre[1]
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    return (u / semi_axes[0]) ** 2 + (v / semi_axes[1]) ** 2 <= 1.0


def add_papillary_muscles(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
    """Paint 1-3 dark ellipses (2-5 px semi-axes) at the myocardium's intensity inside the LV blood pool, 2-8 px from
    its edge, in place; the labels stay LV blood pool."""
    blood = labels == LABEL_VALUES["lv_blood"]
    myocardium = labels == LABEL_VALUES["lv_myocardium"]
    if blood.sum() < 150 or not myocardium.any():
        return
    depth = ndimage.distance_transform_edt(blood)
    rows, cols = np.nonzero((depth >= 2) & (depth <= 8))
    if rows.size == 0:
        return
    _paint_muscle(image, rows, cols, int(rng.integers(1, 4)), (2.0, 5.0), blood, float(np.median(image[myocardium])),
                  rng)


def add_trabeculae(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
    """Paint 3-10 small dark ellipses (1-3 px semi-axes) at the myocardium's intensity on the inner edge of the LV
    blood pool (centres at most 2 px from it), in place, so the endocardial border turns rough as trabeculated
    myocardium looks; the labels stay LV blood pool: the cavity ends at the compact myocardium, as expert contours
    draw it (trabeculae and papillary muscles counted in the blood pool)."""
    blood = labels == LABEL_VALUES["lv_blood"]
    myocardium = labels == LABEL_VALUES["lv_myocardium"]
    if blood.sum() < 100 or not myocardium.any():
        return
    rows, cols = np.nonzero(blood & (ndimage.distance_transform_edt(blood) <= 2.0))
    _paint_muscle(image, rows, cols, int(rng.integers(3, 11)), (1.0, 3.0), blood, float(np.median(image[myocardium])),
                  rng)


def _paint_muscle(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, count: int, semi_axes_px: tuple[float, float],
                  within: np.ndarray, level: float, rng: np.random.Generator) -> None:
    """Paint `count` ellipses, each centred on a random one of the (rows, cols) pixels with semi-axes drawn from
    `semi_axes_px` and a random angle, clipped to `within`, at `level` times 0.8-1.2 (muscle brightness), in place."""
    for _ in range(count):
        pick = int(rng.integers(rows.size))
        muscle = _ellipse(image.shape, (rows[pick], cols[pick]), tuple(rng.uniform(*semi_axes_px, 2)),
                          rng.uniform(0, math.pi)) & within
        image[muscle] = level * rng.uniform(0.8, 1.2)


def add_distractors(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, rim_prob: float) -> None:
    """Paint 1-4 smooth-edged ellipses (4-20 px semi-axes) at 0.3-1.0 of the image's 99th percentile, in place, only on
    background at least 3 px from the heart; the labels stay background. With probability `rim_prob` an ellipse gets
    a dark rim 1-3 px wide, as bowel loops and vessels show on bSSFP (the dark line at a fat-water boundary), so a
    bright disc in a ring is not yet an LV."""
    free = ~ndimage.binary_dilation(labels > 0, iterations=3)
    bright = float(np.percentile(image, 99))
    for _ in range(int(rng.integers(1, 5))):
        centre = (rng.uniform(0, image.shape[0]), rng.uniform(0, image.shape[1]))
        semi_axes, angle = rng.uniform(4.0, 20.0, 2), rng.uniform(0, math.pi)
        blob = _ellipse(image.shape, centre, tuple(semi_axes), angle)
        value = np.full(image.shape, bright * rng.uniform(0.3, 1.0), dtype=np.float32)
        if rng.random() < rim_prob:
            rim = rng.uniform(1.0, 3.0)
            blob = _ellipse(image.shape, centre, tuple(semi_axes + rim), angle)
            value[~_ellipse(image.shape, centre, tuple(semi_axes), angle)] *= rng.uniform(0.0, 0.3)
        weight = ndimage.gaussian_filter(blob.astype(np.float32), rng.uniform(0.5, 1.5)) * free
        image[:] = (1 - weight) * image + weight * value


def vary_tissue_contrast(image: np.ndarray, tissues: np.ndarray, rng: np.random.Generator, factors: list[float]
                         ) -> None:
    """Scale every phantom tissue (LV and RV blood, myocardium, scar, fat, lung, liver, chest wall, ...) by its own
    factor drawn from `factors` (low, high), in place: other scanners and sequences (flip angle, inflow, field
    strength, fat suppression) give other contrasts between the tissues than the phantom's, and the heart must be
    found by its shape, not by one set of intensities (as SynthSeg randomises the intensity of every label)."""
    for value in np.unique(tissues):
        image[tissues == value] *= rng.uniform(*factors)


def add_background_texture(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, amplitude: list[float]
                           ) -> None:
    """Multiply everything outside the heart by 1 + a n, in place: n smooth Gaussian noise (SD 1, smoothed by 1-4 px)
    and a drawn from `amplitude` (low, high), so the surroundings look as cluttered as real anatomy (liver vessels,
    bowel, stomach) rather than the phantom's flat regions."""
    noise = ndimage.gaussian_filter(rng.normal(size=image.shape), rng.uniform(1.0, 4.0))
    noise /= max(float(noise.std()), 1e-6)
    outside = labels == 0
    image[outside] *= np.clip(1.0 + rng.uniform(*amplitude) * noise[outside], 0.0, None)


def intensity_pipeline(settings: dict[str, Any]) -> Compose:
    """The MONAI intensity transforms of one example's image ((1, y, x) tensor in [0, 1]): bias field, gamma,
    histogram shift, Gaussian blur or sharpening, Rician noise, intensity scale, each with its probability. The
    sampler clips the result to [0, 1], the range of a percentile-normalised image at inference."""
    blur = tuple(settings["blur_sigma_px"])
    scale = (settings["intensity_scale"][0] - 1.0, settings["intensity_scale"][1] - 1.0)
    return Compose([
        RandBiasField(coeff_range=tuple(settings["bias_field_coeff"]), prob=settings["bias_field_prob"]),
        RandAdjustContrast(gamma=tuple(settings["gamma"]), prob=settings["gamma_prob"]),
        RandHistogramShift(num_control_points=(5, 10), prob=settings["histogram_shift_prob"]),
        RandGaussianSmooth(sigma_x=blur, sigma_y=blur, prob=settings["blur_prob"]),
        RandGaussianSharpen(alpha=tuple(settings["sharpen_alpha"]), prob=settings["sharpen_prob"]),
        RandRicianNoise(prob=settings["noise_prob"], std=settings["noise_std"], sample_std=True),
        RandScaleIntensity(factors=scale, prob=settings["intensity_scale_prob"]),
    ])


def spatial_grids(count: int, settings: dict[str, Any], patch_size: int, region_size: int,
                  rng: np.random.Generator) -> torch.Tensor:
    """Sampling grids (count, patch, patch, 2) for `grid_sample` (align_corners False) that cut a patch_size patch
    out of region_size regions with a random affine map (rotation by any angle up to rotate_deg, per-axis scale,
    shear, translation, flips) and a smooth elastic displacement (normal offsets of elastic_magnitude_px pixels SD
    at control points elastic_spacing_px apart, interpolated bicubically). One grid_sample call per batch: the
    spatial augmentation of a whole batch costs a few milliseconds on CPU."""
    angle = np.radians(rng.uniform(-settings["rotate_deg"], settings["rotate_deg"], count))
    scale = rng.uniform(*settings["scale"], (count, 2)) * rng.choice([-1.0, 1.0], (count, 2))  # sign: a flip
    shear = rng.uniform(-settings["shear"], settings["shear"], count)
    shift = rng.uniform(-settings["translate_px"], settings["translate_px"], (count, 2)) / (region_size / 2)
    theta = np.zeros((count, 2, 3))
    for index in range(count):
        cos, sin = math.cos(angle[index]), math.sin(angle[index])
        matrix = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear[index]], [0.0, 1.0]])
        theta[index, :, :2] = matrix @ np.diag(scale[index]) * (patch_size / region_size)
        theta[index, :, 2] = shift[index]
    grid = F.affine_grid(torch.from_numpy(theta).float(), [count, 1, patch_size, patch_size], align_corners=False)
    points = max(2, round(patch_size / settings["elastic_spacing_px"]) + 1)
    magnitude = rng.uniform(*settings["elastic_magnitude_px"], (count, 1, 1, 1))
    offsets = torch.from_numpy(rng.normal(size=(count, 2, points, points)) * magnitude / (region_size / 2)).float()
    elastic = F.interpolate(offsets, size=(patch_size, patch_size), mode="bicubic", align_corners=True)
    return grid + elastic.permute(0, 2, 3, 1)


def _region(array: np.ndarray, centre: tuple[int, int], size: int) -> np.ndarray:
    """The size x size square of a 2D array centred on `centre` (y, x), zero outside the array."""
    out = np.zeros((size, size), dtype=np.float32)
    y0, x0 = centre[0] - size // 2, centre[1] - size // 2
    ys, xs = slice(max(y0, 0), min(y0 + size, array.shape[0])), slice(max(x0, 0), min(x0 + size, array.shape[1]))
    out[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = array[ys, xs]
    return out


class PatchSampler:
    """Augmented training batches from CineSlices: `batch(size, seed)` -> (images (B, 1, s, s) float32, labels
    (B, 1, s, s) int64), the same for the same seed.

    Per batch: regions of 2 s x 2 s around a (jittered) heart centre, or anywhere, for a fraction of the examples;
    `spatial_grids` (batched affine + elastic warp, nearest for the tissue maps); then per example tissue contrast,
    background texture, papillary muscles, trabeculae and distractors at random and the MONAI intensity transforms."""

    def __init__(self, slices: CineSlices, settings: dict[str, Any], patch_size: int) -> None:
        self.slices, self.settings, self.patch_size = slices, settings, patch_size
        self.region_size = 2 * patch_size  # room for any rotation and for zooming out before the patch is cut
        self.intensity = intensity_pipeline(settings)
        self.heart_centres = [tuple(int(v) for v in ndimage.center_of_mass(labels > 0)) if labels.any()
                              else (labels.shape[0] // 2, labels.shape[1] // 2) for labels in slices.labels]

    def _centre(self, index: int, rng: np.random.Generator) -> tuple[int, int]:
        if rng.random() < self.settings["heart_centred_fraction"]:
            jitter = rng.integers(-self.settings["heart_jitter_px"], self.settings["heart_jitter_px"] + 1, 2)
            return self.heart_centres[index][0] + int(jitter[0]), self.heart_centres[index][1] + int(jitter[1])
        shape = self.slices.images[index].shape
        return int(rng.integers(shape[0])), int(rng.integers(shape[1]))

    def batch(self, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(seed)
        self.intensity.set_random_state(seed=seed)
        regions = []
        for index in rng.integers(len(self.slices), size=size):
            centre = self._centre(int(index), rng)
            regions.append([_region(self.slices.images[index], centre, self.region_size),
                            _region(self.slices.tissues[index], centre, self.region_size)])
        regions_t = torch.from_numpy(np.asarray(regions))
        grid = spatial_grids(size, self.settings, self.patch_size, self.region_size, rng)
        images = F.grid_sample(regions_t[:, :1], grid, mode="bilinear", align_corners=False).numpy()
        tissues = F.grid_sample(regions_t[:, 1:], grid, mode="nearest", align_corners=False).numpy()
        tissues = np.rint(tissues).astype(np.uint8)
        labels = phantom_labels(tissues).astype(np.int64)
        tracking = get_track_meta()
        set_track_meta(False)  # plain tensors through MONAI: no metadata bookkeeping per call
        try:
            for image, tissue, label in zip(images, tissues, labels):
                if rng.random() < self.settings["tissue_contrast_prob"]:
                    vary_tissue_contrast(image[0], tissue[0], rng, self.settings["tissue_contrast"])
                if rng.random() < self.settings["background_texture_prob"]:
                    add_background_texture(image[0], label[0], rng, self.settings["background_texture"])
                if rng.random() < self.settings["papillary_prob"]:
                    add_papillary_muscles(image[0], label[0], rng)
                if rng.random() < self.settings["trabeculae_prob"]:
                    add_trabeculae(image[0], label[0], rng)
                if rng.random() < self.settings["distractor_prob"]:
                    add_distractors(image[0], label[0], rng, self.settings["distractor_rim_prob"])
                image[:] = torch.as_tensor(self.intensity(torch.from_numpy(image))).clamp(0.0, 1.0).numpy()
        finally:
            set_track_meta(tracking)
        return torch.from_numpy(images), torch.from_numpy(labels)


def dice_scores(network: torch.nn.Module, slices: CineSlices, device: torch.device, batch: int) -> dict[str, float]:
    """Dice of each foreground class (pooled over all voxels of all slices) and their mean ("dice") for whole
    prepared slices, batched by slice shape; argmax of the network, no clean-up."""
    intersection, total = np.zeros(CLASSES), np.zeros(CLASSES)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(slices.images):
        by_shape.setdefault(image.shape, []).append(index)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch):
            chosen = indices[start:start + batch]
            padded, (height, width) = pad_to_multiple(np.stack([slices.images[i] for i in chosen]), PAD_MULTIPLE)
            logits = network(torch.from_numpy(padded[:, None]).to(device))[:, :, :height, :width]
            predicted = logits.argmax(dim=1).cpu().numpy()
            truth = np.stack([slices.labels[i] for i in chosen])
            for value in range(1, CLASSES):
                intersection[value] += np.sum((predicted == value) & (truth == value))
                total[value] += np.sum(predicted == value) + np.sum(truth == value)
    scores = {f"dice_{name}": float(2 * intersection[value] / max(total[value], 1.0))
              for name, value in LABEL_VALUES.items() if value}
    return {"dice": float(np.mean(list(scores.values()))), **scores}


def train_cine_segmenter(config: dict[str, Any], out: Path, context: Context, resume: bool) -> tuple[dict, dict]:
    """Train the cine LV / RV U-Net; returns (weights, checkpoint config).

    config: description, data {"source": "phantom", "train_subjects", "validation_subjects", "extra_frames"},
    network, target_spacing_mm, percentiles, augmentation (optional overrides of AUGMENTATION), train {steps,
    batch_size, patch_size, lr, ema_decay, seed, validate_every}. ValueError for another data source or an unknown
    augmentation key.
    """
    data, train_cfg = config["data"], config["train"]
    if data["source"] != "phantom":
        raise ValueError(f"the cine segmenter trains on the phantom (data source 'phantom'); got {data['source']!r}")
    unknown = set(config.get("augmentation", {})) - set(AUGMENTATION)
    if unknown:
        raise ValueError(f"unknown augmentation setting(s) {sorted(unknown)}; known: {sorted(AUGMENTATION)}")
    settings = {**AUGMENTATION, **config.get("augmentation", {})}
    network = build_network(config["network"])
    helper = CineSegmenter(network, config, torch.device("cpu"))
    seed = int(train_cfg["seed"])
    train = phantom_cine_slices("train", data["train_subjects"], data["extra_frames"], helper, seed)
    validation = phantom_cine_slices("validation", data["validation_subjects"], 0, helper, seed)
    sampler = PatchSampler(train, settings, int(train_cfg["patch_size"]))
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    batch = int(train_cfg["batch_size"])

    def loss_fn(model: torch.nn.Module, generator: torch.Generator) -> torch.Tensor:
        step_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        images, labels = sampler.batch(batch, step_seed)
        return loss_function(model(images.to(context.device)), labels.to(context.device))

    def validate(model: torch.nn.Module) -> dict[str, float]:
        return dice_scores(model, validation, context.device, batch)

    trainer = Trainer(network, context, out, steps=int(train_cfg["steps"]), lr=train_cfg["lr"],
                      ema_decay=train_cfg["ema_decay"], seed=seed, validate_every=train_cfg["validate_every"],
                      select="dice")
    if resume:
        trainer.resume()
    weights = trainer.fit(loss_fn, validate)
    summary = {"steps": trainer.step, "train_slices": len(train), "validation_slices": len(validation),
               "best": trainer.best, "elapsed_s": round(getattr(trainer, "elapsed_s", 0.0), 1),
               "world_size": context.world_size, "device": str(context.device)}
    product = {key: config[key] for key in ("network", "target_spacing_mm", "percentiles")}
    return weights, {"method": METHOD, **product, "label_values": LABEL_VALUES, "augmentation": settings,
                     "training_summary": summary}


RECIPES = {"cine_segmentation": train_cine_segmenter}
