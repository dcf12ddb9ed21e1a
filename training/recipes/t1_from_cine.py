"""Training of T1 from cine (CMRSynthesisLib.methods.t1_from_cine): T1Diff, its ablation "DDPM w/o disentangled
conditions" (raw_ddpm) and the pix2pix baseline, all from the same cached examples with the same budget, so the
evaluation compares them on equal terms.

Examples, per slice with an LV at ED: the slice's cine conditions on the LV crop (`slice_conditions`: cine phases,
segmenter probabilities at ED and ES, field strength) and the target native T1 map on the crop, scaled to [-1, 1].
Random flips of crop rows / columns augment every variant alike. Data sources (config "data"):
- "phantom": phantom subjects; target: the native T1 fitted from the subject's MOLLI images with our own fit
  (`analysis.t1mapping.t1_maps`: what a scanner would give); crop centred on the true LV at ED.
- "folders": real cases, one folder per case under "root", each with a `case.json` (or a phantom `subject.json`)
  naming its files by role: "cine" (a 4D NIfTI / NRRD with its JSON sidecar, or a DICOM cine folder) and
  "t1_native" (the native T1 map in ms at ED, e.g. the scanner's MOLLI map; resampled onto the cine's grid by
  position, as the paper aligns cine and T1 by slice position), optionally "ed_frame", "es_frame" (else from the
  segmenter's LV volume curve) and "field_strength_t" (else from the cine). The last "validation_fraction" of the
  cases by name validate. The crop is centred on the segmenter's LV at ED, as at inference.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from CMRSynthesisLib import phantom
from CMRSynthesisLib.analysis import kinematic_maps, strain
from CMRSynthesisLib.analysis.cardiac_phases import blood_pool_volumes_ml, ed_es_frames
from CMRSynthesisLib.analysis.t1mapping import t1_maps
from CMRSynthesisLib.diffusion.model import DiffusionModel
from CMRSynthesisLib.diffusion.training import diffusion_loss
from CMRSynthesisLib.io import read_volume
from CMRSynthesisLib.io.cine import read_cine
from CMRSynthesisLib.io.itk_files import resample_onto
from CMRSynthesisLib.methods.cine_segmentation import CineSegmenter, phantom_labels
from CMRSynthesisLib.methods.t1_from_cine import (
    METHOD,
    build_model,
    conditions_of,
    lv_centre,
    morphokinetic_condition,
    slice_conditions,
    to_unit,
)
from CMRSynthesisLib.preprocess import LVCrop

from .. import pix2pix
from ..datasets import cached_arrays, render_workers, split_cases, subject_examples
from ..distributed import Context
from ..loop import Trainer

CONDITION_NAMES = ("phases", "anatomy", "field")


def subject_rows(subject_id: int, config: dict[str, Any], segmenter: CineSegmenter) -> dict[str, list[np.ndarray]]:
    """One phantom subject's rows for `phantom_examples`: per LV slice at ED, its phases (F, S, S), anatomy (10, S, S),
    field (1, S, S), target (1, S, S) in [-1, 1], myocardium and scar masks (S, S) uint8 and subject id."""
    frames, size, pixel = int(config["frames"]), int(config["crop_size"]), float(config["pixel_mm"])
    rows: dict[str, list[np.ndarray]] = {key: [] for key in (*CONDITION_NAMES, "target", "myocardium", "scar",
                                                              "subject")}
    subject = phantom.make_subject(subject_id)
    cine, labels = phantom.render_cine(subject)
    blood = (labels.array == phantom.LABELS["lv_blood"]).sum(axis=(1, 2, 3))
    ed, es = 0, int(np.argmin(blood))
    labels_ed = subject.geometry.volume(labels.array[ed], units="label")
    series = phantom.render_molli(subject, labels_ed)
    body = labels_ed.with_array((labels_ed.array != phantom.LABELS["background"]).astype(np.uint8))
    t1 = t1_maps(series, body)["t1"].array
    spacing_yx = (cine.spacing[1], cine.spacing[0])
    probabilities = {frame: segmenter.probabilities(cine.array[frame], spacing_yx) for frame in (ed, es)}
    truth = phantom_labels(labels.array[ed])
    for z in range(cine.spatial_shape[0]):
        centre = lv_centre(truth[z])
        if centre is None:
            continue
        crop = LVCrop(centre, spacing_yx, size, pixel)
        values = slice_conditions("t1diff", frames, cine.array[:, z], probabilities[ed][z], probabilities[es][z],
                                  crop, ed, es, spacing_yx, subject.acquisition.field_strength_t)
        for name in CONDITION_NAMES:
            rows[name].append(values[name])
        rows["target"].append(to_unit(crop.extract(t1[z]))[None].astype(np.float32))
        ring = np.isin(labels.array[ed, z], [phantom.LABELS["lv_myocardium"], phantom.LABELS["scar"]])
        rows["myocardium"].append((crop.extract(ring.astype(np.float32)) > 0.5).astype(np.uint8))
        scar = labels.array[ed, z] == phantom.LABELS["scar"]
        rows["scar"].append((crop.extract(scar.astype(np.float32)) > 0.5).astype(np.uint8))
        rows["subject"].append(np.asarray(subject_id))
    return rows


def phantom_examples(split: str, subjects: int, config: dict[str, Any], segmenter: CineSegmenter, workers: int = 1
                     ) -> dict[str, np.ndarray]:
    """Arrays of every LV slice of the first `subjects` phantom subjects of `split` (`subject_rows`, in `workers`
    processes: `datasets.subject_examples`): phases (N, F, S, S), anatomy (N, 10, S, S), field (N, 1, S, S), target
    (N, 1, S, S) in [-1, 1], myocardium and scar masks (N, S, S) uint8 and subject (N,) ids."""
    return subject_examples(phantom.subject_ids(split, subjects),
                            functools.partial(subject_rows, config=config, segmenter=segmenter), workers)


def folder_examples(split: str, data: dict[str, Any], config: dict[str, Any], segmenter: CineSegmenter
                    ) -> dict[str, np.ndarray]:
    """Arrays of every LV slice of the real cases of `split` (data["root"], see the module docstring) whose crop the T1
    map covers entirely: phases, anatomy, field, target as `phantom_examples` gives them. ValueError naming the case
    for a missing role, no field strength, ED / ES out of range or equal, or no covered LV crop."""
    frames, size, pixel = int(config["frames"]), int(config["crop_size"]), float(config["pixel_mm"])
    root = Path(data["root"])
    cases = [path for path in root.iterdir() if (path / "case.json").is_file() or (path / "subject.json").is_file()]
    rows: dict[str, list[np.ndarray]] = {key: [] for key in (*CONDITION_NAMES, "target")}
    for case in split_cases(cases, split, float(data.get("validation_fraction", 0.1))):
        described = next(path for path in (case / "case.json", case / "subject.json") if path.is_file())
        roles = json.loads(described.read_text())
        missing = [role for role in ("cine", "t1_native") if role not in roles]
        if missing:
            raise ValueError(f"{described}: names no {' and no '.join(missing)}")
        cine = read_cine(case / roles["cine"])
        field = roles.get("field_strength_t", cine.metadata.get("field_strength_t"))
        if field is None:
            raise ValueError(f"{case}: no field strength (field_strength_t in case.json or the cine's header)")
        labels = segmenter.segment(cine).array
        ed_auto, es_auto = ed_es_frames(blood_pool_volumes_ml(labels, cine.spacing))
        ed, es = int(roles.get("ed_frame", ed_auto)), int(roles.get("es_frame", es_auto))
        if not (0 <= ed < len(cine.array) and 0 <= es < len(cine.array)) or ed == es:
            raise ValueError(f"{described}: ED frame {ed} and ES frame {es} must be two different frames of the "
                             f"cine's {len(cine.array)}")
        reference = cine.with_array(cine.array[ed])
        t1 = resample_onto(read_volume(case / roles["t1_native"]), reference, np.nan)  # NaN: the map does not reach
        spacing_yx = (cine.spacing[1], cine.spacing[0])
        probabilities = {frame: segmenter.probabilities(cine.array[frame], spacing_yx) for frame in (ed, es)}
        crops = {z: LVCrop(lv_centre(labels[ed, z]), spacing_yx, size, pixel)
                 for z in range(cine.spatial_shape[0]) if lv_centre(labels[ed, z]) is not None}
        slices = [z for z, crop in crops.items() if np.isfinite(crop.extract(t1[z])).all()]
        if not slices:
            raise ValueError(f"{case}: the T1 map covers no whole LV crop ({size} x {size} pixels of {pixel:g} mm) of "
                             f"a slice where the segmenter finds the LV at ED (frame {ed})")
        for z in slices:
            crop = crops[z]
            values = slice_conditions("t1diff", frames, cine.array[:, z], probabilities[ed][z], probabilities[es][z],
                                      crop, ed, es, spacing_yx, float(field))
            for name in CONDITION_NAMES:
                rows[name].append(values[name])
            rows["target"].append(to_unit(crop.extract(t1[z]))[None].astype(np.float32))
    return {key: np.stack(value) for key, value in rows.items()}


def cached_examples(split: str, subjects: int, config: dict[str, Any], segmenter: CineSegmenter, cache: Path | None
                    ) -> dict[str, np.ndarray]:
    """`phantom_examples`, read from / written to `cache` (a folder) under a name from their settings and the source of
    the code that makes them (the strain tracking included), so the three variants train on the very same examples
    without rendering them three times."""
    settings = {key: config[key] for key in ("frames", "crop_size", "pixel_mm")}
    return cached_arrays(cache, f"t1_from_cine_{split}_{subjects}",
                         [split, subjects, settings, segmenter.config.get("description", "")],
                         lambda: phantom_examples(split, subjects, config, segmenter, render_workers(config)),
                         code=(subject_rows, slice_conditions, morphokinetic_condition, kinematic_maps, strain))


def _batch(examples: dict[str, np.ndarray], names: tuple[str, ...], size: int, generator: torch.Generator,
           device: torch.device) -> dict[str, torch.Tensor]:
    """A random batch of the named arrays, each example flipped along rows and / or columns at random (the same flip
    for all its arrays)."""
    count = len(examples["target"])
    index = torch.randint(0, count, (size,), generator=generator, device=generator.device).cpu().numpy()
    flips = torch.randint(0, 2, (size, 2), generator=generator, device=generator.device).cpu().numpy()
    batch = {}
    for name in names:
        arrays = examples[name][index].copy()
        for row, (flip_rows, flip_cols) in enumerate(flips):
            if flip_rows:
                arrays[row] = arrays[row][..., ::-1, :]
            if flip_cols:
                arrays[row] = arrays[row][..., :, ::-1]
        batch[name] = torch.from_numpy(np.ascontiguousarray(arrays)).to(device)
    return batch


def _setup(config: dict[str, Any], variant: str) -> tuple[dict, dict]:
    """(train examples, validation examples) of a variant's recipe."""
    if config.get("variant") != variant:
        raise ValueError(f"this recipe trains variant {variant!r}; the config says {config.get('variant')!r}")
    data = config["data"]
    segmenter = CineSegmenter.load(data.get("segmenter"), "cpu")
    if data["source"] == "folders":
        return folder_examples("train", data, config, segmenter), folder_examples("validation", data, config, segmenter)
    if data["source"] != "phantom":
        raise ValueError(f"unknown data source {data['source']!r} for T1 from cine; use 'phantom' or 'folders'")
    cache = Path(data["cache"]) if data.get("cache") else None
    train = cached_examples("train", int(data["train_subjects"]), config, segmenter, cache)
    validation = cached_examples("validation", int(data["validation_subjects"]), config, segmenter, cache)
    return train, validation


