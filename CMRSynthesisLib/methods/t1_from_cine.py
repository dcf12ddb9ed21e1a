"""T1Diff: a native T1 map synthesised from a cine (paper 004, "T1Diff: Cardiac T1 Mapping Synthesis from Cine MRI
based on Diffusion Model").

Per short-axis slice, on a square LV crop (`crop_size` pixels of `pixel_mm`, centred on the LV found by the cine
segmenter at ED):
- the cine frames, resampled in time to `frames` phases from ED over one heartbeat and percentile-normalised, feed the
  **modality encoder** E_m (a U-Net) whose feature maps are c_mod (paper: "Modality Encoder");
- the **anatomical structure encoder** E_a is the shipped cine segmenter (frozen; the paper uses GF-UNet and says any
  anatomical encoder serves): its class probabilities at ED (a_d) and ES (a_s) give the morphokinetic condition
  c_mor = [a_d, a_s - a_d, E_rr, E_cc] (the change of anatomy from ED to ES, i.e. the wall's motion). E_rr and E_cc,
  the radial and circumferential Green-Lagrange strain from ED to ES inside the segmenter's ED myocardium
  (`analysis.strain`, 0 elsewhere), are chosen, not the paper's: a_s - a_d changes only at the wall's borders, while
  an infarct shows as a wall that does not thicken (on held-out phantom slices, ES radial strain about 0 in scar
  against 0.3 in remote myocardium), which the strain measures inside the wall;
- the disentangled conditions [c_mod, c_mor] and the field strength (a constant channel: native T1 depends on B0)
  are concatenated with x_t at the input of a conditional pixel DDPM (MONAI DiffusionModelUNet), T = 1000, trained
  with the epsilon loss (paper eq. 6) on T1 maps scaled to [-1, 1] (T1 / T1_SCALE_MS * 2 - 1).
Sampling starts from pure noise: DDPM through every step as the paper, or DDIM (faster), by default with eta 1 (the
DDPM posterior's noise on the coarse grid): with the demo model, deterministic DDIM (eta 0) drifted the myocardial T1
up by 100-150 ms on held-out slices where DDPM and eta-1 DDIM stayed within 10-40 ms. k samples per slice run as
one batch; the result is their mean and the per-voxel SD, in ms, pasted back onto the cine's grid (the crop resampled
to the input pixels); voxels outside the crop hold 0 (no value). Each slice draws from its own generator (seed,
slice position).

Two other variants share this module and checkpoint format (config "variant") so the evaluation compares them on
equal terms: "raw_ddpm", the paper's ablation "DDPM w/o Dis C" (the same DDPM conditioned on the raw cine frames, no
encoders), and "pix2pix", the baseline of Isola et al. 2017 (a U-Net generator from the raw frames, trained with L1
and a PatchGAN).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..analysis.cardiac_phases import blood_pool_volumes_ml, ed_es_frames
from ..analysis.kinematic_maps import kinematic_channels
from ..checkpoints import load_checkpoint, shipped_checkpoint
from ..device import check_seed, resolve_device
from ..diffusion.chain_cache import ChainCache
from ..diffusion.conditioning import Condition
from ..diffusion.model import DiffusionModel
from ..diffusion.networks import build_network, load_weights
from ..diffusion.samplers import checked_sampling, sample, sampling_record, timestep_pairs
from ..errors import CheckpointError, InputError
from ..evaluation import checkpoint_baseline
from ..preprocess import CINE_PERCENTILES, LVCrop, cycle_frames, percentile_normalise
from ..progress import Progress, report
from ..slice_runner import run_slices
from ..volume import Volume
from .cine_segmentation import LABEL_VALUES, CineSegmenter
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

METHOD = "t1_from_cine"
SHIPPED_CHECKPOINT = "t1_from_cine"
SHIPPED_SEGMENTER = "cine_segmenter"
VARIANTS = ("t1diff", "raw_ddpm", "pix2pix")
T1_SCALE_MS = 2500.0  # T1 in [0, T1_SCALE_MS] ms maps onto [-1, 1]
ANATOMY_CHANNELS = 10  # segmenter probabilities at ED (4), their change to ES (4), E_rr and E_cc from ED to ES
FIELD_STRENGTHS_T = (1.5, 3.0)


def field_channel(field_strength_t: float) -> float:
    """The field-strength condition's value: -1 at 1.5 T, +1 at 3 T (linear in between)."""
    return (float(field_strength_t) - 2.25) / 0.75


