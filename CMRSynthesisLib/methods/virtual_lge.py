"""Virtual LGE: an LGE-like image without contrast agent from a cine and native MOLLI images (CPKDM, paper 000,
"Cardiac Physiology Knowledge-driven Diffusion Model for Contrast-free Synthesis Myocardial Infarction
Enhancement").

Per short-axis slice of the cine with an LV at ED and a MOLLI slice at its position (`slice_matching`), on a square
LV crop (`crop_size` pixels of `pixel_mm`, centred on the LV blood pool the cine segmenter finds at ED):
- the kinematic inputs (CM-KMI): the cine phases over one heartbeat from ED with the radial and circumferential
  Green-Lagrange strains and the paper's eq. 2 projected displacements (`analysis.kinematic_maps`);
- the relaxation inputs (MR-ESMP): each MOLLI pixel's fitted, polarity-restored recovery curve on 8 common inversion
  times (`analysis.relaxation`), whatever the scheme that acquired it, brought onto the cine slice;
- KMDI: a latent DDPM on the LGE autoencoder's latents (`cpkdm_networks`), sampled from pure noise (DDIM by default),
  k samples per slice as one batch, each decoded; the result is their mean and per-pixel SD.
The virtual LGE lies on the cine's grid at ED, in normalised LGE intensity [0, 1] (the crop's 0.5th / 99.5th LGE
percentiles at 0 / 1, as the model was trained); pixels outside the crops hold 0. The virtual scar is the
segmenter's ED myocardium where the virtual LGE exceeds `scar_threshold` (chosen 0.5: half the crop's intensity
range, the full-width-at-half-maximum idea with the crop's brightest tissue as maximum, so a slice without bright
myocardium has none). Its extent per AHA segment is graded as readers grade LGE transmurality
(`analysis.transmurality`). The radial and circumferential strain at ES are returned too, to show beside it.

Other variants share this module and checkpoint format (config "variant", see `cpkdm_networks.VARIANTS`) so the
evaluation compares them on equal terms: the ablations without kinematics or without relaxation, the pure
data-driven latent diffusion, and pix2pix (a U-Net from the raw cine phases and curves straight to the LGE crop).
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..analysis.cardiac_phases import blood_pool_volumes_ml, ed_es_frames
from ..analysis.kinematic_maps import KINEMATIC_CHANNELS, kinematic_channels
from ..analysis.relaxation import recovery_curves
from ..checkpoints import shipped_checkpoint
from ..device import check_seed, resolve_device
from ..diffusion.conditioning import Condition
from ..diffusion.latent import LatentCodec, load_synthesis_model
from ..diffusion.model import DiffusionModel
from ..diffusion.networks import build_network
from ..diffusion.samplers import checked_sampling, sample, sampling_record, timestep_pairs
from ..errors import CheckpointError, InputError
from ..evaluation import checkpoint_baseline
from ..io.t1_series import T1Series
from ..metrics import crop_box, lpips_unavailable, scaled_by_crop
from ..preprocess import LVCrop, percentile_normalise
from ..progress import Progress, report
from ..slice_matching import match_slices, onto_reference_slices
from ..slice_runner import parse_slices, run_slices
from ..volume import Volume
from .cine_segmentation import LABEL_VALUES, CineSegmenter
from .cpkdm_networks import VARIANTS, CPKDMNetwork, build_cpkdm, condition_values, conditions_of
from .registry import (
    CheckpointRole,
    Column,
    Evaluation,
    EvaluationCase,
    InputRole,
    MethodSpec,
    Option,
    OutputRole,
    Sampling,
)
from .virtual_lge_inputs import slice_inputs

METHOD = "virtual_lge"
SHIPPED_CHECKPOINT = "virtual_lge"
SHIPPED_AUTOENCODER = "virtual_lge_autoencoder"
SHIPPED_SEGMENTER = "cine_segmenter"
LGE_PERCENTILES = (0.5, 99.5)
SCAR_THRESHOLD = 0.5  # chosen: module docstring
MIN_CINE_FRAMES = 6  # chosen: fewer frames cannot follow contraction and relaxation through the cycle
MIN_FITTED_MYOCARDIUM = 0.5  # the MOLLI fit must succeed in at least half the myocardium it covers


def lge_on_crop(image: np.ndarray, crop: LVCrop) -> np.ndarray:
    """One LGE slice (y, x) on `crop`, scaled to [-1, 1] by its LGE_PERCENTILES: (1, S, S) float32."""
    return (percentile_normalise(crop.extract(np.asarray(image, dtype=np.float32)), *LGE_PERCENTILES)[None] * 2.0
            - 1.0).astype(np.float32)


def lv_crop(blood: np.ndarray, spacing_yx: tuple[float, float], config: dict[str, Any]) -> LVCrop:
    """The LV crop of a slice (config crop_size, pixel_mm) centred on its LV blood pool (y, x) bool at ED."""
    rows, cols = np.nonzero(blood)
    return LVCrop((rows.mean(), cols.mean()), spacing_yx, int(config["crop_size"]), float(config["pixel_mm"]))


def build_model(config: dict[str, Any]) -> torch.nn.Module:
    """The network of a diffusion or pix2pix checkpoint config by its "variant": `cpkdm_networks.build_cpkdm` for
    the diffusion variants, config["generator"] for "pix2pix". CheckpointError for an unknown variant."""
    variant = config.get("variant")
    if variant == "pix2pix":
        return build_network(config["generator"])
    if variant not in VARIANTS:
        raise CheckpointError(f"unknown virtual-LGE variant {variant!r}; known: {(*VARIANTS, 'pix2pix')}")
    return build_cpkdm(config)


class VirtualLGE:
    """Virtual LGE from a cine and native MOLLI images with a trained CPKDM (or comparison) checkpoint, its LGE
    autoencoder and the cine segmenter.

    config keys: variant, frames (cine phases), crop_size (pixels), pixel_mm, factor (image / latent size),
    latent_channels, schedule (diffusion variants), the network configs (`build_model`).
    """

    name = METHOD
    REQUIRED_CONFIG = ("variant", "frames", "crop_size", "pixel_mm")

    def __init__(self, network: torch.nn.Module, config: dict[str, Any], codec: LatentCodec | None,
                 segmenter: CineSegmenter, device: torch.device) -> None:
        missing = [key for key in self.REQUIRED_CONFIG if key not in config]
        if missing:
            raise CheckpointError(f"the virtual-LGE checkpoint config lacks {', '.join(missing)}")
        self.config, self.segmenter, self.device, self.codec = config, segmenter, device, codec
        self.variant = config["variant"]
        self._segmented: tuple[str, np.ndarray] | None = None
        self.network = network.to(device).eval()
        self.model = None if self.variant == "pix2pix" else DiffusionModel.from_config(
            self.network, {**config["schedule"], "clip_sample": False},
            tuple(Condition(name, "concat") for name in conditions_of(self.variant)))

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, device: str | torch.device = "auto",
             autoencoder: str | Path | None = None, segmenter: str | Path | None = None) -> VirtualLGE:
        """Load a checkpoint folder (None: the shipped demo model), the LGE autoencoder it was trained on (None:
        shipped) and the cine segmenter (None: shipped), hash-checked, on `device`. CheckpointError for a missing,
        tampered or foreign checkpoint, or an autoencoder other than the one the diffusion model was trained on."""
        resolved = resolve_device(device)
        network, config, codec = load_synthesis_model(
            Path(checkpoint) if checkpoint else shipped_checkpoint(SHIPPED_CHECKPOINT),
            Path(autoencoder) if autoencoder else None, SHIPPED_AUTOENCODER, METHOD, "virtual-LGE", resolved,
            build_model)
        return cls(network, config, codec, CineSegmenter.load(segmenter or shipped_checkpoint(SHIPPED_SEGMENTER),
                                                              resolved), resolved)

    def run(self, inputs: dict[str, Any], *, samples: int = 3, seed: int = 0, sampler: str = "ddim",
            ddim_steps: int = 50, ddim_eta: float = 1.0, ed: int | None = None, es: int | None = None,
            slices: str | None = None, scar_threshold: float = SCAR_THRESHOLD, progress: Progress | None = None
            ) -> dict[str, Volume]:
        """Synthesise the virtual LGE of a cine (t, z, y, x) and a MOLLI series (T1Series) at the cine's ED frame.

        ed / es: frame indices (None: the largest and smallest LV blood pool of the segmenter's labels over the
        stack); slices: cine slices counted from 1 ("3-5,7"; None: every slice with an LV at ED and a MOLLI slice at
        its position); scar_threshold: in [0, 1] on the output's scale; samples k, seed, sampler ("ddim": `ddim_steps`
        steps with noise level `ddim_eta`; "ddpm": every step). Returns "lge" (float32 in [0, 1] on the cine's
        spatial grid, 0 outside the crops), "lge_sd" (SD of the k samples), "scar" (uint8 mask: virtual scar in the
        ED myocardium), "radial_strain" and "circumferential_strain" (Green-Lagrange, fraction, at ES, in the ED
        myocardium). Settings, the MOLLI scheme read, the slices synthesised and their crops (by slice number counted from 1,
        as `slices` takes them) are in lge.metadata["synthesis"].

        InputError for a missing or malformed input, fewer than MIN_CINE_FRAMES frames, ED = ES, a frame or slice out
        of range, no LV, or a MOLLI fit that fails in most of the myocardium; GeometryError when the cine and the
        MOLLI come from different frames of reference, planes or positions; Cancelled when `progress` returns False.
        """
        cine, molli = inputs.get("cine"), inputs.get("molli")
        if not isinstance(cine, Volume):
            raise InputError("virtual LGE needs a cine (input 'cine')")
        if not isinstance(molli, T1Series):
            raise InputError("virtual LGE needs the native MOLLI source images with their inversion times (input "
                             "'molli'), read as `t1map` reads them")
        if cine.array.ndim != 4 or cine.array.shape[0] < MIN_CINE_FRAMES:
            frames = cine.array.shape[0] if cine.array.ndim == 4 else 1
            raise InputError(f"{cine.named('the cine')} of shape {cine.array.shape} holds {frames} frame(s); virtual "
                             f"LGE reads the wall's motion through the heartbeat from a cine (t, z, y, x) of at least "
                             f"{MIN_CINE_FRAMES} frames")
        cine.require_finite("the cine")
        check_seed(seed)
        eta = checked_sampling(samples, sampler, ddim_eta)
        if not 0.0 < float(scar_threshold) < 1.0:
            raise InputError(f"the scar threshold (--scar-threshold) must lie between 0 and 1; got {scar_threshold}")
        count = cine.array.shape[0]
        for name, frame in (("ED", ed), ("ES", es)):
            if frame is not None and not 0 <= frame < count:
                raise InputError(f"the {name} frame {frame} is out of range: the cine has {count} frames (0-{count - 1})")
        chosen = parse_slices(slices, cine.spatial_shape[0], "the cine")
        matches, notes = match_slices(cine, molli.images, reference_name="the cine", moving_name="the MOLLI images")
        pairs = None if self.model is None else timestep_pairs(
            sampler, self.model.schedule.num_train_timesteps - 1, self.model.schedule.num_train_timesteps, ddim_steps)

        report(progress, 0.0, "segmenting the cine")
        labels = self._segment(cine)
        ed_auto, es_auto = ed_es_frames(blood_pool_volumes_ml(labels, cine.spacing))
        ed = ed_auto if ed is None else ed
        es = es_auto if es is None else es
        if ed == es:
            raise InputError(f"ED and ES are the same frame ({ed}): give two different frames (--ed, --es)")
        blood = labels[ed] == LABEL_VALUES["lv_blood"]
        myocardium = labels[ed] == LABEL_VALUES["lv_myocardium"]
        with_lv = {z for z in range(cine.spatial_shape[0]) if blood[z].any() and myocardium[z].any()}
        matched = {match.reference: match.moving for match in matches}
        if chosen is not None:
            refused = [z + 1 for z in chosen if z not in with_lv or z not in matched]
            if refused:
                raise InputError(f"cine slice(s) {', '.join(map(str, refused))} (counted from 1) have no LV at ED "
                                 f"(frame {ed}) or no MOLLI slice at their position: choose among "
                                 f"{', '.join(str(z + 1) for z in sorted(with_lv & set(matched))) or 'none'}")
        work = sorted((set(chosen) if chosen is not None else with_lv) & set(matched))
        if not work:
            raise InputError(f"no slice of {cine.named('the cine')} has both an LV at ED (frame {ed}) and a MOLLI "
                             "slice at its position: nothing to synthesise")

        report(progress, 0.05, "fitting the MOLLI recovery curves")
        fit_mask = np.zeros(molli.images.spatial_shape, np.uint8)
        fit_mask[sorted({matched[z] for z in work})] = 1
        relaxation = recovery_curves(molli, molli.reference().with_array(fit_mask))
        stacked = np.concatenate([relaxation.curves.array, relaxation.fitted[None].astype(np.float32)])
        on_cine, covered, placed = onto_reference_slices(stacked, relaxation.curves, cine, reference_name="the cine",
                                                         moving_name="the MOLLI images")
        notes += [note for note in placed if note not in notes]
        curves, covered = on_cine[:-1], covered & (on_cine[-1] >= 0.999)
        self._check_fit(myocardium, covered, work)

        spacing_yx = (cine.spacing[1], cine.spacing[0])
        shape_yx = cine.spatial_shape[1:]
        lge = np.zeros(cine.spatial_shape, np.float32)
        sd = np.zeros(cine.spatial_shape, np.float32)
        strain = {name: np.zeros(cine.spatial_shape, np.float32) for name in KINEMATIC_CHANNELS[:2]}
        crops: dict[int, dict[str, Any]] = {}
        keys = cine.slice_keys()

        def synthesise(number: int, generator: torch.Generator, slice_progress: Progress) -> None:
            z = work[number]
            report(slice_progress, 0.0, "tracking the wall")
            kinematics = kinematic_channels(cine.array[:, z], myocardium[z], blood[z], spacing_yx, ed)
            for channel, name in enumerate(strain):
                strain[name][z] = kinematics[es, channel]
            crop = lv_crop(blood[z], spacing_yx, self.config)
            values = slice_inputs(cine.array[:, z], myocardium[z], blood[z], curves[:, z], covered[z], spacing_yx,
                                  crop, ed, int(self.config["frames"]), kinematics=kinematics)
            mean, spread = self._slice(values, samples, generator, pairs, sampler, eta, slice_progress)
            lge[z] = crop.paste((mean + 1.0) / 2.0, shape_yx)
            sd[z] = crop.paste(spread / 2.0, shape_yx)
            crops[z] = crop.record()

        run_slices([keys[z] for z in work], synthesise, seed=seed, device=self.device, progress=progress,
                   start=0.15, end=1.0)
        report(progress, 1.0, "virtual LGE synthesised")
        scar = ((lge > scar_threshold) & myocardium).astype(np.uint8)
        reference = Volume(lge, cine.spacing, cine.origin, cine.direction,
                           {key: cine.metadata[key] for key in ("source_files", "frame_of_reference_uid")
                            if key in cine.metadata})
        sampling, sampling_notes = sampling_record(self.model is not None, samples, seed, sampler, ddim_steps, eta)
        settings = {"method": METHOD, "variant": self.variant, "ed_frame": int(ed), "es_frame": int(es),
                    **sampling, "slices": [z + 1 for z in work],
                    "scar_threshold": float(scar_threshold), "molli_scheme": relaxation.scheme,
                    "crops": {str(z + 1): crops[z] for z in sorted(crops)},
                    "transmurality": self._transmurality(cine, labels[ed], scar, work),
                    "checkpoint": self.config.get("description", "")}
        notes += sampling_notes
        if notes:
            settings["notes"] = notes
        return {"lge": reference.with_array(lge, units="1", description="virtual LGE (synthetic, no contrast agent), "
                                            "normalised intensity", synthesis=settings),
                "lge_sd": reference.with_array(sd, units="1", description="per-voxel SD of the k samples"),
                "scar": reference.with_array(scar, units="label", description="virtual scar: ED myocardium where the "
                                             f"virtual LGE exceeds {scar_threshold:g}"),
                "radial_strain": reference.with_array(strain["radial_strain"], units="1", quantity="radial_strain",
                                                      description=f"radial Green-Lagrange strain at ES (frame {es})"),
                "circumferential_strain": reference.with_array(
                    strain["circumferential_strain"], units="1", quantity="circumferential_strain",
                    description=f"circumferential Green-Lagrange strain at ES (frame {es})")}

    def _segment(self, cine: Volume) -> np.ndarray:
        """The segmenter's labels (t, z, y, x) of `cine`, remembered for the last cine segmented (the same voxels on
        the same grid: one slice after another of a stack, as the evaluation and a user choosing slices run it)."""
        key = hashlib.sha256(np.ascontiguousarray(cine.array).tobytes()).hexdigest() + repr(
            (cine.spacing, cine.origin, cine.direction))
        if self._segmented is None or self._segmented[0] != key:
            self._segmented = (key, self.segmenter.segment(cine).array)
        return self._segmented[1]

    @staticmethod
    def _transmurality(cine: Volume, labels_ed: np.ndarray, scar: np.ndarray, work: list[int]) -> dict[str, Any]:
        """The virtual scar's extent per AHA segment (`analysis.transmurality`): segments placed on the segmenter's
        whole ED myocardium (levels from the whole stack, anchored at its RV), the extent over the synthesised slices
        (segments without one are missing): {"segments": rows} or {"unavailable": why} (e.g. no RV to find the
        septum)."""
        from ..analysis.aha import aha_segments
        from ..analysis.transmurality import segment_scar_extent

        only = np.zeros(labels_ed.shape, bool)
        only[work] = True
        grid = Volume(np.zeros(labels_ed.shape, np.uint8), cine.spacing, cine.origin, cine.direction)
        try:
            segments = aha_segments(grid.with_array((labels_ed == LABEL_VALUES["lv_myocardium"]).astype(np.uint8)),
                                    blood_pool=labels_ed == LABEL_VALUES["lv_blood"],
                                    rv=labels_ed == LABEL_VALUES["rv_blood"], allow_missing=True)
            return {"segments": segment_scar_extent(segments, scar.astype(bool), within=only)}
        except InputError as error:
            return {"unavailable": str(error)}

    @staticmethod
    def _check_fit(myocardium: np.ndarray, covered: np.ndarray, work: list[int]) -> None:
        """InputError when the MOLLI curves cover less than MIN_FITTED_MYOCARDIUM of the ED myocardium of the
        slices to synthesise (a fit failing in most of the heart: wrong inversion times, or not a MOLLI)."""
        total = sum(int(myocardium[z].sum()) for z in work)
        fitted = sum(int((myocardium[z] & covered[z]).sum()) for z in work)
        if fitted < MIN_FITTED_MYOCARDIUM * total:
            raise InputError(f"the MOLLI recovery curves cover {100.0 * fitted / max(total, 1):.0f}% of the myocardium "
                             f"(at least {100 * MIN_FITTED_MYOCARDIUM:.0f}% needed): the T1 fit failed in most of the "
                             "heart, or the MOLLI images do not reach it. Check the inversion times (--ti) and that the "
                             "series is a native MOLLI / ShMOLLI at the cine's slice positions")

    @torch.no_grad()
    def _slice(self, values: dict[str, np.ndarray], samples: int, generator: torch.Generator,
               pairs: list[tuple[int, int]] | None, sampler: str, eta: float, progress: Progress
               ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and SD (in [-1, 1] units) of k decoded samples of one slice's crop."""
        tensors = {name: torch.from_numpy(values[name][None]).to(self.device) for name in ("cine", "kinematics",
                                                                                           "curves")}
        if self.model is None:  # pix2pix: deterministic, k is 1 in effect
            output = torch.tanh(self.network(torch.cat([tensors["cine"], tensors["curves"]], dim=1)))[0, 0]
            return output.cpu().numpy(), np.zeros(tuple(output.shape), np.float32)
        factor = int(self.config["factor"])
        conditions = condition_values(self.variant, tensors["cine"], tensors["kinematics"], tensors["curves"], factor)
        size = int(self.config["crop_size"]) // factor
        chain = self.network.one_chain() if isinstance(self.network, CPKDMNetwork) else contextlib.nullcontext()
        with chain:
            result = sample(self.model, pairs, shape=(1, int(self.config["latent_channels"]), size, size),
                            start="noise", conditions=conditions, sampler=sampler, eta=eta, samples=samples,
                            generator=[generator], progress=progress, decode=self.codec.decode)
        return result.mean[0, 0].clamp(-1.0, 1.0).cpu().numpy(), result.sd[0, 0].cpu().numpy()


