"""Multi-sequence synthesis: any two of bSSFP, T2-weighted and LGE to the third (CMRDiff, paper 001, "CMRDiff:
Multi-sequence CMR synthesis", ISMRM 2024 abstract 0384).

Per short-axis slice, on a square crop centred on the heart (`crop_size` pixels of `pixel_mm`): the two given
sequences, each scaled to [-1, 1] by its crop's 0.5th / 99.5th percentiles, are encoded by the autoencoder shared by
the three sequences (MONAI AutoencoderKL, the framework's `LatentCodec`); a latent DDPM (`cmrdiff_network`) denoises
the target's latent with the two condition latents concatenated to it and fed as tokens by cross-attention, under
multi-condition classifier-free guidance with one scale per given sequence (`diffusion.conditioning`: the null pass
and one pass per sequence whose scale is not 0, batched). Guided synthesis (the paper's Fig. 2): the chain starts
from the latent of a structural input noised to `strength` of the chain (START_FROM: the bSSFP, or the LGE when the
bSSFP is the target: both show bright blood), or from pure noise at strength 1. The k samples are decoded and
averaged; the result is their mean and per-pixel SD, in the target's normalised intensity [0, 1] (its crop's
percentiles at 0 and 1, as the model was trained), pasted onto the first given input's grid (CONTRASTS order) and 0
outside the crops.

The heart is found by the cine segmenter on the bSSFP (its LV blood pool at the crop's centre, as in training) or,
when the bSSFP is the target, by the LGE heart-ROI segmenter (its centroid). The second input is brought onto the
first's slices by position (`slice_matching`: resampled in plane where their grids differ; refused where they do not
overlap). A 4D bSSFP cine gives its ED frame (largest LV blood pool).

A pix2pix comparison model shares this module and checkpoint format (config "variant": "pix2pix"): a U-Net from the
two given crops and the target's one-hot channels straight to the target crop.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..analysis.cardiac_phases import blood_pool_volumes_ml, ed_es_frames
from ..checkpoints import shipped_checkpoint
from ..device import check_seed, resolve_device
from ..diffusion.conditioning import Condition
from ..diffusion.latent import LatentCodec, load_synthesis_model
from ..diffusion.model import DiffusionModel
from ..diffusion.networks import build_network
from ..diffusion.samplers import checked_sampling, sample, sampling_record, timestep_pairs
from ..errors import CheckpointError, InputError
from ..evaluation import checkpoint_baseline
from ..metrics import cnr, crop_box, psnr, roi_bounding_box, scaled_by_crop, ssim
from ..preprocess import LVCrop, percentile_normalise
from ..progress import Progress, report
from ..slice_matching import onto_reference_slices
from ..slice_runner import parse_slices, run_slices
from ..volume import Volume
from .cine_segmentation import LABEL_VALUES, CineSegmenter
from .cmrdiff_network import CONTRASTS, build_cmrdiff, roles_of, roles_tensor
from .registry import (
    Baseline,
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

METHOD = "multi_sequence"
SHIPPED_CHECKPOINT = "multi_sequence"
SHIPPED_AUTOENCODER = "multi_sequence_autoencoder"
SHIPPED_SEGMENTER = "cine_segmenter"
SHIPPED_HEART_SEGMENTER = "scar_enhancement_segmenter"
PERCENTILES = (0.5, 99.5)
START_FROM = {"lge": "bssfp", "t2w": "bssfp", "bssfp": "lge"}  # the structural input a guided start noises
DEFAULT_GUIDANCE = "2,2"  # chosen: one scale per given sequence, in CONTRASTS order, for a checkpoint without its own
DEFAULT_STRENGTH = 0.5  # chosen: the guided start noises the structural latent to half the chain (idem)
NAMES = {"bssfp": "bSSFP", "t2w": "T2w", "lge": "LGE"}


def crop_in_unit_range(image: np.ndarray, crop: LVCrop) -> np.ndarray:
    """One slice (y, x) of any sequence on `crop`, scaled to [-1, 1] by its PERCENTILES: (1, S, S) float32."""
    return (percentile_normalise(crop.extract(np.asarray(image, dtype=np.float32)), *PERCENTILES)[None] * 2.0
            - 1.0).astype(np.float32)


def parse_guidance(text: str) -> tuple[float, float]:
    """"c1,c2" -> the guidance scales of the first and second given sequence (CONTRASTS order); InputError unless
    two finite numbers >= 0."""
    try:
        scales = tuple(float(part) for part in str(text).split(","))
    except ValueError:
        scales = ()
    if len(scales) != 2 or not all(math.isfinite(scale) and scale >= 0 for scale in scales):
        raise InputError(f"guidance (--guidance) takes two scales >= 0, one per given sequence in the order "
                         f"{', '.join(NAMES[name] for name in CONTRASTS)} (e.g. 2,3); got {text!r}")
    return scales[0], scales[1]


def input_problem(given: set[str], options: dict[str, Any]) -> str:
    """What the given sequences lack or have too much for options["target"], as a sentence; empty when they are
    exactly the two others (the method's `input_rule`)."""
    target = options.get("target")
    if target not in CONTRASTS:
        return f"unknown target sequence {target!r} (--target); choose one of {', '.join(CONTRASTS)}"
    first, second = roles_of(target)
    if target in given:
        return (f"the target {NAMES[target]} is also given as an input: give only the two other sequences "
                f"({NAMES[first]} and {NAMES[second]}) to synthesise it")
    missing = [NAMES[name] for name in (first, second) if name not in given]
    if missing:
        return (f"synthesising {NAMES[target]} needs both {NAMES[first]} and {NAMES[second]}; missing: "
                f"{', '.join(missing)}")
    return ""


def one_hot_target(target: str, size: int) -> np.ndarray:
    """The target's one-hot channels (3, size, size) float32, in CONTRASTS order (pix2pix's direction input)."""
    channels = np.zeros((len(CONTRASTS), size, size), np.float32)
    channels[CONTRASTS.index(target)] = 1.0
    return channels


def build_model(config: dict[str, Any]) -> torch.nn.Module:
    """The network of a multi-sequence checkpoint config by its "variant": "cmrdiff" or "pix2pix"."""
    variant = config.get("variant")
    if variant == "pix2pix":
        return build_network(config["generator"])
    if variant == "cmrdiff":
        return build_cmrdiff(config)
    raise CheckpointError(f"unknown multi-sequence variant {variant!r}; known: cmrdiff, pix2pix")


CONDITIONS = (Condition("first", "concat", null=0.0), Condition("second", "concat", null=0.0),
              Condition("roles", "context"))
"""CMRDiff's conditions: the two given sequences' latents (null: all 0, dropped in training, guided at inference)
and the roles context (target and given sequences; always given)."""


class MultiSequence:
    """Synthesis of one sequence from the two others with a trained CMRDiff (or pix2pix) checkpoint, the shared
    autoencoder and the segmenters that find the heart.

    config keys: variant, crop_size (pixels), pixel_mm, factor (image / latent size), latent_channels, schedule
    (CMRDiff), the network configs (`build_model`).
    """

    name = METHOD
    REQUIRED_CONFIG = ("variant", "crop_size", "pixel_mm")

    def __init__(self, network: torch.nn.Module, config: dict[str, Any], codec: LatentCodec | None,
                 device: torch.device, segmenter: str | Path | None = None,
                 heart_segmenter: str | Path | None = None) -> None:
        missing = [key for key in self.REQUIRED_CONFIG if key not in config]
        if missing:
            raise CheckpointError(f"the multi-sequence checkpoint config lacks {', '.join(missing)}")
        self.config, self.codec, self.device = config, codec, device
        self.variant = config["variant"]
        self.network = network.to(device).eval()
        self.model = None if self.variant == "pix2pix" else DiffusionModel.from_config(
            self.network, {**config["schedule"], "clip_sample": False}, CONDITIONS)
        self.segmenter_checkpoint, self.heart_segmenter_checkpoint = segmenter, heart_segmenter
        self._segmenter: CineSegmenter | None = None
        self._heart_segmenter: Any = None  # scar_enhancement.HeartSegmenter, imported when first needed

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, device: str | torch.device = "auto",
             autoencoder: str | Path | None = None, segmenter: str | Path | None = None,
             heart_segmenter: str | Path | None = None) -> MultiSequence:
        """Load a checkpoint folder (None: the shipped demo model) and, for CMRDiff, the autoencoder it was trained
        on (None: shipped), hash-checked, on `device`; the segmenters (None: shipped) are loaded when first needed.
        CheckpointError for a missing, tampered or foreign checkpoint, or another autoencoder than the model's."""
        resolved = resolve_device(device)
        network, config, codec = load_synthesis_model(
            Path(checkpoint) if checkpoint else shipped_checkpoint(SHIPPED_CHECKPOINT),
            Path(autoencoder) if autoencoder else None, SHIPPED_AUTOENCODER, METHOD, "multi-sequence", resolved,
            build_model)
        return cls(network, config, codec, resolved, segmenter, heart_segmenter)

    def run(self, inputs: dict[str, Any], *, target: str = "lge", guidance: str | None = None,
            strength: float | None = None, slices: str | None = None, samples: int = 3, seed: int = 0,
            sampler: str = "ddim", ddim_steps: int = 50, ddim_eta: float = 1.0, progress: Progress | None = None
            ) -> dict[str, Volume]:
        """Synthesise the `target` sequence ("bssfp", "t2w" or "lge") of every slice with a heart from the two other
        sequences (inputs by name; exactly those two, 3D stacks (z, y, x); a bSSFP may be a 4D cine: its ED frame).

        guidance: "c1,c2", the scales of the two given sequences in CONTRASTS order (0 removes that sequence's
        influence); strength in (0, 1]: how far the guided start noises the structural input's latent (1: pure
        noise); None for either: the checkpoint's own for this target (`defaults`); slices: slices of the first given
        input counted from 1 ("3-5,7"; None: every slice with a heart where the other input covers it); samples k,
        seed, sampler ("ddim": `ddim_steps` steps with noise level `ddim_eta`; "ddpm": every step). Returns "image"
        (float32 in [0, 1] on the first given input's grid, 0 outside the crops) and "image_sd" (SD of the k
        samples); settings, the slices synthesised (counted from 1) and their crops in image.metadata["synthesis"].

        InputError for a target given as input, a missing input, a 4D T2w or LGE, a bad setting or no heart found;
        GeometryError when the two inputs do not overlap; Cancelled when `progress` returns False.
        """
        unknown = sorted(set(inputs) - set(CONTRASTS))
        if unknown:
            raise InputError(f"unknown input(s) {', '.join(map(repr, unknown))}; multi-sequence synthesis takes "
                             f"{', '.join(map(repr, CONTRASTS))}")
        problem = input_problem({name for name in CONTRASTS if inputs.get(name) is not None}, {"target": target})
        if problem:
            raise InputError(problem)
        first, second = roles_of(target)
        default_guidance, default_strength = self.defaults(target)
        guidance = default_guidance if guidance is None else guidance
        strength = default_strength if strength is None else strength
        scales = parse_guidance(guidance)
        check_seed(seed)
        eta = checked_sampling(samples, sampler, ddim_eta)
        if not 0.0 < float(strength) <= 1.0:
            raise InputError(f"the guided start's strength (--strength) must be in (0, 1] (1: from pure noise); got "
                             f"{strength}")
        notes: list[str] = []
        volumes = {name: self._checked(inputs[name], name, notes) for name in (first, second)}
        reference = volumes[first]
        moved, covered, placed = onto_reference_slices(volumes[second].array[None].astype(np.float32),
                                                       volumes[second], reference, reference_name=f"the {NAMES[first]}",
                                                       moving_name=f"the {NAMES[second]}")
        notes += placed
        images = {first: reference.array.astype(np.float32), second: moved[0]}
        chosen = parse_slices(slices, reference.spatial_shape[0], f"the {NAMES[first]}")
        report(progress, 0.0, "finding the heart")
        kind = "bssfp" if "bssfp" in images else "lge"
        centres = self._heart_centres(reference.with_array(images[kind]), kind, chosen)
        usable = [z for z in sorted(centres) if covered[z].any()]
        if chosen is not None:
            refused = [z + 1 for z in chosen if z not in usable]
            if refused:
                raise InputError(f"slice(s) {', '.join(map(str, refused))} (counted from 1) show no heart or no "
                                 f"{NAMES[second]}: choose among {', '.join(str(z + 1) for z in usable) or 'none'}")
        work = usable if chosen is None else chosen
        without = [z + 1 for z in range(reference.spatial_shape[0]) if z not in usable]
        if not work:
            raise InputError(f"no heart found in {reference.named(f'the {NAMES[first]}')} where the "
                             f"{NAMES[second]} covers it: nothing to synthesise")
        if without and chosen is None:
            notes.append(f"slice(s) {', '.join(map(str, without))} (counted from 1) left out: no heart found, or no "
                         f"{NAMES[second]} there")
        start, pairs = None, None
        if self.model is not None:
            steps = self.model.schedule.num_train_timesteps
            start = steps - 1 if strength >= 1.0 else round(float(strength) * (steps - 1))
            pairs = timestep_pairs(sampler, start, steps, ddim_steps)
        spacing_yx = (reference.spacing[1], reference.spacing[0])
        shape_yx = reference.spatial_shape[1:]
        out = np.zeros(reference.spatial_shape, np.float32)
        sd = np.zeros(reference.spatial_shape, np.float32)
        crops: dict[int, dict[str, Any]] = {}
        keys = reference.slice_keys()

        def synthesise(number: int, generator: torch.Generator, slice_progress: Progress) -> None:
            z = work[number]
            crop = LVCrop(centres[z], spacing_yx, int(self.config["crop_size"]), float(self.config["pixel_mm"]))
            given_crops = {name: crop_in_unit_range(images[name][z], crop) for name in (first, second)}
            mean, spread = self._slice(given_crops, target, scales, strength >= 1.0, samples, generator, pairs,
                                       sampler, eta, slice_progress)
            out[z] = crop.paste((mean + 1.0) / 2.0, shape_yx)
            sd[z] = crop.paste(spread / 2.0, shape_yx)
            crops[z] = crop.record()

        run_slices([keys[z] for z in work], synthesise, seed=seed, device=self.device, progress=progress,
                   start=0.1, end=1.0)
        report(progress, 1.0, f"{NAMES[target]} synthesised")
        sampling, sampling_notes = sampling_record(self.model is not None, samples, seed, sampler, ddim_steps, eta)
        settings = {"method": METHOD, "variant": self.variant, "target": target, "inputs": [first, second],
                    "grid": first, **sampling, "slices": [z + 1 for z in work],
                    "crops": {str(z + 1): crops[z] for z in sorted(crops)},
                    "checkpoint": self.config.get("description", "")}
        if self.model is not None:
            settings.update(guidance={first: scales[0], second: scales[1]}, strength=float(strength),
                            start="noise" if strength >= 1.0 else START_FROM[target], start_step=start)
        notes += sampling_notes
        if notes:
            settings["notes"] = notes
        grid = Volume(out, reference.spacing, reference.origin, reference.direction,
                      {key: reference.metadata[key] for key in ("source_files", "frame_of_reference_uid")
                       if key in reference.metadata})
        return {"image": grid.with_array(out, units="1", description=f"synthetic {NAMES[target]} from "
                                         f"{NAMES[first]} and {NAMES[second]}, normalised intensity",
                                         synthesis=settings),
                "image_sd": grid.with_array(sd, units="1", description="per-voxel SD of the k samples")}

    def defaults(self, target: str) -> tuple[str, float]:
        """The guidance "c1,c2" and strength the checkpoint recommends for `target`: its config's inference.guidance
        and inference.strength by target (chosen on validation subjects, `benchmarks/multiseq.py --guidance-grid`),
        else DEFAULT_GUIDANCE and DEFAULT_STRENGTH."""
        inference = self.config.get("inference", {})
        return (str(inference.get("guidance", {}).get(target, DEFAULT_GUIDANCE)),
                float(inference.get("strength", {}).get(target, DEFAULT_STRENGTH)))

    def _checked(self, volume: Any, name: str, notes: list[str]) -> Volume:
        """An input as a 3D stack: InputError for a non-volume or a 4D T2w / LGE; a 4D bSSFP cine gives its ED frame
        (largest LV blood pool of the cine segmenter's labels)."""
        if not isinstance(volume, Volume):
            raise InputError(f"the {NAMES[name]} input must be an image stack (input '{name}')")
        volume.require_finite(f"the {NAMES[name]}")
        if volume.array.ndim == 4 and name == "bssfp":
            labels = self.segmenter.segment(volume).array
            ed, _ = ed_es_frames(blood_pool_volumes_ml(labels, volume.spacing))
            notes.append(f"the bSSFP is a cine of {volume.array.shape[0]} frames: its ED frame {ed} (from 0, largest "
                         "LV blood pool) used")
            return Volume(volume.array[ed], volume.spacing, volume.origin, volume.direction,
                          {key: value for key, value in volume.metadata.items() if key != "trigger_times_ms"})
        if volume.array.ndim != 3:
            raise InputError(f"{volume.named(f'the {NAMES[name]}')} has shape {volume.array.shape}: a {NAMES[name]} "
                             "input is one 3D stack (z, y, x)" + (" (is it a cine?)" if volume.array.ndim == 4 else ""))
        return volume

    @property
    def segmenter(self) -> CineSegmenter:
        """The cine segmenter (finds the LV in the bSSFP), loaded on first use."""
        if self._segmenter is None:
            self._segmenter = CineSegmenter.load(self.segmenter_checkpoint or shipped_checkpoint(SHIPPED_SEGMENTER),
                                                 self.device)
        return self._segmenter

    def _heart_centres(self, stack: Volume, kind: str, only: list[int] | None = None
                       ) -> dict[int, tuple[float, float]]:
        """The crop centre (row, column) of each slice with a heart: the LV blood pool's centroid (cine segmenter)
        on a bSSFP stack (kind "bssfp"), the heart ROI's centroid (LGE heart segmenter) on an LGE stack ("lge").
        only: the slices to look at (None: all); both segmenters work slice by slice, so a slice's centre does not
        depend on the others."""
        keep = list(range(stack.spatial_shape[0])) if only is None else list(only)
        stack = Volume(stack.array[keep], stack.spacing, stack.origin, stack.direction)
        if kind == "lge":
            from .scar_enhancement import HeartSegmenter

            if self._heart_segmenter is None:
                self._heart_segmenter = HeartSegmenter.load(
                    self.heart_segmenter_checkpoint or shipped_checkpoint(SHIPPED_HEART_SEGMENTER), self.device)
            masks = self._heart_segmenter.segment(stack)
        else:
            masks = self.segmenter.segment(stack).array == LABEL_VALUES["lv_blood"]
        return {keep[index]: tuple(float(v) for v in np.argwhere(mask).mean(axis=0))
                for index, mask in enumerate(masks) if mask.any()}

    @torch.no_grad()
    def _slice(self, crops: dict[str, np.ndarray], target: str, scales: tuple[float, float], from_noise: bool,
               samples: int, generator: torch.Generator, pairs: list[tuple[int, int]] | None, sampler: str,
               eta: float, progress: Progress) -> tuple[np.ndarray, np.ndarray]:
        """Mean and SD (in [-1, 1] units) of k decoded samples of one slice's target crop."""
        first, second = roles_of(target)
        tensors = {name: torch.from_numpy(crops[name][None]).to(self.device) for name in (first, second)}
        if self.model is None:  # pix2pix: deterministic, k is 1 in effect
            size = int(self.config["crop_size"])
            direction = torch.from_numpy(one_hot_target(target, size)[None]).to(self.device)
            output = torch.tanh(self.network(torch.cat([tensors[first], tensors[second], direction], dim=1)))[0, 0]
            return output.cpu().numpy(), np.zeros(tuple(output.shape), np.float32)
        latents = {name: self.codec.encode(tensor) for name, tensor in tensors.items()}
        conditions = {"first": latents[first], "second": latents[second],
                      "roles": roles_tensor([target], self.device)}
        structure = None if from_noise else latents[START_FROM[target]]  # always one of the given sequences
        result = sample(self.model, pairs, image=structure, shape=None if structure is not None else
                        tuple(latents[first].shape), start="noise" if from_noise else "image", conditions=conditions,
                        guidance={"first": scales[0], "second": scales[1]}, sampler=sampler, eta=eta, samples=samples,
                        generator=[generator], progress=progress, decode=self.codec.decode)
        return result.mean[0, 0].clamp(-1.0, 1.0).cpu().numpy(), result.sd[0, 0].cpu().numpy()