def to_unit(t1_ms: np.ndarray) -> np.ndarray:
    """T1 in ms -> the model's [-1, 1] scale (clipped to [0, T1_SCALE_MS] ms first)."""
    return np.clip(t1_ms, 0.0, T1_SCALE_MS) / T1_SCALE_MS * 2.0 - 1.0


def to_ms(unit: np.ndarray) -> np.ndarray:
    """The model's [-1, 1] scale -> T1 in ms."""
    return (np.asarray(unit) + 1.0) / 2.0 * T1_SCALE_MS


def lv_centre(labels: np.ndarray) -> tuple[float, float] | None:
    """(row, column) centroid of the LV (blood pool and myocardium: segmenter labels 1 and 2) of a 2D label map; None
    when the slice holds no LV."""
    lv = (labels == 1) | (labels == 2)
    return tuple(float(v) for v in ndimage.center_of_mass(lv)) if lv.any() else None


def morphokinetic_condition(frames: np.ndarray, probabilities_ed: np.ndarray, probabilities_es: np.ndarray,
                            spacing_yx: tuple[float, float], crop: LVCrop, ed_frame: int, es_frame: int) -> np.ndarray:
    """c_mor of one slice on its crop: (ANATOMY_CHANNELS, S, S) float32, the segmenter's probabilities at ED (4), their
    change to ES (4), and the radial and circumferential Green-Lagrange strain from ED to ES
    (`analysis.kinematic_maps`, clipped to +-STRAIN_LIMIT) inside the myocardium of the ED probabilities' labels, 0
    elsewhere (all 0 when the segmenter finds no myocardium). frames: the slice's cine (t, y, x); probabilities
    (4, y, x); spacing_yx: (row, col) mm."""
    ed, es = crop.extract(probabilities_ed), crop.extract(probabilities_es)
    labels = np.argmax(probabilities_ed, axis=0)
    myocardium = labels == LABEL_VALUES["lv_myocardium"]
    strain = np.zeros((2, *labels.shape), np.float32)
    if myocardium.any():
        motion = kinematic_channels(frames[[ed_frame, es_frame]], myocardium, labels == LABEL_VALUES["lv_blood"],
                                    spacing_yx, 0)
        strain = motion[1, :2]  # radial and circumferential strain at ES (KINEMATIC_CHANNELS order)
    return np.concatenate([ed, es - ed, crop.extract(strain)]).astype(np.float32)


def slice_conditions(variant: str, phases: int, frames: np.ndarray, probabilities_ed: np.ndarray,
                     probabilities_es: np.ndarray, crop: LVCrop, ed_frame: int, es_frame: int,
                     spacing_yx: tuple[float, float], field_strength_t: float) -> dict[str, np.ndarray]:
    """The condition arrays of one slice on its crop for `variant`: "phases" (phases, S, S), "anatomy" (c_mor,
    `morphokinetic_condition`; t1diff only), "field" (1, S, S). frames: the slice's cine (t, y, x); probabilities at
    ED / ES: (4, y, x) from the cine segmenter; spacing_yx: (row, col) mm."""
    values = {"phases": percentile_normalise(crop.extract(cycle_frames(frames, ed_frame, phases)), *CINE_PERCENTILES),
              "field": np.full((1, crop.size, crop.size), field_channel(field_strength_t), np.float32)}
    if variant == "t1diff":
        values["anatomy"] = morphokinetic_condition(frames, probabilities_ed, probabilities_es, spacing_yx, crop,
                                                    ed_frame, es_frame)
    return {condition.name: values[condition.name] for condition in conditions_of(variant)}