def _summary(inputs: dict[str, Any], outputs: dict[str, Volume]) -> dict[str, Any]:
    """The command's facts: the sampling settings, ED / ES, the MOLLI scheme read, the virtual scar's volume and its
    transmurality grade per AHA segment."""
    settings = dict(outputs["lge"].metadata["synthesis"])
    transmurality = settings.pop("transmurality")
    scar = outputs["scar"]
    rows = ([{"segment": row["segment"], "name": row["name"], "extent_percent": row["mean"], "grade": row["grade"],
              "grade_label": row["grade_label"]} for row in transmurality["segments"]]
            if "segments" in transmurality else transmurality)
    return {**settings, "virtual_scar_ml": float(scar.array.sum() * np.prod(scar.spacing) / 1000.0),
            "transmurality_by_segment": rows}


def _transmurality_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The transmurality table the Slicer task shows: segment, name, extent (%) and grade; empty when the AHA
    segments could not be placed."""
    rows = summary.get("transmurality_by_segment")
    return [{"segment": row["segment"], "name": row["name"],
             "scar extent (%)": None if row["extent_percent"] is None else round(row["extent_percent"], 1),
             "transmurality": row["grade_label"] or "n/a"} for row in rows] if isinstance(rows, list) else []


def _figures(summary: dict[str, Any]) -> dict[str, bytes]:
    """The transmurality bullseye of the virtual scar, when the AHA segments could be placed."""
    from ..analysis.transmurality import transmurality_bullseye_png

    rows = summary.get("transmurality_by_segment")
    if not isinstance(rows, list):
        return {}
    return {"transmurality bullseye": transmurality_bullseye_png(rows, "Virtual scar transmurality per AHA segment "
                                                                       "(%, synthetic)")}


def evaluation_cases(split: str, subjects: int, method: Any) -> list[EvaluationCase]:
    """One case per slice with LV myocardium at ED of each phantom subject of `split`: inputs the subject's whole
    cine (drawn without infarct contrast: the infarct shows only in its motion and native T1) and native MOLLI
    (`run` synthesises the case's slice only, seeded by its position as in any stack); reference the true LGE of the
    slice; context the true ED myocardium (scar included) and scar of the slice and the crop of its true LV ("crop",
    the LV crop of the true ED blood pool, as training crops the LGE). Fact "threshold_rule_dice" (slices
    with scar only): the Dice of the true LGE under the method's scar rule (the default SCAR_THRESHOLD inside the true
    myocardium, on the crop of the true LV): the ceiling of that rule, what a perfect synthesis would score."""
    from .. import phantom

    cases = []
    for subject_id in phantom.subject_ids(split, subjects):
        study = phantom.lge_study(subject_id)
        cine, _ = phantom.render_cine(study["subject"], infarct_contrast=False)
        molli = phantom.render_molli(study["subject"], study["labels"])
        masks = study["masks"]
        for z in range(cine.spatial_shape[0]):
            myocardium = masks["myocardium"][z] | masks["scar"][z]
            if not (myocardium.any() and masks["blood"][z].any()):
                continue
            crop = lv_crop(masks["blood"][z], (cine.spacing[1], cine.spacing[0]), method.config)
            box = crop_box(crop, myocardium.shape)
            truth = scaled_by_crop(study["lge"].array[z], crop)
            ceiling = scar_dice(truth[box] > SCAR_THRESHOLD, myocardium[box], masks["scar"][z][box])
            cases.append(EvaluationCase(subject=subject_id, family=split, inputs={"cine": cine, "molli": molli},
                                        reference=study["lge"].array[z], slice=z,
                                        context={"myocardium": myocardium, "scar": masks["scar"][z], "crop": crop},
                                        facts={"scar_pixels": float(masks["scar"][z].sum()),
                                               **({} if ceiling is None else {"threshold_rule_dice": ceiling})}))
    return cases


def _predict(method: VirtualLGE, case: EvaluationCase, options: dict[str, Any], progress: Progress | None) -> Volume:
    """The case's slice only (`run` with slices = that slice)."""
    return method.run(case.inputs, progress=progress, **{**options, "slices": str(case.slice + 1)})["lge"]


