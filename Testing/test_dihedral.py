"""The crop's eight symmetries as training augmentation (training.dihedral), and the claim behind its kinematic signs:
the kinematic maps of a mirrored or turned phantom slice are the maps of the slice, mirrored or turned, with the
circumferential displacement negated under a mirror and nothing else changed."""

import numpy as np
import pytest
import torch

from CMRSynthesisLib import phantom
from CMRSynthesisLib.analysis.kinematic_maps import KINEMATIC_CHANNELS, kinematic_channels
from training.dihedral import (
    KINEMATIC_MIRROR_SIGNS,
    TRANSFORMS,
    dihedral,
    dihedral_requested,
    mirror_signs,
    mirrored,
    random_transforms,
    transform_batch,
)


def test_the_eight_transforms_are_distinct_symmetries_of_the_square():
    image = torch.arange(16.0).reshape(4, 4)
    images = [dihedral(image, t) for t in range(TRANSFORMS)]
    assert torch.equal(images[0], image)
    assert len({tuple(moved.flatten().tolist()) for moved in images}) == TRANSFORMS
    assert all(torch.equal(moved.flatten().sort().values, image.flatten()) for moved in images)
    assert torch.equal(dihedral(dihedral(image, 1), 3), image)  # a quarter turn, then three more
    assert torch.equal(dihedral(dihedral(image, 4), 4), image)  # a mirror is its own inverse
    assert torch.equal(dihedral(image, 4), image.flip(-1))
    assert [mirrored(t) for t in range(TRANSFORMS)] == [False] * 4 + [True] * 4


def test_a_batch_is_transformed_per_example_with_signs_only_where_mirrored():
    batch = torch.randn(3, 2, 4, 5, 5)  # (B, frames, channels, H, W)
    signs = torch.tensor([1.0, 1.0, 1.0, -1.0])
    out = transform_batch(batch, [0, 1, 4], signs, channel_axis=2)
    assert torch.equal(out[0], batch[0])
    assert torch.equal(out[1], torch.rot90(batch[1], 1, dims=(-2, -1)))
    assert torch.equal(out[2, :, :3], batch[2, :, :3].flip(-1))
    assert torch.equal(out[2, :, 3], -batch[2, :, 3].flip(-1))
    generator = torch.Generator().manual_seed(0)
    drawn = random_transforms(400, generator)
    assert set(drawn) == set(range(TRANSFORMS))
    assert drawn[:5] == random_transforms(5, torch.Generator().manual_seed(0))  # reproducible from the seed


@pytest.mark.parametrize("call, message", [
    (lambda: dihedral(torch.zeros(4, 4), 8), "0..7"),
    (lambda: dihedral(torch.zeros(4, 5), 1), "square"),
    (lambda: transform_batch(torch.zeros(2, 4, 4), [0]), "1 transforms for a batch of 2"),
])
def test_bad_transforms_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_config_asks_for_the_augmentation_by_name():
    assert dihedral_requested({}) is False and dihedral_requested({"augmentation": {"dihedral": True}}) is True
    with pytest.raises(ValueError, match="unknown augmentation \\['elastic'\\]"):
        dihedral_requested({"augmentation": {"elastic": True}})


def test_every_kinematic_channel_has_its_mirror_sign():
    assert set(KINEMATIC_MIRROR_SIGNS) == set(KINEMATIC_CHANNELS)
    assert mirror_signs(KINEMATIC_CHANNELS).tolist() == [KINEMATIC_MIRROR_SIGNS[name] for name in KINEMATIC_CHANNELS]


def test_kinematic_maps_of_a_mirrored_or_turned_slice_follow_the_signs():
    subject = phantom.make_subject(3)
    cine, labels = phantom.render_cine(subject)
    z = int(np.argmax([(labels.array[0, z] == phantom.LABELS["lv_blood"]).sum() for z in range(labels.array.shape[1])]))
    frames, ed = cine.array[:, z], labels.array[0, z]
    myocardium = np.isin(ed, [phantom.LABELS["lv_myocardium"], phantom.LABELS["scar"]])
    blood = ed == phantom.LABELS["lv_blood"]
    spacing = (cine.spacing[1], cine.spacing[0])
    original = kinematic_channels(frames, myocardium, blood, spacing, 0)
    within = np.broadcast_to(myocardium, original[:, 0].shape)

    def maps_under(transform: int) -> np.ndarray:  # the grid is not square: numpy's turn and mirror, as dihedral
        def move(array: np.ndarray, turns: int) -> np.ndarray:
            turned = np.rot90(array, turns % 4, axes=(-2, -1))
            return np.ascontiguousarray(turned[..., ::-1] if mirrored(transform) else turned)
        turns = transform % 4
        maps = kinematic_channels(move(frames, turns), move(myocardium, turns), move(blood, turns),
                                  spacing[::-1] if turns % 2 else spacing, 0)
        back = maps[..., ::-1] if mirrored(transform) else maps
        return np.rot90(back, -turns, axes=(-2, -1))

    for transform in (1, 4):
        back = maps_under(transform)
        for channel, name in enumerate(KINEMATIC_CHANNELS):
            sign = KINEMATIC_MIRROR_SIGNS[name] if mirrored(transform) else 1.0
            r = np.corrcoef(original[:, channel][within], back[:, channel][within])[0, 1]
            assert sign * r > 0.7, (transform, name, r)  # tracking on a pixel grid is only near-equivariant