class T1DiffNetwork(torch.nn.Module):
    """The T1Diff denoiser: the modality encoder E_m applied to the cine-phase channels of the condition, its features
    c_mod concatenated with x_t, the morphokinetic condition c_mor and the field channel, into a DiffusionModelUNet.

    forward(x (B, 1 + frames + ANATOMY_CHANNELS + 1, y, x), timesteps (B,)) -> predicted noise (B, 1, y, x); the
    input's channels are [x_t, cine phases, c_mor, field] as `DiffusionModel` concatenates them.

    c_mod depends on the cine phases only, which stay the same through a sampling chain: inside `one_chain()` it is
    computed once per chain (`diffusion.chain_cache`; a quarter of each step's work saved).
    """

    def __init__(self, modality_encoder: torch.nn.Module, denoiser: torch.nn.Module, frames: int) -> None:
        super().__init__()
        self.modality_encoder, self.denoiser, self.frames = modality_encoder, denoiser, int(frames)
        self._cache = ChainCache()

    def one_chain(self) -> contextlib.AbstractContextManager[None]:
        """The scope of one sampling chain with fixed weights and no gradients: c_mod is reused while the phases
        are equal."""
        return self._cache.one_chain()

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x_t, phases, rest = x[:, :1], x[:, 1:1 + self.frames], x[:, 1 + self.frames:]
        return self.denoiser(torch.cat([x_t, self.modality_features(phases), rest], dim=1), timesteps)

    def modality_features(self, phases: torch.Tensor) -> torch.Tensor:
        """c_mod = E_m(phases) for phases (B, frames, y, x); inside `one_chain()` reused while the phases are equal."""
        return self._cache.features(phases, lambda: self.modality_encoder(phases))


def build_model(config: dict[str, Any]) -> torch.nn.Module:
    """The network of a checkpoint config by its "variant": "t1diff" (T1DiffNetwork from "modality_encoder" and
    "denoiser" network configs), "raw_ddpm" ("denoiser"), "pix2pix" ("generator"); each a MONAI class config for
    `build_network`. CheckpointError for an unknown variant or config."""
    variant = config.get("variant")
    if variant == "t1diff":
        return T1DiffNetwork(build_network(config["modality_encoder"]), build_network(config["denoiser"]),
                             int(config["frames"]))
    if variant == "raw_ddpm":
        return build_network(config["denoiser"])
    if variant == "pix2pix":
        return build_network(config["generator"])
    raise CheckpointError(f"unknown T1-from-cine variant {variant!r}; known: {VARIANTS}")


def conditions_of(variant: str) -> tuple[Condition, ...]:
    """The conditions a variant's denoiser takes, in channel order: the cine phases, c_mor (t1diff only) and the
    field channel, all concatenated."""
    names = ("phases", "anatomy", "field") if variant == "t1diff" else ("phases", "field")
    return tuple(Condition(name, "concat") for name in names)