REGION_MARGIN_MM = 5.0  # chosen: the infarct region is the scar's bounding box grown by this much


def _grid_pair(output: Volume, reference: np.ndarray, case: EvaluationCase) -> tuple[np.ndarray, np.ndarray,
                                                                                      tuple[slice, slice]]:
    """(virtual, true) LGE of the case's slice on the cine's grid, and the box of the crop the method used there
    (the pixels wholly inside it): the virtual LGE as the user gets it (pasted once from the crop), the true LGE
    scaled to [0, 1] by the LGE_PERCENTILES of that crop, as in training, and not resampled."""
    found = output.metadata["synthesis"]["crops"][str(case.slice + 1)]
    crop = LVCrop.from_record(found, (output.spacing[1], output.spacing[0]))
    made = output.array[case.slice].astype(np.float64)
    return made, scaled_by_crop(reference, crop), crop_box(crop, made.shape)


def image_metrics(output: Volume, reference: np.ndarray, case: EvaluationCase) -> dict[str, float | None]:
    """Paper Table 1 over the crop's box on the cine's grid (`_grid_pair`): SSIM, PSNR (data range 1), MSE, LPIPS
    (None where unavailable); region-level SSIM and PSNR on the infarct region (the true scar's bounding box grown by
    REGION_MARGIN_MM, at least 7 x 7 pixels, inside the crop's box; None without scar); and for the virtual scar
    (virtual LGE > the run's threshold inside the true myocardium): on a slice with scar its Dice against the true
    scar ("scar_dice"), on a slice without scar the share of the myocardium it calls scar ("false_scar_pct", %), each
    None on the other kind of slice. A Dice on a slice without scar would be 0 for one false pixel and undefined for
    none, so averaged over all slices it measured mostly the scar-free slices."""
    from ..metrics import lpips_distance, mse, psnr, ssim

    made, truth, box = _grid_pair(output, reference, case)
    pair = truth[box], made[box]
    metrics: dict[str, float | None] = {"ssim": ssim(*pair, 1.0), "psnr": psnr(*pair, 1.0), "mse": mse(*pair),
                                        "lpips": lpips_distance(*pair, 1.0)}
    scar, myocardium = case.context["scar"], case.context["myocardium"]
    metrics["region_ssim"] = metrics["region_psnr"] = None
    if scar[box].any():
        rows, cols = np.nonzero(scar[box])
        grow = [int(np.ceil(REGION_MARGIN_MM / spacing)) for spacing in (output.spacing[1], output.spacing[0])]
        low_r, high_r = _span(rows.min() - grow[0], rows.max() + grow[0] + 1, 7, pair[0].shape[0])
        low_c, high_c = _span(cols.min() - grow[1], cols.max() + grow[1] + 1, 7, pair[0].shape[1])
        region = (slice(low_r, high_r), slice(low_c, high_c))
        metrics["region_ssim"] = ssim(pair[0][region], pair[1][region], 1.0)
        metrics["region_psnr"] = psnr(pair[0][region], pair[1][region], 1.0)
    bright = made[box] > float(output.metadata["synthesis"]["scar_threshold"])
    metrics["scar_dice"] = scar_dice(bright, myocardium[box], scar[box])
    metrics["false_scar_pct"] = None
    if not scar[box].any() and myocardium[box].any():
        metrics["false_scar_pct"] = float(100.0 * (bright & myocardium[box]).sum() / myocardium[box].sum())
    return metrics


