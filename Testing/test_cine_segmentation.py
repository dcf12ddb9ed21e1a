"""The cine LV / RV segmenter: the shipped checkpoint, Dice on a held-out phantom cine at ED and ES, labels on the
input's grid whatever its shape, real expert contours (Sunnybrook), the `cmrsynth segment` command and its refusals,
and the training recipe on a tiny config."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from CMRSynthesisLib import phantom
from CMRSynthesisLib.checkpoints import default_manifest, load_checkpoint, shipped_checkpoint
from CMRSynthesisLib.cli import main as cli
from CMRSynthesisLib.errors import InputError
from CMRSynthesisLib.io import file_sha256, read_volume, write_volume
from CMRSynthesisLib.io.cine import read_cine, sidecar_path, write_cine
from CMRSynthesisLib.methods import load_method
from CMRSynthesisLib.methods.cine_segmentation import (
    LABEL_VALUES,
    CineSegmenter,
    clean_slice,
    phantom_labels,
    segment_cine,
)
from CMRSynthesisLib.volume import Volume
from training.__main__ import main as train
from training.recipes.cine_segmentation import end_frames

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from sunnybrook_dice import dice, evaluate

SUNNYBROOK = Path(__file__).parent / "Data" / "sunnybrook"
CLASSES = {name: value for name, value in LABEL_VALUES.items() if value}
# Floors a little below what the shipped model measures (benchmarks/results/segment.json: 0.96-0.98 on this test
# subject; sunnybrook_dice.json: blood pool 0.705 mean over the 9 frames, 0.875-0.918 at ED, epicardial region 0.917).
PHANTOM_FLOORS = {"lv_blood": 0.95, "lv_myocardium": 0.92, "rv_blood": 0.92}
SUNNYBROOK_BLOOD_POOL_FLOOR = 0.65
SUNNYBROOK_ED_BLOOD_POOL_FLOOR = 0.85
SUNNYBROOK_EPICARDIAL_FLOOR = 0.85


@pytest.fixture(scope="module")
def segmenter():
    return CineSegmenter.load(device="cpu")


@pytest.fixture(scope="module")
def test_subject():
    """A held-out phantom test subject: (cine, true labels in LABEL_VALUES, ED frame, ES frame)."""
    cine, labels = phantom.render_cine(phantom.make_subject(phantom.subject_ids("test", 1)[0]))
    ed, es = end_frames(labels.array)
    return cine, phantom_labels(labels.array), ed, es


def test_shipped_checkpoint_is_listed_with_its_hashes_and_loads(segmenter):
    folder = shipped_checkpoint("cine_segmenter")
    entry = json.loads(default_manifest().read_text())["checkpoints"]["cine_segmenter"]
    assert entry["files"]["model.safetensors"] == file_sha256(folder / "model.safetensors")
    assert entry["files"]["config.json"] == file_sha256(folder / "config.json")
    _, config = load_checkpoint(folder, expected_method="cine_segmentation")
    assert config["command"].startswith("python -m training cine_segmentation --config")
    assert config["label_values"] == LABEL_VALUES
    assert isinstance(load_method("cine_segmentation", device="cpu"), CineSegmenter)
    assert segmenter.config["weights_sha256"] == file_sha256(folder / "model.safetensors")


def test_held_out_phantom_dice_at_ed_and_es(segmenter, test_subject):
    cine, truth, ed, es = test_subject
    labels = segment_cine(cine, [es, ed], device="cpu")
    assert labels.array.shape == (2, *cine.spatial_shape) and labels.array.dtype == np.uint8
    assert labels.same_geometry(cine)
    assert labels.metadata["frames"] == [es, ed]
    assert labels.metadata["trigger_times_ms"] == [cine.metadata["trigger_times_ms"][f] for f in (es, ed)]
    for predicted, frame in zip(labels.array, (es, ed)):
        for name, value in CLASSES.items():
            score = dice(predicted == value, truth[frame] == value)
            assert score > PHANTOM_FLOORS[name], f"frame {frame} {name}: Dice {score:.3f}"


def _resampled(image: np.ndarray, zoom: tuple[float, float], order: int) -> np.ndarray:
    return np.stack([ndimage.zoom(plane, zoom, order=order) for plane in image])


def test_labels_lie_on_the_input_grid_for_odd_shapes_anisotropic_pixels_stacks_and_single_images(segmenter,
                                                                                              test_subject):
    cine, truth, ed, _ = test_subject
    heart = np.argwhere(truth[ed] > 0)
    low, high = heart.min(axis=0), heart.max(axis=0)
    middle = (low[0] + high[0]) // 2
    y0, x0 = max(low[1] - 9, 0), max(low[2] - 7, 0)
    rows, cols = (high[1] + 12 - y0) | 1, (high[2] + 10 - x0) | 1  # odd sizes
    box = (slice(middle - 1, middle + 2), slice(y0, y0 + rows), slice(x0, x0 + cols))
    image, reference = cine.array[ed][box], truth[ed][box]
    assert image.shape == (3, rows, cols)
    # anisotropic pixels: the same anatomy sampled 1.3x finer along the rows and 1.25x coarser along the columns
    zoom = (1.3, 0.8)
    spacing = (cine.spacing[0] / zoom[1], cine.spacing[1] / zoom[0], cine.spacing[2])
    cases = {"odd shape": (image, reference, cine.spacing),
             "anisotropic": (_resampled(image, zoom, 1), _resampled(reference, zoom, 0), spacing),
             "single image": (image[1:2], reference[1:2], cine.spacing)}
    for name, (array, expected, pixel) in cases.items():
        stack = Volume(array.astype(np.float32), pixel, (4.0, -7.0, 2.0), cine.direction)
        labels = segmenter.segment(stack)
        assert labels.array.shape == array.shape and labels.same_geometry(stack), name
        score = dice(labels.array == 1, expected == 1)
        assert score > 0.85, f"{name}: LV blood-pool Dice {score:.3f}"
    as_cine = segmenter.segment(Volume(image[None], cine.spacing, cine.origin, cine.direction))
    assert as_cine.array.shape == (1, *image.shape)


def test_frame_choices_are_checked(segmenter, test_subject):
    cine, *_ = test_subject
    count = cine.array.shape[0]
    with pytest.raises(InputError, match=rf"frame {count} is out of range: the cine has {count} frames"):
        segmenter.segment(cine, [0, count])
    with pytest.raises(InputError, match="name a frame twice"):
        segmenter.segment(cine, [1, 1])
    with pytest.raises(InputError, match="a 3D image is one frame"):
        segmenter.segment(Volume(cine.array[0], cine.spacing), [1])
    with pytest.raises(InputError, match="must hold intensities"):
        segmenter.segment(Volume(cine.array[:1] > 0, cine.spacing))


def test_clean_up_keeps_the_cavity_surrounded_by_myocardium_and_fills_it():
    labels = np.zeros((60, 60), dtype=np.uint8)
    yy, xx = np.mgrid[:60, :60]
    ring = np.hypot(yy - 30, xx - 30)
    labels[20:40, 12:19] = 3  # the RV beside the septum
    labels[ring < 12] = 2
    labels[ring < 7] = 1
    rv = labels == 3
    labels[29:32, 29:32] = 2  # a papillary muscle inside the cavity
    labels[0:14, 0:14] = 1  # a bright blob larger than the cavity, with no myocardium around it
    labels[40:46, 40:44] = 2  # myocardium not touching the cavity
    labels[46:60, 0:16] = 3  # a larger "RV" far from the LV
    cleaned = clean_slice(labels, (1.0, 1.0))
    assert np.array_equal(cleaned == 1, ring < 7)
    assert np.array_equal(cleaned == 2, (ring >= 7) & (ring < 12))
    assert np.array_equal(cleaned == 3, rv)


@pytest.mark.skipif(not SUNNYBROOK.is_dir(), reason="Testing/Data/sunnybrook is absent")
def test_sunnybrook_blood_pool_dice_against_expert_contours(segmenter):
    results = evaluate(segmenter, SUNNYBROOK)
    blood = results["lv_blood_pool"]
    assert blood["n"] == 9
    assert blood["mean"] >= SUNNYBROOK_BLOOD_POOL_FLOOR, blood["frames"]
    assert all(row["dice"] >= SUNNYBROOK_ED_BLOOD_POOL_FLOOR for row in blood["frames"] if row["phase"] == "ED")
    assert results["lv_epicardial_region"]["image"] == "IM-0009-0020.dcm"
    assert results["lv_epicardial_region"]["dice"] >= SUNNYBROOK_EPICARDIAL_FLOOR
    assert results["lv_myocardium"]["dice"] is None and "both" in results["lv_myocardium"]["reason"]


@pytest.fixture(scope="module")
def small_cine(tmp_path_factory, test_subject):
    """A cine of up to 7 frames (ED and ES among them) and 2 slices around the heart, written with write_cine: (path,
    true ED index, true ES index within it)."""
    cine, truth, ed, es = test_subject
    frames = sorted({ed, es, *np.linspace(0, len(cine.array) - 1, 5).astype(int).tolist()})
    heart = np.argwhere(truth[ed] > 0)
    middle = (heart[:, 0].min() + heart[:, 0].max()) // 2
    times = [cine.metadata["trigger_times_ms"][frame] for frame in frames]
    small = Volume(cine.array[frames, middle - 1:middle + 1], cine.spacing, cine.origin, cine.direction,
                   {"trigger_times_ms": times})
    path = write_cine(small, tmp_path_factory.mktemp("cine") / "cine.nii.gz")
    return path, frames.index(ed), frames.index(es)


def test_cli_segments_ed_and_es_of_a_cine(tmp_path, capsys, small_cine):
    path, ed, es = small_cine
    out = tmp_path / "labels.nii.gz"
    assert cli(["segment", "--cine", str(path), "--out", str(out), "--frames", "ed,es", "--device", "cpu",
                "--progress", "none"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert (summary["ed_frame"], summary["es_frame"]) == (ed, es)
    labels, cine = read_cine(out), read_cine(path)
    assert labels.array.shape == (2, *cine.spatial_shape) and labels.same_geometry(cine)
    assert labels.metadata["trigger_times_ms"] == [cine.metadata["trigger_times_ms"][f] for f in sorted((ed, es))]
    assert set(np.unique(labels.array)) == {0, 1, 2, 3}
    volumes = summary["lv_blood_volume_ml"]
    assert volumes[str(ed)] > volumes[str(es)] > 0
    sidecar = json.loads(sidecar_path(out).read_text())  # says which source frames the two label frames are
    assert (sidecar["frames"], sidecar["ed_frame"], sidecar["es_frame"]) == (sorted((ed, es)), ed, es)


def test_cli_segments_chosen_frames_and_a_3d_stack(tmp_path, capsys, small_cine):
    path, *_ = small_cine
    out = tmp_path / "frames.nrrd"
    assert cli(["segment", "--cine", str(path), "--out", str(out), "--frames", "3,0", "--progress", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["frames"] == [0, 3]
    assert read_cine(out).array.shape[0] == 2
    stack = tmp_path / "stack.nrrd"
    write_volume(Volume(read_cine(path).array[0], (1.4, 1.4, 8.0)), stack)
    out3d = tmp_path / "stack_labels.nii.gz"
    assert cli(["segment", "--cine", str(stack), "--out", str(out3d), "--progress", "none"]) == 0
    assert read_volume(out3d).array.shape == read_volume(stack).array.shape


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("out of range", "frame {count} is out of range: the cine has {count} frames"),
    ("bad token", "--frames) take 'ed', 'es' and frame numbers"),
    ("ed of a 3D stack", "needs a cine of several frames"),
    ("cine to a MetaImage", "written as 4D NIfTI"),
])
def test_cli_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, small_cine, case, message):
    path, *_ = small_cine
    count = read_cine(path).array.shape[0]
    out = tmp_path / "labels.nii.gz"
    arguments = {"missing": ["--cine", str(tmp_path / "absent.nii.gz")],
                 "out of range": ["--cine", str(path), "--frames", f"0,{count}"],
                 "bad token": ["--cine", str(path), "--frames", "ed,x"],
                 "ed of a 3D stack": ["--cine", str(SUNNYBROOK / "images" / "IM-0009-0040.dcm"), "--frames", "ed"],
                 "cine to a MetaImage": ["--cine", str(path), "--out", str(tmp_path / "labels.mha")]}[case]
    if "--out" not in arguments:
        arguments += ["--out", str(out)]
    assert cli(["segment", *arguments, "--progress", "none"]) == 1
    assert message.format(count=count) in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_training_recipe_writes_a_checkpoint_that_segments(tmp_path):
    config = {
        "description": "test", "data": {"source": "phantom", "train_subjects": 1, "validation_subjects": 1,
                                        "extra_frames": 0},
        "network": {"class": "UNet", "args": {"spatial_dims": 2, "in_channels": 1, "out_channels": 4,
                                              "channels": [4, 8], "strides": [2], "num_res_units": 0}},
        "target_spacing_mm": 3.0, "percentiles": [0.5, 99.5], "augmentation": {"rotate_deg": 90.0},
        "train": {"steps": 2, "batch_size": 2, "patch_size": 32, "lr": 0.001, "ema_decay": 0.9, "seed": 0,
                  "validate_every": 1}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    arguments = ["cine_segmentation", "--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "model")]
    assert train(arguments) == 0
    loaded = CineSegmenter.load(tmp_path / "model", "cpu")
    assert loaded.config["augmentation"]["rotate_deg"] == 90.0
    assert set(loaded.config["training_summary"]["best"]["metrics"]) >= {"dice", "dice_lv_blood", "dice_rv_blood"}
    image = Volume(np.random.default_rng(0).random((2, 40, 30)).astype(np.float32), (1.5, 2.0, 8.0))
    assert loaded.segment(image).array.shape == (2, 40, 30)
    config["augmentation"] = {"spin": 1}
    (tmp_path / "bad.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unknown augmentation setting"):
        train(["cine_segmentation", "--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "bad")])