class T1FromCine:
    """Native T1 maps from a cine with a trained T1Diff (or baseline) checkpoint and the cine segmenter.

    config keys: variant, frames (cine phases), crop_size (pixels), pixel_mm, schedule (diffusion variants), the
    network configs (`build_model`).
    """

    name = METHOD
    REQUIRED_CONFIG = ("variant", "frames", "crop_size", "pixel_mm")

    def __init__(self, network: torch.nn.Module, config: dict[str, Any], segmenter: CineSegmenter,
                 device: torch.device) -> None:
        missing = [key for key in self.REQUIRED_CONFIG if key not in config]
        if missing:
            raise CheckpointError(f"the T1-from-cine checkpoint config lacks {', '.join(missing)}")
        self.config, self.segmenter, self.device = config, segmenter, device
        self.variant = config["variant"]
        self.network = network.to(device).eval()
        self.model = None if self.variant == "pix2pix" else DiffusionModel.from_config(
            self.network, config["schedule"], conditions_of(self.variant))

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, device: str | torch.device = "auto",
             segmenter: str | Path | None = None) -> T1FromCine:
        """Load a checkpoint folder (None: the shipped demo model) and the cine segmenter (None: shipped), hash-
        checked, on `device`. CheckpointError for a missing, tampered or foreign checkpoint."""
        folder = Path(checkpoint) if checkpoint else shipped_checkpoint(SHIPPED_CHECKPOINT)
        weights, config = load_checkpoint(folder, expected_method=METHOD)
        resolved = resolve_device(device)
        return cls(load_weights(build_model(config), weights), config,
                   CineSegmenter.load(segmenter or shipped_checkpoint(SHIPPED_SEGMENTER), resolved), resolved)

    def run(self, inputs: dict[str, Volume | None], *, samples: int = 3, seed: int = 0, sampler: str = "ddpm",
            ddim_steps: int = 100, ddim_eta: float = 1.0, ed: int | None = None, es: int | None = None,
            field_strength: float | None = None, progress: Progress | None = None) -> dict[str, Volume]:
        """Synthesise the native T1 map of a cine (t, z, y, x) at its ED frame.

        ed / es: frame indices (None: the largest and smallest LV blood pool of the segmenter's labels);
        field_strength: tesla (None: the cine's metadata "field_strength_t", as DICOM MagneticFieldStrength gives
        it); samples k, seed, sampler ("ddpm": every step from pure noise, T = 1000, the paper; "ddim": `ddim_steps`
        steps with noise level `ddim_eta`). Returns "t1" (float32 ms on the cine's spatial grid, 0 outside the LV crops) and "t1_sd" (the SD of
        the k samples, ms). InputError for a cine of fewer than 2 frames, ED = ES, frames out of range, no field
        strength, or no LV found; Cancelled when `progress` returns False.
        """
        cine = inputs.get("cine")
        if cine is None:
            raise InputError("T1 from cine needs a cine (input 'cine')")
        if cine.array.ndim not in (3, 4):
            raise InputError(f"{cine.named('the cine')} of shape {cine.array.shape} is not a cine (t, z, y, x)")
        frames = cine.array.shape[0] if cine.array.ndim == 4 else 1
        if frames < 2:
            raise InputError(f"{cine.named('the cine')} holds {frames} frame{'s' if frames != 1 else ''} (shape "
                             f"{cine.array.shape}); T1 from cine needs a cine (t, z, y, x) of at least 2 frames: the "
                             "morphokinetic condition compares ED and ES")
        cine.require_finite("the cine")
        check_seed(seed)
        eta = checked_sampling(samples, sampler, ddim_eta)
        stated = cine.metadata.get("field_strength_t")
        field = field_strength if field_strength is not None else stated
        if field is None:
            raise InputError(f"{cine.named('the cine')} does not say its field strength (DICOM MagneticFieldStrength, "
                             "or field_strength_t in the JSON sidecar of a NIfTI / NRRD cine), and native T1 depends on "
                             "it: give it (--field-strength 1.5 or 3)")
        notes = []
        if field_strength is not None and stated is not None and abs(float(field_strength) - float(stated)) > 0.05:
            notes.append(f"field strength {float(field_strength):g} T as given, although the cine states "
                         f"{float(stated):g} T: native T1 depends on it")
        if not 1.0 <= float(field) <= 3.5:
            raise InputError(f"field strength {field} T is outside the 1.5-3 T the model knows")
        count, phases = cine.array.shape[0], int(self.config["frames"])
        if count < phases:
            notes.append(f"the cine holds {count} frames, fewer than the {phases} phases over the heartbeat the model "
                         "reads: they are interpolated between those frames, unlike the whole cines it was trained on; "
                         "read the map with care")
        for name, frame in (("ED", ed), ("ES", es)):
            if frame is not None and not 0 <= frame < count:
                raise InputError(f"the {name} frame {frame} is out of range: the cine has {count} frames (0-{count - 1})")
        pairs = None if self.model is None else timestep_pairs(
            sampler, self.model.schedule.num_train_timesteps - 1, self.model.schedule.num_train_timesteps, ddim_steps)
        spacing_yx = (cine.spacing[1], cine.spacing[0])
        report(progress, 0.0, "segmenting the cine")
        labels = self.segmenter.segment(cine).array
        curve = blood_pool_volumes_ml(labels, cine.spacing)
        ed_auto, es_auto = ed_es_frames(curve)
        ed = ed_auto if ed is None else ed
        es = es_auto if es is None else es
        if ed == es:
            raise InputError(f"ED and ES are the same frame ({ed}): the morphokinetic condition needs two phases")
        keys = cine.slice_keys()
        t1 = np.zeros(cine.spatial_shape, np.float32)
        sd = np.zeros(cine.spatial_shape, np.float32)
        slices = [z for z in range(cine.spatial_shape[0]) if lv_centre(labels[ed, z]) is not None]
        if not slices:
            raise InputError(f"no LV found in {cine.named('the cine')} at ED (frame {ed}): nothing to map")
        probabilities = {frame: self.segmenter.probabilities(cine.array[frame], spacing_yx) for frame in (ed, es)}
        size, pixel = int(self.config["crop_size"]), float(self.config["pixel_mm"])

        def synthesise(number: int, generator: torch.Generator, slice_progress: Progress) -> None:
            z = slices[number]
            crop = LVCrop(lv_centre(labels[ed, z]), spacing_yx, size, pixel)
            values = slice_conditions(self.variant, int(self.config["frames"]), cine.array[:, z],
                                      probabilities[ed][z], probabilities[es][z], crop, ed, es, spacing_yx,
                                      float(field))
            mean, spread = self._slice(values, samples, generator, pairs, sampler, eta, slice_progress)
            t1[z] = crop.paste(to_ms(mean), cine.spatial_shape[1:])
            sd[z] = crop.paste(spread * T1_SCALE_MS / 2.0, cine.spatial_shape[1:])

        run_slices([keys[z] for z in slices], synthesise, seed=seed, device=self.device, progress=progress,
                   start=0.05, end=1.0)
        report(progress, 1.0, "T1 map synthesised")
        reference = Volume(t1, cine.spacing, cine.origin, cine.direction,
                           {key: cine.metadata[key] for key in ("source_files", "notes") if key in cine.metadata})
        sampling, sampling_notes = sampling_record(self.model is not None, samples, seed, sampler, ddim_steps, eta)
        settings = {"method": METHOD, "variant": self.variant, "ed_frame": int(ed), "es_frame": int(es),
                    "field_strength_t": float(field), **sampling, "slices": slices,
                    "checkpoint": self.config.get("description", "")}
        notes += sampling_notes
        if notes:
            settings["notes"] = notes
        return {"t1": reference.with_array(t1, units="ms", quantity="t1_native", description="synthetic native T1",
                                           synthesis=settings, field_strength_t=float(field)),
                "t1_sd": reference.with_array(sd, units="ms", description="per-voxel SD of the k samples (ms)")}

    @torch.no_grad()
    def _slice(self, values: dict[str, np.ndarray], samples: int, generator: torch.Generator,
               pairs: list[tuple[int, int]] | None, sampler: str, eta: float, progress: Progress
               ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and SD (in [-1, 1] units) of k samples of one slice's crop."""
        tensors = {name: torch.from_numpy(value[None]).to(self.device) for name, value in values.items()}
        size = next(iter(values.values())).shape[-1]
        if self.model is None:  # pix2pix: deterministic, k is 1 in effect
            output = self.network(torch.cat([tensors[c.name] for c in conditions_of("raw_ddpm")], dim=1))
            mean = torch.tanh(output)[0, 0].cpu().numpy()
            return mean, np.zeros_like(mean)
        chain = self.network.one_chain() if isinstance(self.network, T1DiffNetwork) else contextlib.nullcontext()
        with chain:
            result = sample(self.model, pairs, shape=(1, 1, size, size), start="noise", conditions=tensors,
                            sampler=sampler, eta=eta, samples=samples, generator=[generator], progress=progress)
        return result.mean[0, 0].cpu().numpy(), result.sd[0, 0].cpu().numpy()


def _summary(inputs: dict[str, Any], outputs: dict[str, Volume]) -> dict[str, Any]:
    """The command's facts: the sampling settings, ED / ES, field strength, and the median T1 over the crops."""
    t1 = outputs["t1"].array
    values = t1[t1 > 0]
    return {**outputs["t1"].metadata["synthesis"],
            "median_t1_ms_in_crops": float(np.median(values)) if values.size else None}


def evaluation_cases(split: str, subjects: int, method: Any) -> list[EvaluationCase]:
    """One case per phantom subject of `split`: its cine in, and as reference the native T1 map fitted from its
    MOLLI images with our own fit (what the training target is, and what a scanner's map is), with the ED
    myocardium (scar included), the scar and the 16 AHA segments (anchored at the RV) for the metrics."""
    from .. import phantom
    from ..analysis.aha import aha_segments
    from ..analysis.t1mapping import t1_maps

    cases = []
    for subject_id in phantom.subject_ids(split, subjects):
        subject = phantom.make_subject(subject_id)
        cine, labels = phantom.render_cine(subject)
        labels_ed = subject.geometry.volume(labels.array[0], units="label")
        body = labels_ed.with_array((labels_ed.array != phantom.LABELS["background"]).astype(np.uint8))
        reference = t1_maps(phantom.render_molli(subject, labels_ed), body)["t1"]
        masks = phantom.tissue_masks(labels_ed)
        myocardium = masks["myocardium"] | masks["scar"]
        segments = aha_segments(labels_ed.with_array(myocardium.astype(np.uint8)), blood_pool=masks["blood"],
                                rv=masks["rv"], allow_missing=True).labels.array
        cases.append(EvaluationCase(subject=subject_id, family=split, inputs={"cine": cine}, reference=reference,
                                    context={"myocardium": myocardium, "scar": masks["scar"], "segments": segments},
                                    facts={"scar_voxels": float(masks["scar"].sum())}))
    return cases


def map_metrics(output: Volume, reference: Volume, case: EvaluationCase) -> dict[str, float | None]:
    """Image metrics over each slice's LV crop (the box where the output has values), averaged over slices: PSNR and
    SSIM with a data range of T1_SCALE_MS, NMSE (paper Table 1); the mean absolute T1 error in the myocardium (ms);
    the infarct's T1 rise, mean T1 in scar minus in the rest of the myocardium (ms; None without scar)."""
    from ..metrics import nmse, psnr, ssim

    rows: dict[str, list[float]] = {"psnr": [], "ssim": [], "nmse": []}
    for z in range(output.spatial_shape[0]):
        region = output.array[z] > 0
        if not region.any() or not reference.array[z][region].any():
            continue
        rr, cc = np.nonzero(region)
        box = (slice(rr.min(), rr.max() + 1), slice(cc.min(), cc.max() + 1))
        truth, made = reference.array[z][box].astype(np.float64), output.array[z][box].astype(np.float64)
        rows["psnr"].append(psnr(truth, made, T1_SCALE_MS))
        rows["ssim"].append(ssim(truth, made, T1_SCALE_MS))
        rows["nmse"].append(nmse(truth, made))
    metrics: dict[str, float | None] = {key: float(np.mean(values)) if values else None for key, values in rows.items()}
    myocardium = case.context["myocardium"] & (output.array > 0)
    metrics["myocardium_mae_ms"] = (float(np.abs(output.array[myocardium] - reference.array[myocardium]).mean())
                                    if myocardium.any() else None)
    metrics["infarct_rise_ms"] = infarct_rise(output.array, case)
    return metrics


def infarct_rise(t1: np.ndarray, case: EvaluationCase) -> float | None:
    """Mean T1 in the scar minus in the rest of the myocardium (ms), over voxels with values; None without scar."""
    scar = case.context["scar"] & (t1 > 0)
    remote = case.context["myocardium"] & ~case.context["scar"] & (t1 > 0)
    return float(t1[scar].mean() - t1[remote].mean()) if scar.any() and remote.any() else None


def t1_agreement(output: Volume, reference: Volume, case: EvaluationCase) -> dict[str, tuple[Any, Any]]:
    """Paired T1 values (ms) for Pearson R and Bland-Altman (paper Fig. 4): the 16 AHA segment means, and the
    global myocardial mean, each over the voxels where both maps have values."""
    from ..metrics import segment_means

    both = (output.array > 0) & (reference.array > 0)
    segments = case.context["segments"]
    myocardium = case.context["myocardium"] & both
    return {"segment_t1": (segment_means(segments, output.array, both), segment_means(segments, reference.array, both)),
            "global_t1": ([float(output.array[myocardium].mean()) if myocardium.any() else np.nan],
                          [float(reference.array[myocardium].mean()) if myocardium.any() else np.nan])}


EVALUATION = Evaluation(
    cases=evaluation_cases, metrics=(map_metrics,),
    columns=(Column("psnr", "PSNR (dB)"), Column("ssim", "SSIM", digits=3), Column("nmse", "NMSE", digits=3),
             Column("myocardium_mae_ms", "myocardium MAE (ms)", digits=0),
             Column("segment_t1.r", "AHA segment R", digits=2), Column("segment_t1.bias", "segment bias (ms)", digits=0),
             Column("segment_t1.loa", "segment LoA (ms)", digits=0), Column("global_t1.r", "global R", digits=2),
             Column("infarct_rise_ms", "infarct T1 rise (ms)", digits=0)),
    higher_is_better=("psnr", "ssim"), lower_is_better=("nmse", "myocardium_mae_ms"),
    baselines=(checkpoint_baseline("pix2pix", "pix2pix (baseline)", "t1_from_cine_pix2pix",
                                   "U-Net generator + PatchGAN from the raw cine phases, same data and budget"),
               checkpoint_baseline("raw_ddpm", "DDPM w/o disentangled conditions (ablation)", "t1_from_cine_raw_ddpm",
                                   "the same DDPM on the raw cine phases, no encoders, same data and budget")),
    method_label="T1Diff (this run)",
    reference_row=ReferenceRow("fitted_molli", "Reference: MOLLI T1 fit",
                               lambda reference, case: {"infarct_rise_ms": infarct_rise(reference.array, case)}),
    agreement=t1_agreement, units={"segment_t1": "ms", "global_t1": "ms", "myocardium_mae_ms": "ms"},
    published=(("Paper T1Diff (clinical 3 T, 31 patients)", {"psnr": "31.84", "ssim": "0.89", "nmse": "0.66",
                                                             "segment_t1.r": "0.84", "global_t1.r": "0.82"}),
               ("Paper pix2pix", {"psnr": "30.21", "ssim": "0.87", "nmse": "0.78"}),
               ("Paper DDPM w/o Dis C", {"psnr": "29.15", "ssim": "0.84", "nmse": "1.12"})),
    subjects=6, title="T1 from cine on held-out phantom subjects (T1 maps compared with the fitted MOLLI T1)",
)


SPEC = MethodSpec(
    name=METHOD, command="t1-from-cine", title="T1 map from cine",
    help="native T1 map (ms) synthesised from a cine (T1Diff)",
    paper="T1Diff: Cardiac T1 Mapping Synthesis from Cine MRI based on Diffusion Model (paper 004)",
    factory=T1FromCine.load,
    inputs=(InputRole("cine", "cine", "cine: 4D NIfTI / NRRD (time last on disk) or a DICOM cine folder"),),
    outputs=(OutputRole("t1", "map", "synthetic native T1 map (ms) at ED on the cine's grid", grid="cine",
                        quantity="t1_native"),
             OutputRole("t1_sd", "sd", "per-voxel SD of the k samples (ms)", grid="cine")),
    checkpoints=(CheckpointRole("checkpoint", "T1Diff checkpoint folder", SHIPPED_CHECKPOINT),
                 CheckpointRole("segmenter", "cine segmenter checkpoint folder (the anatomical encoder)",
                                SHIPPED_SEGMENTER)),
    options=(Option("ed", int, None, "ED frame, from 0 (default: largest LV blood pool)", per_study=True),
             Option("es", int, None, "ES frame, from 0 (default: smallest LV blood pool)", per_study=True),
             Option("field_strength", float, None, "field strength in tesla (default: from the DICOM header, or "
                    "field_strength_t in a NIfTI / NRRD cine's JSON sidecar)", per_study=True)),
    sampling=Sampling(steps=None, samples=3, sampler="ddpm", ddim_steps=100, ddim_eta=1.0),
    summarise=_summary, recipes=("t1_from_cine", "t1_from_cine_raw_ddpm", "t1_from_cine_pix2pix"),
    evaluation=EVALUATION,
)