def scar_dice(bright: np.ndarray, myocardium: np.ndarray, scar: np.ndarray) -> float | None:
    """Dice of the bright pixels inside the myocardium against the true scar (2D bool arrays); None when the true
    scar is empty (false scar there is measured as a share of the myocardium instead, `image_metrics`)."""
    if not scar.any():
        return None
    virtual = bright & myocardium
    return float(2.0 * (virtual & scar).sum() / (virtual.sum() + scar.sum()))


def _span(low: int, high: int, least: int, size: int) -> tuple[int, int]:
    """[low, high) clipped to [0, size) and widened to at least `least` pixels."""
    low, high = max(0, low), min(size, high)
    while high - low < least and (low > 0 or high < size):
        low, high = max(0, low - 1), min(size, high + 1)
    return low, high



PAPER_TABLES = (  # paper 000, Tables 1 (image level) and 2 (region level): 195 patients, 3 T, 5-fold cross-validation
    ("Paper CPKDM", {"ssim": "0.78", "psnr": "26.97", "lpips": "0.083", "mse": "0.0034", "region_ssim": "0.74",
                     "region_psnr": "24.84"}),
    ("Paper Pix2Pix", {"ssim": "0.63", "psnr": "18.34", "lpips": "0.162", "mse": "0.0236", "region_ssim": "0.60",
                       "region_psnr": "18.59"}),
    ("Paper pure data-driven", {"ssim": "0.68", "psnr": "21.45", "lpips": "0.123", "mse": "0.0069",
                                "region_ssim": "0.66", "region_psnr": "19.42"}),
    ("Paper only CINE (as w/o relaxation)", {"ssim": "0.63", "psnr": "23.24", "lpips": "0.114", "mse": "0.0042"}),
    ("Paper only T1 (as w/o kinematics)", {"ssim": "0.67", "psnr": "20.34", "lpips": "0.117", "mse": "0.0053"}),
)