def _summary(inputs: dict[str, Any], outputs: dict[str, Volume]) -> dict[str, Any]:
    """The command's facts: the target, inputs, settings, slices and notes."""
    return dict(outputs["image"].metadata["synthesis"])


def evaluation_cases(split: str, subjects: int, method: Any) -> list[EvaluationCase]:
    """One case per direction and slice with LV blood pool and wall of each phantom subject of `split`: inputs the
    subject's two whole stacks that are not the target (`run` synthesises the case's slice only, seeded by its
    position as in any stack); reference the true target slice; context the target and the true wall (myocardium,
    scar and oedema), scar and remote myocardium (wall without scar and oedema) of the slice. Only slices where the
    method finds the heart in the bSSFP and in the LGE (`MultiSequence._heart_centres`) are cases, so every model and
    direction is scored on the same slices."""
    from .. import phantom

    cases = []
    for subject_id in phantom.subject_ids(split, subjects):
        study = phantom.multi_sequence_study(subject_id)
        masks = study["masks"]
        wall = masks["myocardium"] | masks["scar"]
        found = set(method._heart_centres(study["bssfp"], "bssfp")) & set(method._heart_centres(study["lge"], "lge"))
        for z in sorted(found):
            if not (wall[z].any() and masks["blood"][z].any()):
                continue
            context = {"wall": wall[z], "scar": masks["scar"][z],
                       "remote": masks["myocardium"][z] & ~masks["oedema"][z]}
            facts = {"scar_pixels": float(masks["scar"][z].sum()), "oedema_pixels": float(masks["oedema"][z].sum())}
            for target in CONTRASTS:
                cases.append(EvaluationCase(
                    subject=subject_id, family=split, inputs={name: study[name] for name in roles_of(target)},
                    reference=study[target].array[z], slice=z, context={**context, "target": target}, facts=facts))
    return cases


