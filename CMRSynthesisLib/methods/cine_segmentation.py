"""Cine LV / RV segmentation: a 2D MONAI U-Net applied to every short-axis slice of the chosen cine frames.

Labels (LABEL_VALUES): 0 background, 1 LV blood pool, 2 LV myocardium (scar included), 3 RV blood pool.

Inference on one slice: the image is percentile-normalised (the config's percentiles mapped to [0, 1], so any
intensity scale works) and resampled to square pixels of `target_spacing_mm`, zero-padded to a multiple of 16; the
network's class probabilities are resampled back onto the input pixel grid (bilinear, pixel centres aligned as in the
forward resampling) and the most probable class is taken. Clean-up (`clean_slice`): one LV blood pool (the
connected component best surrounded by myocardium, beside the RV), holes in it filled, the myocardium kept where it
touches that blood pool (the ring around it), one RV blood pool (the largest component beside the LV).

Output dimensionality follows the input: a cine (t, z, y, x) gives labels (t', z, y, x) for the chosen frames; a 3D
stack (z, y, x), a single image being a stack of one slice, is segmented as one frame and gives (z, y, x). The labels
lie on the input's voxel grid (same shape, spacing, origin, direction).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..analysis.cardiac_phases import blood_pool_volumes_ml, ed_es_frames
from ..checkpoints import load_checkpoint, shipped_checkpoint
from ..device import resolve_device
from ..diffusion.networks import build_network, load_weights
from ..errors import CheckpointError, InputError
from ..preprocess import pad_to_multiple, percentile_normalise, resample_to_spacing
from ..progress import Progress, report
from ..volume import Volume
from .registry import CheckpointRole, InputRole, MethodSpec, Option, OutputRole

METHOD = "cine_segmentation"
SHIPPED_CHECKPOINT = "cine_segmenter"
LABEL_VALUES: dict[str, int] = {"background": 0, "lv_blood": 1, "lv_myocardium": 2, "rv_blood": 3}
CLASSES = len(LABEL_VALUES)
PAD_MULTIPLE = 16  # the U-Net halves the image four times at most
BATCH_SLICES = 16  # slices per forward pass (bounds its memory; benchmarks/segment.py measures the peak)
MIN_CAVITY_MM2 = 30.0  # smaller LV blood islands are no cavity candidates (an end-systolic cavity: 300 mm2 or more)
MAX_CANDIDATES = 8  # the largest LV blood components weighed as the cavity
RV_REACH_MM = 5.0  # RV blood this close to the LV counts as beside it


def phantom_labels(labels: np.ndarray) -> np.ndarray:
    """Map a phantom label map (values of `phantom.LABELS`, any shape) to LABEL_VALUES (uint8, same shape): LV blood
    -> 1, LV myocardium and scar -> 2, RV blood -> 3, everything else (RV wall, aorta, ...) -> 0."""
    from .. import phantom

    table = np.zeros(max(phantom.LABELS.values()) + 1, dtype=np.uint8)
    table[phantom.LABELS["lv_blood"]] = LABEL_VALUES["lv_blood"]
    table[[phantom.LABELS["lv_myocardium"], phantom.LABELS["scar"]]] = LABEL_VALUES["lv_myocardium"]
    table[phantom.LABELS["rv_blood"]] = LABEL_VALUES["rv_blood"]
    return table[np.asarray(labels)]


def _largest(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a 2D boolean mask (empty stays empty)."""
    components, count = ndimage.label(mask)
    if count <= 1:
        return mask.copy()
    return components == (np.argmax(np.bincount(components.ravel())[1:]) + 1)