EVALUATION = Evaluation(
    cases=evaluation_cases, metrics=(image_metrics,), predict=_predict,
    columns=(Column("ssim", "SSIM", digits=3), Column("psnr", "PSNR (dB)"), Column("lpips", "LPIPS", digits=3),
             Column("mse", "MSE", digits=4), Column("region_ssim", "region SSIM", digits=3),
             Column("region_psnr", "region PSNR (dB)"), Column("scar_dice", "scar Dice", digits=3),
             Column("false_scar_pct", "false scar (% myo.)", digits=2)),
    higher_is_better=("ssim", "psnr", "region_ssim", "region_psnr", "scar_dice"),
    lower_is_better=("mse", "lpips", "false_scar_pct"),
    baselines=(checkpoint_baseline("pix2pix", "pix2pix (baseline)", "virtual_lge_pix2pix",
                                   "U-Net + PatchGAN from the raw cine phases and recovery curves, same data and budget"),
               checkpoint_baseline("pure_data_driven", "pure data-driven latent diffusion", "virtual_lge_pure_data_driven",
                                   "the same latent DDPM on the raw cine phases and curves, no encoders"),
               checkpoint_baseline("no_kinematics", "CPKDM w/o kinematics (ablation)", "virtual_lge_no_kinematics",
                                   "without the kinematic branch CM-KMI"),
               checkpoint_baseline("no_relaxation", "CPKDM w/o relaxation (ablation)", "virtual_lge_no_relaxation",
                                   "without the relaxation branch MR-ESMP")),
    method_label="CPKDM (this run)", unavailable_metrics=lpips_unavailable, published=PAPER_TABLES, subjects=4,
    title="Virtual LGE on held-out phantom slices (against the true LGE; the infarct visible to the inputs only by its "
          "motion and native T1)",
)