def _product(config: dict[str, Any], trainer: Trainer, train: dict, validation: dict) -> dict[str, Any]:
    keys = ("variant", "frames", "crop_size", "pixel_mm", "schedule", "modality_encoder", "denoiser", "generator")
    return {"method": METHOD, **{key: config[key] for key in keys if key in config},
            "training_summary": {"steps": trainer.step, "train_slices": len(train["target"]),
                                 "validation_slices": len(validation["target"]), "best": trainer.best,
                                 "elapsed_s": round(getattr(trainer, "elapsed_s", 0.0), 1),
                                 "world_size": trainer.context.world_size, "device": str(trainer.context.device)}}


def train_diffusion(config: dict[str, Any], out: Path, context: Context, resume: bool, variant: str
                    ) -> tuple[dict, dict]:
    """T1Diff (variant "t1diff") or its ablation ("raw_ddpm"): the epsilon loss (paper eq. 6) on the fitted T1 maps;
    validation: the same loss on validation slices at fixed timesteps and noise (one generator per validation)."""
    train, validation = _setup(config, variant)
    network = build_model(config)
    model = DiffusionModel.from_config(network, config["schedule"], conditions_of(variant))
    names = tuple(condition.name for condition in conditions_of(variant))
    train_cfg = config["train"]
    batch = int(train_cfg["batch_size"])

    def loss_fn(net: torch.nn.Module, generator: torch.Generator) -> torch.Tensor:
        arrays = _batch(train, (*names, "target"), batch, generator, context.device)
        step_model = DiffusionModel(net, model.schedule, model.prediction_type, model.clip_x0, model.conditions)
        return diffusion_loss(step_model, arrays["target"], conditions={name: arrays[name] for name in names},
                              generator=generator)

    def validate(net: torch.nn.Module) -> dict[str, float]:
        generator = torch.Generator(device=context.device).manual_seed(1234)
        eval_model = DiffusionModel(net, model.schedule, model.prediction_type, model.clip_x0, model.conditions)
        losses = []
        for start in range(0, len(validation["target"]), batch):
            arrays = {name: torch.from_numpy(validation[name][start:start + batch]).to(context.device)
                      for name in (*names, "target")}
            losses.append(float(diffusion_loss(eval_model, arrays["target"],
                                               conditions={name: arrays[name] for name in names},
                                               generator=generator)) * len(arrays["target"]))
        return {"validation_loss": sum(losses) / len(validation["target"])}

    trainer = Trainer.from_config(network, context, out, train_cfg)
    if resume:
        trainer.resume()
    weights = trainer.fit(loss_fn, validate)
    return weights, _product(config, trainer, train, validation)


