"""Training of virtual LGE (CPKDM, paper 000). So far: the LGE latent autoencoder (recipe
"virtual_lge_autoencoder"), on which KMDI's latent diffusion runs, and the examples CPKDM and its baselines train on.

LGE crops: every slice with an LV at ED of the phantom subjects of a split, its LGE on the LV crop (`LVCrop`,
centred on the true LV blood pool at ED; `crop_size` pixels of `pixel_mm`), scaled to [-1, 1] by the slice's
0.5th / 99.5th percentiles. Subjects vary in acquisition (field strength, matrix, noise, shading, LGE nulling), so
the autoencoder learns LGE of every contrast it will see.

Examples (`phantom_examples`): per such slice, the method's inputs on the same crop (`virtual_lge_inputs`) from the
subject's cine drawn without infarct contrast (the infarct visible only by its motion, and in its native T1) and its
native MOLLI, the clustering mask of the recovery curves (`curve_clustering`, the MR-ESMP supervision), the LGE
target, and the myocardium and scar masks for the metrics. ED masks are the phantom's true labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from CMRSynthesisLib import phantom
from CMRSynthesisLib.analysis.curve_clustering import cluster_curves
from CMRSynthesisLib.analysis.relaxation import recovery_curves
from CMRSynthesisLib.methods.virtual_lge_inputs import slice_inputs
from CMRSynthesisLib.preprocess import LVCrop, percentile_normalise

from ..autoencoder import train_autoencoder
from ..distributed import Context

METHOD = "virtual_lge"
LGE_PERCENTILES = (0.5, 99.5)


def lge_on_crop(image: np.ndarray, crop: LVCrop) -> np.ndarray:
    """One LGE slice (y, x) on `crop`, scaled to [-1, 1] by its LGE_PERCENTILES: (1, S, S) float32."""
    return (percentile_normalise(crop.extract(np.asarray(image, dtype=np.float32)), *LGE_PERCENTILES)[None] * 2.0
            - 1.0).astype(np.float32)


def lv_crop(blood: np.ndarray, spacing_yx: tuple[float, float], config: dict[str, Any]) -> LVCrop:
    """The LV crop of a slice (config crop_size, pixel_mm) centred on its LV blood pool (y, x) bool at ED."""
    rows, cols = np.nonzero(blood)
    return LVCrop((rows.mean(), cols.mean()), spacing_yx, int(config["crop_size"]), float(config["pixel_mm"]))


def lge_crops(split: str, subjects: int, config: dict[str, Any]) -> np.ndarray:
    """(N, 1, S, S) float32 LGE crops in [-1, 1] of every LV slice of the first `subjects` phantom subjects of
    `split` (module docstring)."""
    crops = []
    for subject_id in phantom.subject_ids(split, subjects):
        study = phantom.lge_study(subject_id)
        lge, blood = study["lge"], study["masks"]["blood"]
        spacing_yx = (lge.spacing[1], lge.spacing[0])
        for z in range(lge.spatial_shape[0]):
            if blood[z].any():
                crops.append(lge_on_crop(lge.array[z], lv_crop(blood[z], spacing_yx, config)))
    return np.stack(crops)


def phantom_examples(split: str, subjects: int, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """Arrays of every LV slice of the first `subjects` phantom subjects of `split` (module docstring): cine
    (N, F, S, S), kinematics (N, F, 4, S, S), curves (N, n, S, S), covered (N, S, S) bool, clusters (N, S, S) uint8
    (0 where not covered), lge (N, 1, S, S) in [-1, 1], myocardium and scar (N, S, S) bool, subject (N,).
    config: crop_size, pixel_mm, frames (cine phases) and "clusters" (number of curve clusters)."""
    frames = int(config["frames"])
    rows: dict[str, list[np.ndarray]] = {key: [] for key in ("cine", "kinematics", "curves", "covered", "clusters",
                                                              "lge", "myocardium", "scar", "subject")}
    for subject_id in phantom.subject_ids(split, subjects):
        study = phantom.lge_study(subject_id)
        cine, _ = phantom.render_cine(study["subject"], infarct_contrast=False)
        relaxation = recovery_curves(phantom.render_molli(study["subject"], study["labels"]))
        masks, lge = study["masks"], study["lge"]
        lge.require_same_geometry(cine, "the phantom's LGE and cine")  # the arrays below are indexed alike
        lge.require_same_geometry(relaxation.curves, "the phantom's LGE and MOLLI")
        spacing_yx = (lge.spacing[1], lge.spacing[0])
        for z in range(lge.spatial_shape[0]):
            myocardium = masks["myocardium"][z] | masks["scar"][z]
            if not masks["blood"][z].any() or not myocardium.any():
                continue
            crop = lv_crop(masks["blood"][z], spacing_yx, config)
            inputs = slice_inputs(cine.array[:, z], myocardium, masks["blood"][z], relaxation.curves.array[:, z],
                                  relaxation.fitted[z], spacing_yx, crop, 0, frames)
            for name in ("cine", "kinematics", "curves", "covered"):
                rows[name].append(inputs[name])
            rows["clusters"].append(cluster_curves(inputs["curves"], inputs["covered"],
                                                   clusters=int(config["clusters"])))
            rows["lge"].append(lge_on_crop(lge.array[z], crop))
            rows["myocardium"].append(crop.extract(myocardium.astype(np.float32)) > 0.5)
            rows["scar"].append(crop.extract(masks["scar"][z].astype(np.float32)) > 0.5)
            rows["subject"].append(np.asarray(subject_id))
    return {key: np.stack(value) for key, value in rows.items()}


def train_lge_autoencoder(config: dict[str, Any], out: Path, context: Context, resume: bool
                          ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The LGE AutoencoderKL of virtual LGE (training.autoencoder) on phantom LGE crops."""
    data = config["data"]
    if data.get("source") != "phantom":
        raise ValueError(f"the virtual-LGE autoencoder trains on the phantom (data source 'phantom'); got "
                         f"{data.get('source')!r}")
    train = lge_crops("train", int(data["train_subjects"]), config)
    validation = lge_crops("validation", int(data["validation_subjects"]), config)
    weights, product = train_autoencoder(config, out, context, resume, train, validation)
    return weights, {"method": METHOD, "part": "autoencoder", "crop_size": int(config["crop_size"]),
                     "pixel_mm": float(config["pixel_mm"]), "lge_percentiles": list(LGE_PERCENTILES), **product}


RECIPES = {"virtual_lge_autoencoder": train_lge_autoencoder}
