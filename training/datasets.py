"""Labelled 2D short-axis slices for training: from the synthetic phantom, or from real data laid out as folders.

Real data layout (ACDC / MyoPS / M&Ms-style, one folder per case): `<root>/<case>/lge.nii.gz` (or .nrrd) and
`<root>/<case>/labels.nii.gz`, with label values given in the data config ("labels": {"myocardium": 2, "scar": 3,
"blood": 1}); cases are split by sorted name with the config's "validation_fraction".
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import json
import multiprocessing
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from CMRSynthesisLib import phantom
from CMRSynthesisLib.io import read_volume
from CMRSynthesisLib.io.writing import atomic_write_bytes
from CMRSynthesisLib.volume import Volume

TISSUES = ("myocardium", "scar", "blood")


@dataclasses.dataclass
class LabelledSlices:
    """2D slices (each (y, x), float32, shapes may differ) with boolean tissue masks and pixel spacing (sy, sx) mm."""

    images: list[np.ndarray] = dataclasses.field(default_factory=list)
    masks: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=lambda: {t: [] for t in (*TISSUES, "heart_roi")})
    spacing_yx: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    case: list[str] = dataclasses.field(default_factory=list)

    def add_stack(self, image: Volume, tissue: dict[str, np.ndarray], case: str) -> None:
        """Add every slice of a stack whose heart ROI (union of the tissues) is not empty."""
        heart = tissue["myocardium"] | tissue["scar"] | tissue["blood"]
        for index in np.flatnonzero(heart.reshape(len(heart), -1).any(axis=1)):
            self.images.append(image.array[index].astype(np.float32))
            for name in TISSUES:
                self.masks[name].append(tissue[name][index])
            self.masks["heart_roi"].append(heart[index])
            self.spacing_yx.append((image.spacing[1], image.spacing[0]))
            self.case.append(case)

    def __len__(self) -> int:
        return len(self.images)


def phantom_slices(split: str, count: int) -> LabelledSlices:
    """LGE slices of the first `count` phantom subjects of a split ("train", "validation", "test")."""
    slices = LabelledSlices()
    for subject_id in phantom.subject_ids(split, count):
        study = phantom.lge_study(subject_id)
        slices.add_stack(study["lge"], {name: study["masks"][name] for name in TISSUES}, f"phantom-{subject_id}")
    return slices


def split_cases(cases: list[Path], split: str, validation_fraction: float) -> list[Path]:
    """The cases of `split` ("train" or "validation"): sorted by name, the last `validation_fraction` (at least one)
    held out for validation. ValueError when fewer than two cases leave none for one of them."""
    cases = sorted(cases)
    if len(cases) < 2:
        raise ValueError(f"training needs at least 2 cases (one for validation); found {len(cases)}")
    held_out = min(len(cases) - 1, max(1, round(len(cases) * validation_fraction)))
    return cases[-held_out:] if split == "validation" else cases[:-held_out]


def folder_slices(root: Path, labels: dict[str, int], split: str, validation_fraction: float) -> LabelledSlices:
    """LGE slices of the cases under `root` that fall in `split` ("train" or "validation")."""
    chosen = split_cases([path for path in Path(root).iterdir() if path.is_dir()], split, validation_fraction)
    slices = LabelledSlices()
    for case in chosen:
        image = read_volume(_one(case, "lge"))
        label_map = read_volume(_one(case, "labels"))
        image.require_same_geometry(label_map, f"{case.name}: LGE and labels")
        slices.add_stack(image, {name: label_map.array == labels[name] for name in TISSUES}, case.name)
    return slices


def _one(case: Path, stem: str) -> Path:
    matches = sorted(case.glob(f"{stem}.*"))
    if not matches:
        raise FileNotFoundError(f"{case}: no {stem}.nii.gz / {stem}.nrrd")
    return matches[0]


def load_slices(data: dict[str, Any], split: str) -> LabelledSlices:
    """Slices for a data config: {"source": "phantom", "train_subjects": n, "validation_subjects": n} or
    {"source": "folders", "root": path, "labels": {...}, "validation_fraction": f}."""
    if data["source"] == "phantom":
        return phantom_slices(split, data[f"{split}_subjects"])
    if data["source"] == "folders":
        return folder_slices(Path(data["root"]), data["labels"], split, data.get("validation_fraction", 0.15))
    raise ValueError(f"unknown data source {data['source']!r}; use 'phantom' or 'folders'")


SubjectRows = Callable[[int], dict[str, list[np.ndarray]]]
"""One phantom subject's examples: subject id -> {array name: one array per example (slice)}."""


def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


def render_workers(config: dict[str, Any]) -> int:
    """The processes that render a recipe's phantom examples: config["data"]["render_workers"] (default 1; set by
    `python -m training ... --render-workers N`)."""
    return int(config["data"].get("render_workers", 1))


def subject_examples(subject_ids: Sequence[int], rows_of: SubjectRows, workers: int = 1) -> dict[str, np.ndarray]:
    """The examples of several subjects, stacked per array name in the order of `subject_ids` (so any number of
    workers gives the same arrays, up to the rounding of multi-threaded floating-point sums). rows_of(subject_id) gives
    one subject's rows; workers > 1 renders the subjects in that many processes (spawned, one torch thread each), so
    rows_of must be picklable: a module-level function or a functools.partial of one. ValueError when no subject
    gives an example."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1 or len(subject_ids) < 2:
        parts = [rows_of(subject_id) for subject_id in subject_ids]
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(workers, len(subject_ids)), initializer=_one_torch_thread) as pool:
            parts = pool.map(rows_of, subject_ids, chunksize=1)
    names = list(parts[0]) if parts else []
    rows = {name: [row for part in parts for row in part[name]] for name in names}
    if not names or not rows[names[0]]:
        raise ValueError(f"no examples in phantom subjects {list(subject_ids)}")
    return {name: np.stack(value) for name, value in rows.items()}


def cached_arrays(cache: Path | None, prefix: str, settings: Any, make: Callable[[], dict[str, np.ndarray]], *,
                  code: Sequence[ModuleType | Callable] = ()) -> dict[str, np.ndarray]:
    """Arrays made by `make()`, read from / written to the folder `cache` as `<prefix>_<key>.npz`, the key a hash of
    `settings` (JSON) and of the source of the `code` modules and functions (those that make the arrays: a change to
    them makes new arrays instead of reading stale ones), so models trained on the same examples (a method, its
    baselines, its ablations) render them once. No cache (None): just make them. The file holds our own arrays and
    is read without pickle."""
    if cache is None:
        return make()
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for piece in code:
        digest.update(inspect.getsource(piece).encode())
    path = Path(cache) / f"{prefix}_{digest.hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as stored:  # allow_pickle stays False
            return {name: stored[name] for name in stored.files}
    arrays = make()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return arrays