SPEC = MethodSpec(
    name=METHOD, command="virtual-lge", title="Virtual LGE (cine + MOLLI)",
    help="LGE-like image without contrast agent from a cine and native MOLLI images (CPKDM)",
    paper="Cardiac Physiology Knowledge-driven Diffusion Model for Contrast-free Synthesis Myocardial Infarction "
          "Enhancement (paper 000)",
    factory=VirtualLGE.load,
    inputs=(InputRole("cine", "cine", "cine: 4D NIfTI / NRRD (time last on disk) or a DICOM cine folder"),
            InputRole("molli", "molli", "native MOLLI / ShMOLLI source images (DICOM folder, or 4D NIfTI / NRRD with "
                      "--ti), at the cine's slice positions")),
    outputs=(OutputRole("lge", "image", "virtual LGE (normalised intensity 0-1) at ED on the cine's grid", grid="cine"),
             OutputRole("lge_sd", "sd", "per-voxel SD of the k samples", grid="cine"),
             OutputRole("scar", "mask", "virtual scar: ED myocardium above the scar threshold", grid="cine",
                        synthetic=True),
             OutputRole("radial_strain", "map", "radial Green-Lagrange strain at ES (fraction; tracked on the cine, "
                        "not synthesised)", grid="cine", quantity="radial_strain", synthetic=False),
             OutputRole("circumferential_strain", "map", "circumferential Green-Lagrange strain at ES (fraction; "
                        "tracked on the cine, not synthesised)", grid="cine", quantity="circumferential_strain",
                        synthetic=False)),
    checkpoints=(CheckpointRole("checkpoint", "virtual-LGE checkpoint folder", SHIPPED_CHECKPOINT),
                 CheckpointRole("autoencoder", "LGE autoencoder checkpoint folder (the one the model was trained on)",
                                SHIPPED_AUTOENCODER),
                 CheckpointRole("segmenter", "cine segmenter checkpoint folder", SHIPPED_SEGMENTER)),
    options=(Option("ed", int, None, "ED frame, from 0 (default: largest LV blood pool)", per_study=True),
             Option("es", int, None, "ES frame, from 0 (default: smallest LV blood pool)", per_study=True),
             Option("slices", str, None, "cine slices to synthesise, counted from 1 (e.g. 3-5,7; default: every slice "
                    "with an LV and a MOLLI slice at its position)", per_study=True),
             Option("scar_threshold", float, SCAR_THRESHOLD, "virtual scar: myocardium above this virtual LGE (0-1)")),
    sampling=Sampling(steps=None, samples=3, sampler="ddim", ddim_steps=50, ddim_eta=1.0),
    summarise=_summary, recipes=("virtual_lge_autoencoder", "virtual_lge", "virtual_lge_pix2pix"),
    evaluation=EVALUATION, table=_transmurality_rows, figures=_figures,
)