def _lv(blood: np.ndarray, myocardium: np.ndarray, rv: np.ndarray, min_px: float, reach_px: int
        ) -> tuple[np.ndarray, np.ndarray]:
    """The LV cavity and its myocardial ring in 2D masks of the network's LV blood, myocardium and RV blood labels.

    Each LV blood component of at least `min_px` pixels (the MAX_CANDIDATES largest) is a candidate cavity,
    its holes filled (papillary muscles); its ring is the myocardium components touching it. The candidate kept
    has the largest score: area x (0.1 + the fraction of its one-pixel outer border on myocardium) x (2 when RV
    blood lies within `reach_px` of cavity or ring, else 1): the LV cavity is the blood the myocardium surrounds,
    beside the RV; a bright vessel, bowel loop or chamber elsewhere scores lower. Returns (cavity, ring); both empty
    without a candidate.
    """
    components, count = ndimage.label(blood)
    areas = np.bincount(components.ravel(), minlength=count + 1)[1:]
    candidates = [index + 1 for index in np.argsort(areas)[::-1][:MAX_CANDIDATES] if areas[index] >= min_px]
    rings, _ = ndimage.label(myocardium)
    best, best_score = (np.zeros_like(blood), np.zeros_like(blood)), -1.0
    for index in candidates:
        cavity = ndimage.binary_fill_holes(components == index)
        border = ndimage.binary_dilation(cavity) & ~cavity
        touching = np.unique(rings[border & (rings > 0)])
        ring = np.isin(rings, touching) & ~cavity if touching.size else np.zeros_like(blood)
        beside_rv = bool(rv[ndimage.binary_dilation(cavity | ring, iterations=reach_px)].any())
        surrounded = float(myocardium[border].mean()) if border.any() else 0.0
        score = float(cavity.sum()) * (0.1 + surrounded) * (2.0 if beside_rv else 1.0)
        if score > best_score:
            best, best_score = (cavity, ring), score
    return best