def _predict(method: MultiSequence, case: EvaluationCase, options: dict[str, Any], progress: Progress | None
             ) -> Volume:
    """The case's direction and slice only."""
    return method.run(case.inputs, progress=progress, **{**options, "target": case.context["target"],
                                                          "slices": str(case.slice + 1)})["image"]


def image_metrics(output: Volume, reference: np.ndarray, case: EvaluationCase) -> dict[str, float | None]:
    """Per direction (metric names end in the target), on the first input's grid over the box of the method's crop,
    the synthesis as the user gets it (pasted once from the crop) against the true slice scaled to [0, 1] by the
    PERCENTILES of that crop (as in training; not resampled): PSNR and SSIM (data range 1) over the box, and over
    the box of the true wall within it (at least 16 x 16 pixels: the myocardium region); for LGE targets the
    synthesis's CNR(scar, remote myocardium) (None without scar in the box)."""
    found = output.metadata["synthesis"]["crops"][str(case.slice + 1)]
    crop = LVCrop.from_record(found, (output.spacing[1], output.spacing[0]))
    box = crop_box(crop, reference.shape)
    made = output.array[case.slice].astype(np.float64)[box]
    truth = scaled_by_crop(reference, crop, PERCENTILES)[box]
    target = case.context["target"]
    wall = roi_bounding_box(case.context["wall"][box])
    metrics: dict[str, float | None] = {
        f"psnr_{target}": psnr(truth, made, 1.0), f"ssim_{target}": ssim(truth, made, 1.0),
        f"myo_psnr_{target}": psnr(truth[wall], made[wall], 1.0), f"myo_ssim_{target}": ssim(truth[wall], made[wall],
                                                                                            1.0)}
    if target == "lge":
        scar, remote = case.context["scar"][box], case.context["remote"][box]
        usable = scar.any() and remote.sum() > 1 and np.ptp(made[remote]) > 0
        metrics["cnr_scar_myo"] = cnr(made, scar, remote) if usable else None
    return metrics


