"""Training of virtual LGE (CPKDM, paper 000). So far: the LGE latent autoencoder (recipe
"virtual_lge_autoencoder"), on which KMDI's latent diffusion runs.

Examples: every slice with an LV at ED of the phantom subjects of a split, its LGE on the LV crop (`LVCrop`,
centred on the true LV blood pool at ED; `crop_size` pixels of `pixel_mm`), scaled to [-1, 1] by the slice's
0.5th / 99.5th percentiles. Subjects vary in acquisition (field strength, matrix, noise, shading, LGE nulling), so
the autoencoder learns LGE of every contrast it will see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from CMRSynthesisLib import phantom
from CMRSynthesisLib.preprocess import LVCrop, percentile_normalise

from ..autoencoder import train_autoencoder
from ..distributed import Context

METHOD = "virtual_lge"
LGE_PERCENTILES = (0.5, 99.5)


def lge_crops(split: str, subjects: int, config: dict[str, Any]) -> np.ndarray:
    """(N, 1, S, S) float32 LGE crops in [-1, 1] of every LV slice of the first `subjects` phantom subjects of
    `split` (module docstring)."""
    size, pixel = int(config["crop_size"]), float(config["pixel_mm"])
    crops = []
    for subject_id in phantom.subject_ids(split, subjects):
        study = phantom.lge_study(subject_id)
        lge, blood = study["lge"], study["masks"]["blood"]
        spacing_yx = (lge.spacing[1], lge.spacing[0])
        for z in range(lge.spatial_shape[0]):
            if not blood[z].any():
                continue
            rows, cols = np.nonzero(blood[z])
            crop = LVCrop((rows.mean(), cols.mean()), spacing_yx, size, pixel)
            crops.append(percentile_normalise(crop.extract(lge.array[z].astype(np.float32)), *LGE_PERCENTILES))
    return (np.stack(crops)[:, None] * 2.0 - 1.0).astype(np.float32)


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