def train_t1diff(config: dict[str, Any], out: Path, context: Context, resume: bool) -> tuple[dict, dict]:
    """T1Diff: the disentangled conditions (modality encoder over the cine phases + morphokinetic anatomy)."""
    return train_diffusion(config, out, context, resume, "t1diff")


def train_raw_ddpm(config: dict[str, Any], out: Path, context: Context, resume: bool) -> tuple[dict, dict]:
    """The ablation "DDPM w/o Dis C": the same DDPM conditioned on the raw cine phases."""
    return train_diffusion(config, out, context, resume, "raw_ddpm")


def train_pix2pix(config: dict[str, Any], out: Path, context: Context, resume: bool) -> tuple[dict, dict]:
    """pix2pix (Isola et al. 2017, `training.pix2pix`): U-Net generator from the raw cine phases (+ field) to
    tanh-scaled T1, lambda * L1 + a conditional PatchGAN, lambda = config["l1_weight"] (pix2pix: 100); validation: L1
    on validation slices."""
    train, validation = _setup(config, "pix2pix")
    batch = int(config["train"]["batch_size"])
    names = ("phases", "field")

    def batches(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        arrays = _batch(train, (*names, "target"), batch, generator, context.device)
        return torch.cat([arrays[name] for name in names], dim=1), arrays["target"]

    held_out = (torch.cat([torch.from_numpy(validation[name]) for name in names], dim=1),
                torch.from_numpy(validation["target"]))
    weights, trainer = pix2pix.train_pix2pix(config, out, context, resume, batches, held_out)
    return weights, {**_product(config, trainer, train, validation), "l1_weight": float(config["l1_weight"])}


RECIPES = {"t1_from_cine": train_t1diff, "t1_from_cine_raw_ddpm": train_raw_ddpm,
           "t1_from_cine_pix2pix": train_pix2pix}