def _reference_metrics(reference: np.ndarray, case: EvaluationCase) -> dict[str, float | None]:
    """The true LGE's own CNR(scar, remote myocardium), for scale (LGE cases with scar only)."""
    if case.context["target"] != "lge" or not case.context["scar"].any():
        return {}
    return {"cnr_scar_myo": cnr(np.asarray(reference, dtype=np.float64), case.context["scar"], case.context["remote"])}


def _pure_noise_start(context: Any) -> Any:
    """The method itself started from pure noise (strength 1) instead of the guided start."""
    options = {**context.options, "strength": 1.0}
    return lambda case, progress: _predict(context.method, case, options, progress)


DIRECTION_METRICS = (("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 3), ("myo_psnr", "myo PSNR (dB)", 2),
                     ("myo_ssim", "myo SSIM", 3))

EVALUATION = Evaluation(
    cases=evaluation_cases, metrics=(image_metrics,), predict=_predict,
    columns=tuple(Column(f"{kind}_{target}", f"{NAMES[target]} {label}", digits=digits) for target in CONTRASTS
                  for kind, label, digits in DIRECTION_METRICS) + (Column("cnr_scar_myo", "LGE CNR(scar, myo)"),),
    higher_is_better=tuple(f"{kind}_{target}" for target in CONTRASTS for kind, _, _ in DIRECTION_METRICS)
    + ("cnr_scar_myo",),
    baselines=(checkpoint_baseline("pix2pix", "pix2pix (baseline)", "multi_sequence_pix2pix",
                                   "U-Net + PatchGAN from the two given crops, same data and budget"),
               checkpoint_baseline("no_heatmap", "CMRDiff w/o heat-map loss (ablation)", "multi_sequence_no_heatmap",
                                   "the plain epsilon loss, same data and budget"),
               Baseline("pure_noise", "CMRDiff from pure noise (ablation)", _pure_noise_start,
                        "the same model without the guided start (strength 1)")),
    method_label="CMRDiff (this run)",
    reference_row=ReferenceRow("true_lge", "Reference: the true LGE", _reference_metrics),
    subjects=3,
    title="Multi-sequence synthesis on held-out phantom slices (each direction against the true sequence)",
)


SPEC = MethodSpec(
    name=METHOD, command="multiseq", title="Synthesise a missing sequence",
    help="a missing sequence synthesised from the two others: any two of bSSFP, T2w and LGE to the third (CMRDiff)",
    paper="CMRDiff: Multi-sequence CMR synthesis (paper 001)",
    factory=MultiSequence.load,
    inputs=(InputRole("bssfp", "bssfp", "bSSFP stack at end-diastole (or a cine: its ED frame)", required=False),
            InputRole("t2w", "t2w", "T2-weighted stack", required=False),
            InputRole("lge", "lge", "LGE stack", required=False)),
    outputs=(OutputRole("image", "image", "the synthesised sequence (normalised intensity 0-1) on the first given "
                        "input's grid (bSSFP, T2w, LGE order)", grid=CONTRASTS),
             OutputRole("image_sd", "sd", "per-voxel SD of the k samples", grid=CONTRASTS)),
    checkpoints=(CheckpointRole("checkpoint", "multi-sequence checkpoint folder", SHIPPED_CHECKPOINT),
                 CheckpointRole("autoencoder", "autoencoder checkpoint folder (the one the model was trained on)",
                                SHIPPED_AUTOENCODER),
                 CheckpointRole("segmenter", "cine segmenter checkpoint folder (finds the LV in the bSSFP)",
                                SHIPPED_SEGMENTER),
                 CheckpointRole("heart_segmenter", "LGE heart segmenter checkpoint folder (finds the heart when the "
                                "bSSFP is the target)", SHIPPED_HEART_SEGMENTER)),
    options=(Option("target", str, "lge", "the sequence to synthesise from the two others", choices=CONTRASTS,
                    per_study=True),
             Option("guidance", str, None, "classifier-free guidance scales c1,c2 of the two given sequences in "
                    "bSSFP, T2w, LGE order (0 removes that sequence's influence; default: the checkpoint's for the "
                    f"target, else {DEFAULT_GUIDANCE})"),
             Option("strength", float, None, "guided start: how far the structural input's latent is noised, as a "
                    "fraction of the chain (1: start from pure noise; default: the checkpoint's for the target, else "
                    f"{DEFAULT_STRENGTH:g})"),
             Option("slices", str, None, "slices to synthesise, counted from 1 (e.g. 3-5,7; default: every slice with "
                    "a heart)", per_study=True)),
    sampling=Sampling(steps=None, samples=3, sampler="ddim", ddim_steps=50, ddim_eta=1.0),
    summarise=_summary, recipes=("multi_sequence_autoencoder", "multi_sequence", "multi_sequence_pix2pix"),
    evaluation=EVALUATION, input_rule=input_problem,
)
