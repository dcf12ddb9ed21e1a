"""Our T1 fit against the scanners' own T1 maps, on every reference box of the real test data.

The boxes and the scanners' medians are read from the data folders' README tables (Testing/Data/*/README.md), so
every box there is checked. Used by Testing/test_t1_real.py (assertions) and benchmarks/t1_scanner_agreement.py
(the README table).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from CMRSynthesisLib.analysis.t1mapping import t1_maps
from CMRSynthesisLib.io import read_volume
from CMRSynthesisLib.io.t1_series import read_t1_series
from CMRSynthesisLib.volume import Volume

DATA = Path(__file__).parent / "Data"
PHILIPS = DATA / "molli_patient_philips"
SHMOLLI = DATA / "shmolli_phantom_siemens"
SHMOLLI_MAP = SHMOLLI / "t1map_series14" / "IM-0003-0002.dcm"


@dataclasses.dataclass
class Box:
    """A reference box: 0-based inclusive rows / cols on one scanner map image, with the scanner's median T1."""

    study: str  # "native", "post" or "shmolli"
    map_file: Path
    region: str
    rows: tuple[int, int]
    cols: tuple[int, int]
    scanner_median_ms: float

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        selected = np.zeros(shape, dtype=bool)
        selected[self.rows[0]:self.rows[1] + 1, self.cols[0]:self.cols[1] + 1] = True
        return selected


def _span(text: str) -> tuple[int, int]:
    low, high = re.split(r"\s*[–-]\s*", text.strip())
    return int(low), int(high)


def _table_rows(readme: Path, header_start: str) -> list[list[str]]:
    """Cells of the markdown table whose header row starts with `header_start`."""
    lines = readme.read_text().splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def reference_boxes() -> list[Box]:
    """Every box of the Philips MOLLI README (native and post-contrast) and the nine ShMOLLI phantom tubes."""
    boxes = []
    for series, map_file, _, region, rows, cols, _, median, _ in _table_rows(PHILIPS / "README.md",
                                                                               "| series | map file"):
        folder = "native" if series == "native" else "postcontrast"
        boxes.append(Box("native" if series == "native" else "post", PHILIPS / folder / f"{map_file}.dcm", region,
                         _span(rows), _span(cols), float(median)))
    for cells in _table_rows(SHMOLLI / "README.md", "| tube | rows"):
        boxes.append(Box("shmolli", SHMOLLI_MAP, f"tube {cells[0]}", _span(cells[1]), _span(cells[2]),
                         float(cells[3])))
    return boxes


def _slice_index(series_reference: Volume, map_image: Volume) -> int:
    """The slice of the series at the scanner map's position."""
    direction = np.reshape(series_reference.direction, (3, 3))
    distance = (np.asarray(map_image.origin) - np.asarray(series_reference.origin)) @ direction[:, 2]
    index = round(float(distance) / series_reference.spacing[2])
    assert 0 <= index < series_reference.spatial_shape[0], f"{map_image.metadata} lies outside the series"
    return index


def fit_boxes(boxes: list[Box]) -> list[dict]:
    """Fit each study once (inside its boxes) and compare every box with the scanner's map.

    One dict per box: study, map file, region, scanner median (README), our median over the pixels whose fit
    succeeded, difference %, how many fits failed, the per-pixel differences % against the scanner map (failed
    pixels left out), and the box's slice index.
    """
    sources = {"native": PHILIPS / "native", "post": PHILIPS / "postcontrast", "shmolli": SHMOLLI}
    results = []
    for study, folder in sources.items():
        chosen = [box for box in boxes if box.study == study]
        series = read_t1_series(folder)
        reference = series.reference()
        mask = np.zeros(reference.spatial_shape, dtype=np.uint8)
        placed = []
        for box in chosen:
            scanner = read_volume(box.map_file)
            z = _slice_index(reference, scanner)
            mask[z][box.mask(mask.shape[1:])] = 1
            placed.append((box, z, scanner.array[0]))
        t1 = t1_maps(series, reference.with_array(mask))["t1"].array
        for box, z, scanner in placed:
            inside = box.mask(scanner.shape)
            fitted = inside & (t1[z] > 0)  # failed fits hold 0
            ours, theirs = t1[z][fitted], scanner[fitted].astype(float)
            median = float(np.median(ours))
            results.append({"study": study, "map_file": box.map_file.name, "region": box.region, "slice": z,
                            "pixels": int(inside.sum()), "failed_fits": int(inside.sum() - fitted.sum()),
                            "scanner_median_ms": box.scanner_median_ms,
                            "scanner_median_recomputed_ms": float(np.median(scanner[inside])), "our_median_ms": median,
                            "difference_percent": 100.0 * (median - box.scanner_median_ms) / box.scanner_median_ms,
                            "pixel_differences_percent": (100.0 * (ours - theirs) / theirs).tolist()})
    return results
