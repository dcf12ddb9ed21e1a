"""Shared test fixtures: a toy method declared through the registry (`toy_spec`, and the `toy` fixture that
registers it for one test)."""

import numpy as np
import pytest

from CMRSynthesisLib.methods import register, unregister
from CMRSynthesisLib.methods.registry import CheckpointRole, InputRole, MethodSpec, Option, OutputRole
from CMRSynthesisLib.volume import Volume


class Negate:
    """A toy method: scale * (mask ? -image : image), with the number of voxels changed in its summary; label: the
    mask's label (default: any non-zero voxel), a fact of one study."""

    def __init__(self, device: str) -> None:
        self.device = device

    @classmethod
    def load(cls, checkpoint=None, device="auto"):
        return cls("cpu" if device == "auto" else device)

    def run(self, inputs, *, scale, label=None, progress=None):
        image, mask = inputs["image"], inputs["mask"]
        inside = np.ones(image.spatial_shape, bool) if mask is None else (
            mask.array > 0 if label is None else mask.array == label)
        if progress is not None:
            progress(0.5, "negating")
        values = np.where(inside, -image.array, image.array) * scale
        return {"negated": image.with_array(values.astype(np.float32)),
                "changed": Volume(inside.astype(np.uint8), image.spacing, image.origin, image.direction)}  # no metadata


def toy_spec(**changes) -> MethodSpec:
    fields = {
        "name": "toy_negate", "command": "toy-negate", "title": "Toy negation", "help": "negate an image inside a mask",
        "paper": "none (a test method)", "factory": Negate.load,
        "inputs": (InputRole("image", "map", "image to negate"), InputRole("mask", "mask", "where", required=False)),
        "outputs": (OutputRole("negated", "image", "negated image", grid="image"),
                    OutputRole("changed", "mask", "voxels changed", grid="image")),
        "checkpoints": (CheckpointRole("checkpoint", "toy checkpoint (unused)", "none"),),
        "options": (Option("scale", float, 1.0, "factor applied after negation"),
                    Option("label", int, None, "the mask's label (default: any non-zero voxel)", per_study=True)),
        "summarise": lambda inputs, outputs: {"changed_voxels": int(outputs["changed"].array.sum())},
    }
    return MethodSpec(**{**fields, **changes})


@pytest.fixture
def toy():
    spec = toy_spec()
    register(spec)
    yield spec
    unregister(spec.name)

