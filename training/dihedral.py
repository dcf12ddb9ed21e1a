"""The eight symmetries of a square crop (the dihedral group D4: a quarter turn k = 0..3, then a mirror of the
columns or not) as training augmentation, for maps on a crop centred on the LV.

A scalar map (intensity, T1 recovery, strain) is carried along as it is. A map of a direction-dependent quantity may
change sign: the circumferential direction (counter-clockwise about the LV) turns with the image but reverses under a
mirror, so a circumferential displacement changes sign there; strains and radial displacements do not
(`KINEMATIC_MIRROR_SIGNS`, checked on phantom slices by Testing/test_dihedral.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

TRANSFORMS = 8  # transform t: t % 4 quarter turns, then a mirror of the columns when t >= 4
# The factor each kinematic map (`CMRSynthesisLib.analysis.kinematic_maps.KINEMATIC_CHANNELS`) takes when mirrored.
KINEMATIC_MIRROR_SIGNS = {"radial_strain": 1.0, "circumferential_strain": 1.0, "radial_displacement_mm": 1.0,
                          "circumferential_displacement_mm": -1.0}


def dihedral_requested(config: dict[str, Any]) -> bool:
    """Whether a training config asks for this augmentation: "augmentation": {"dihedral": true} (default: no).
    ValueError naming any other augmentation key (a misspelt one would otherwise train without it)."""
    augmentation = config.get("augmentation", {})
    unknown = sorted(set(augmentation) - {"dihedral"})
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}; known: ['dihedral']")
    return bool(augmentation.get("dihedral", False))


def dihedral(images: torch.Tensor, transform: int) -> torch.Tensor:
    """images (..., H, W) with H == W under transform 0..7 (module docstring): torch.rot90 by transform % 4
    quarter turns over the last two axes, then, for transform >= 4, the columns reversed. ValueError for a transform
    outside 0..7 or a non-square grid."""
    if not 0 <= transform < TRANSFORMS:
        raise ValueError(f"a dihedral transform is 0..{TRANSFORMS - 1}; got {transform}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"dihedral transforms need a square grid; got {tuple(images.shape[-2:])}")
    turned = torch.rot90(images, transform % 4, dims=(-2, -1))
    return turned.flip(-1) if mirrored(transform) else turned


def mirrored(transform: int) -> bool:
    """Whether transform 0..7 mirrors the image (reverses the circumferential direction)."""
    return transform >= 4


def mirror_signs(channels: Sequence[str]) -> torch.Tensor:
    """(len(channels),) the factors of named kinematic channels under a mirror (`KINEMATIC_MIRROR_SIGNS`).
    KeyError for a channel whose behaviour under a mirror is not recorded."""
    return torch.tensor([KINEMATIC_MIRROR_SIGNS[name] for name in channels])


def random_transforms(count: int, generator: torch.Generator) -> list[int]:
    """`count` transforms drawn uniformly from 0..7 with `generator` (the trainer's, so a run is reproducible)."""
    return torch.randint(0, TRANSFORMS, (count,), generator=generator, device=generator.device).tolist()


def transform_batch(images: torch.Tensor, transforms: list[int], signs: torch.Tensor | None = None,
                    channel_axis: int = 1) -> torch.Tensor:
    """A batch (B, ..., H, W) with example b under transforms[b]; signs: optional per-channel factors (shape of
    images.shape[channel_axis]) applied to the mirrored examples (`mirror_signs` for kinematic maps, channel_axis
    their axis). ValueError when the number of transforms is not B."""
    if len(transforms) != len(images):
        raise ValueError(f"{len(transforms)} transforms for a batch of {len(images)}")
    out = []
    for example, transform in zip(images, transforms):
        moved = dihedral(example, transform)
        if signs is not None and mirrored(transform):
            shape = [1] * example.ndim
            shape[channel_axis - 1] = len(signs)
            moved = moved * signs.to(moved).reshape(shape)
        out.append(moved)
    return torch.stack(out)