def clean_slice(labels: np.ndarray, spacing_yx: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Anatomical clean-up of one 2D label map (y, x) of LABEL_VALUES with pixel spacing spacing_yx (mm); returns a
    new uint8 map.

    LV: the cavity and myocardial ring chosen by `_lv`; every pixel the ring encloses becomes blood pool (papillary
    muscles and trabeculae belong to the cavity). Without an LV blood pool, the largest myocardium component is kept.
    RV blood: the largest component within RV_REACH_MM of the LV (any RV component when no LV was found). Pixels
    dropped become background.
    """
    lv_value, myo_value, rv_value = (LABEL_VALUES[name] for name in ("lv_blood", "lv_myocardium", "rv_blood"))
    reach_px = max(1, round(RV_REACH_MM / min(spacing_yx)))
    rv_all = labels == rv_value
    min_px = MIN_CAVITY_MM2 / (spacing_yx[0] * spacing_yx[1])
    blood, myocardium = _lv(labels == lv_value, labels == myo_value, rv_all, min_px, reach_px)
    rv_candidates = rv_all & ~blood & ~myocardium
    if blood.any():
        blood = ndimage.binary_fill_holes(blood | myocardium) & ~myocardium
        components, _ = ndimage.label(rv_candidates)
        near = np.unique(components[ndimage.binary_dilation(blood | myocardium, iterations=reach_px)])
        rv_candidates = np.isin(components, near[near > 0])
    else:
        myocardium = _largest(labels == myo_value)
    rv = _largest(rv_candidates & ~myocardium)
    out = np.zeros(labels.shape, dtype=np.uint8)
    out[rv] = rv_value
    out[myocardium] = myo_value
    out[blood] = lv_value
    return out


class CineSegmenter:
    """The cine LV / RV segmenter: a 2D U-Net with 4 output classes (LABEL_VALUES) at a fixed pixel size.

    config keys: network ({"class", "args"} for `build_network`), target_spacing_mm (pixel size the network works
    at, mm), percentiles ([low, high] mapped to [0, 1] before the network).
    """

    name = METHOD
    REQUIRED_CONFIG = ("network", "target_spacing_mm", "percentiles")

    def __init__(self, network: torch.nn.Module, config: dict[str, Any], device: torch.device) -> None:
        missing = [key for key in self.REQUIRED_CONFIG if key not in config]
        if missing:
            raise CheckpointError(f"the cine-segmentation checkpoint config lacks {', '.join(missing)}")
        self.network = network.to(device).eval()
        self.config = config
        self.device = device

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, device: str | torch.device = "auto") -> CineSegmenter:
        """Load a checkpoint folder (None: the shipped demo model), hash-checked, on `device` ("auto", "cpu",
        "cuda"). CheckpointError for a missing, tampered or foreign checkpoint."""
        folder = Path(checkpoint) if checkpoint else shipped_checkpoint(SHIPPED_CHECKPOINT)
        weights, config = load_checkpoint(folder, expected_method=METHOD)
        return cls(load_weights(build_network(config["network"]), weights), config, resolve_device(device))

    def prepare(self, image: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
        """A 2D slice (y, x) as the network sees it: float32 in [0, 1] (percentile-normalised) at square pixels of
        target_spacing_mm; spacing_yx is the slice's (row, column) pixel spacing in mm."""
        low, high = self.config["percentiles"]
        return resample_to_spacing(percentile_normalise(image, low, high), spacing_yx,
                                   float(self.config["target_spacing_mm"]))

    @torch.no_grad()
    def probabilities(self, images: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
        """Class probabilities (N, 4, y, x) float32 on the input pixel grid of 2D slices (N, y, x) that share the
        pixel spacing spacing_yx (mm), in batches of BATCH_SLICES."""
        prepared = np.stack([self.prepare(image, spacing_yx) for image in images])
        padded, (height, width) = pad_to_multiple(prepared, PAD_MULTIPLE)
        out = np.empty((len(images), CLASSES, *images.shape[1:]), dtype=np.float32)
        for start in range(0, len(images), BATCH_SLICES):
            batch = torch.from_numpy(padded[start:start + BATCH_SLICES, None]).to(self.device)
            probability = torch.softmax(self.network(batch), dim=1)[:, :, :height, :width]
            back = F.interpolate(probability, size=images.shape[1:], mode="bilinear", align_corners=False)
            out[start:start + BATCH_SLICES] = back.cpu().numpy()
        return out

    def segment_slices(self, images: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
        """uint8 labels (N, y, x) of 2D slices (N, y, x) with pixel spacing spacing_yx (mm), cleaned slice by slice."""
        labels = np.argmax(self.probabilities(images, spacing_yx), axis=1).astype(np.uint8)
        return np.stack([clean_slice(label, spacing_yx) for label in labels])

    def segment(self, cine: Volume, frames: Sequence[int] | None = None, progress: Progress | None = None) -> Volume:
        """Segment a cine (t, z, y, x) frame by frame, or a 3D stack (z, y, x) as one frame.

        frames: indices into the time axis (None: every frame), kept in the order given; a 3D input takes only None
        or [0]. Returns a uint8 label Volume (LABEL_VALUES) on the input's grid: (len(frames), z, y, x) for a cine,
        (z, y, x) for a 3D input; metadata: label_values, frames, trigger_times_ms of those frames (when the input
        has them), segmentation (method and checkpoint). InputError for inputs that are not finite intensities or
        frames out of range; Cancelled when `progress` returns False.
        """
        _check_intensities(cine)
        four_d = cine.array.ndim == 4
        stack = cine.array if four_d else cine.array[None]
        chosen = checked_frames(frames, len(stack), four_d)
        spacing_yx = (cine.spacing[1], cine.spacing[0])
        labels = np.zeros((len(chosen), *cine.spatial_shape), dtype=np.uint8)
        for number, frame in enumerate(chosen):
            report(progress, number / len(chosen), f"segmenting frame {frame} ({number + 1}/{len(chosen)})")
            labels[number] = self.segment_slices(stack[frame], spacing_yx)
        report(progress, 1.0, f"segmented {len(chosen)} frame(s)")
        metadata: dict[str, Any] = {
            "description": "cine segmentation: 1 LV blood pool, 2 LV myocardium, 3 RV blood pool",
            "units": "label", "label_values": dict(LABEL_VALUES), "frames": chosen,
            "segmentation": {"method": METHOD, "checkpoint": self.config.get("description", "")},
        }
        times = cine.metadata.get("trigger_times_ms")
        if four_d and times is not None and len(times) == len(stack):
            metadata["trigger_times_ms"] = [times[frame] for frame in chosen]
        return Volume(labels if four_d else labels[0], cine.spacing, cine.origin, cine.direction, metadata)

    def run(self, inputs: dict[str, Volume | None], *, frames: str | Sequence[int] | None = None,
            progress: Progress | None = None) -> dict[str, Volume]:
        """The registry's entry point: inputs {"cine": Volume}; returns {"labels": labels of the chosen frames}.

        frames: None (every frame), frame indices, or text as `parse_frames` reads it ("ed,es", "0,5,12", "ed,3"):
        ED and ES are the frames of largest and smallest LV blood-pool volume (`cardiac_phases.ed_es_frames`) over
        every frame's labels. The labels' metadata also holds ed_frame / es_frame (when asked for) and
        lv_blood_volume_ml per chosen frame (cine input only).
        """
        cine = inputs.get("cine")
        if cine is None:
            raise InputError("cine segmentation needs a cine (input 'cine')")
        _check_intensities(cine)
        wanted = parse_frames(frames) if isinstance(frames, str) else frames
        four_d = cine.array.ndim == 4
        count = cine.array.shape[0] if four_d else 1
        numbers = None if wanted is None else [item for item in wanted if not isinstance(item, str)]
        phases = wanted is not None and len(numbers) < len(wanted)
        if numbers:
            checked_frames(numbers, count, four_d)
        if phases and count < 2:
            raise InputError(f"finding the frames 'ed' and 'es' needs a cine of several frames; "
                             f"{cine.named('the input')} has {count}: give frame numbers instead")
        labels = self.segment(cine, None if phases or numbers is None else sorted(numbers), progress)
        if not four_d:
            return {"labels": labels}
        volumes = blood_pool_volumes_ml(labels.array, labels.spacing)
        extra: dict[str, Any] = {}
        if phases:
            ed, es = ed_es_frames(volumes)
            extra = {"ed_frame": ed, "es_frame": es,
                     "ed_es_source": "LV blood-pool volume curve (largest, smallest)"}
            keep = sorted({ed if item == "ed" else es if item == "es" else item for item in wanted})
            times = labels.metadata.get("trigger_times_ms")
            labels = labels.with_array(labels.array[keep], frames=keep,
                                       **({"trigger_times_ms": [times[frame] for frame in keep]} if times else {}))
            volumes = volumes[keep]
        extra["lv_blood_volume_ml"] = {str(frame): round(float(volume), 2)
                                       for frame, volume in zip(labels.metadata["frames"], volumes)}
        return {"labels": labels.with_array(labels.array, **extra)}


def segment_cine(cine: Volume, frames: Sequence[int] | None = None, *, device: str = "auto",
                 checkpoint: str | Path | None = None, progress: Progress | None = None) -> Volume:
    """Segment the LV blood pool (1), LV myocardium (2) and RV blood pool (3) of a cine.

    cine: (t, z, y, x) with any intensity scale (a 3D (z, y, x) stack or single image is one frame); frames: time
    indices to segment (None: all). Returns uint8 labels on the input's grid: (len(frames), z, y, x) for a cine,
    (z, y, x) for a 3D input. checkpoint: a checkpoint folder (None: the shipped demo model); device: "auto", "cpu"
    or "cuda". Raises InputError (bad input, frames out of range), CheckpointError, Cancelled (see
    `CineSegmenter.segment`).
    """
    return CineSegmenter.load(checkpoint, device).segment(cine, frames, progress)


def parse_frames(text: str | None) -> list[int | str] | None:
    """Frames to segment as text -> items: 'ed,es,0,5' -> ['ed', 'es', 0, 5] (None or '': every frame).
    InputError for anything but 'ed', 'es' and frame numbers from 0, separated by commas."""
    if text is None or not text.strip():
        return None
    items: list[int | str] = []
    for token in (part.strip().lower() for part in text.split(",")):
        if token in ("ed", "es"):
            items.append(token)
        elif token.isdigit():
            items.append(int(token))
        else:
            raise InputError(f"frames to segment (--frames) take 'ed', 'es' and frame numbers from 0, separated by "
                             f"commas; got {text!r}")
    return items


def checked_frames(frames: Sequence[int] | None, count: int, four_d: bool = True) -> list[int]:
    """The frame indices to segment out of `count` frames: all for None; otherwise the given non-negative integers,
    each below `count`, without repeats. four_d False (a 3D input): only None or [0]. InputError otherwise."""
    if frames is None:
        return list(range(count))
    chosen = list(frames)
    if not chosen:
        raise InputError("no frame chosen: give at least one frame index, or none to segment every frame")
    for frame in chosen:
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
            raise InputError(f"frame indices must be integers; got {frame!r}")
        if not 0 <= frame < count:
            if not four_d:
                raise InputError(f"frame {frame} is out of range: a 3D image is one frame (frame 0)")
            raise InputError(f"frame {frame} is out of range: the cine has {count} frames (0-{count - 1})")
    if len(set(chosen)) != len(chosen):
        raise InputError(f"frames {chosen} name a frame twice")
    return [int(frame) for frame in chosen]


def _check_intensities(cine: Volume) -> None:
    """InputError unless the input holds finite real numbers (any numeric dtype and scale; not bool or complex)."""
    if cine.array.dtype == bool or not np.issubdtype(cine.array.dtype, np.number):
        raise InputError(f"{cine.named('the cine')} must hold intensities; got voxels of type {cine.array.dtype}")
    cine.require_finite("the cine")


def _summary(inputs: dict[str, Any], outputs: dict[str, Volume]) -> dict[str, Any]:
    """The command's facts: label values, frames segmented (a 3D input: [0]), ED / ES and LV blood-pool volumes."""
    labels = outputs["labels"]
    summary: dict[str, Any] = {"label_values": labels.metadata["label_values"],
                               "frames": labels.metadata["frames"] if labels.array.ndim == 4 else [0]}
    summary.update({key: labels.metadata[key] for key in ("ed_frame", "es_frame", "ed_es_source",
                                                           "lv_blood_volume_ml") if key in labels.metadata})
    return summary


SPEC = MethodSpec(
    name=METHOD, command="segment", title="Cine segmentation",
    help="LV blood pool, LV myocardium and RV blood pool of a cine (or a 3D stack / single image)",
    paper="MONAI U-Net trained on the phantom cine (project method; checked on Sunnybrook expert contours)",
    factory=CineSegmenter.load,
    inputs=(InputRole("cine", "cine", "cine: 4D NIfTI / NRRD (time last on disk) or a DICOM cine folder or file; or a "
                      "3D NIfTI / NRRD stack, segmented as one frame"),),
    outputs=(OutputRole("labels", "labels", "1 LV blood pool, 2 LV myocardium, 3 RV blood pool, on the input's grid: "
                        "a 4D label file (the chosen frames in time order, with a JSON sidecar of their trigger "
                        "times) for a cine, a 3D one for a 3D input", grid="cine", frames=True),),
    checkpoints=(CheckpointRole("checkpoint", "cine segmenter checkpoint folder", SHIPPED_CHECKPOINT),),
    options=(Option("frames", str, None, "frames to segment, from 0: 'ed,es' (from the LV blood-pool volume curve: "
                    "largest and smallest), frame numbers '0,5,12', or both (default: every frame)", per_study=True),),
    summarise=_summary, recipes=("cine_segmentation",),
)
