"""Scar extent per AHA segment, graded as readers grade LGE transmurality: 0 %, 1-25 %, 26-50 %, 51-75 % and
76-100 % of the wall (Cerqueira et al. 2002, the AHA 17-segment statement, recommends this 5-grade scoring of
hyperenhancement; Kim et al., NEJM 2000, relate the grades to recovery after revascularisation).

The extent of a segment is the share of its myocardial voxels that are scar (in %). For a wall of even thickness
that is the mean transmural extent over the segment's radial chords, which is what a reader estimates by eye; a
segment whose scar is patchy gets the same number as one with a thinner transmural band of equal area.
"""

from __future__ import annotations

import numpy as np

from ..volume import Volume
from .aha import AhaSegmentation, segment_statistics
from .bullseye import bullseye_png

GRADE_LABELS = ("0%", "1-25%", "26-50%", "51-75%", "76-100%")


def transmurality_grade(extent_percent: float) -> int:
    """The grade 0-4 of a scar extent in % (0: none; 1: up to 25; 2: up to 50; 3: up to 75; 4: above 75)."""
    if extent_percent <= 0.0:
        return 0
    return 1 + min(3, int(np.ceil(extent_percent / 25.0)) - 1)


def segment_scar_extent(segmentation: AhaSegmentation, scar: np.ndarray | Volume,
                        within: np.ndarray | Volume | None = None) -> list[dict]:
    """16 rows (`aha.segment_statistics` of the scar mask in %): "mean" the segment's scar extent (%), plus "grade"
    (0-4, None where the segment is missing) and "grade_label" (GRADE_LABELS). scar: (z, y, x) bool or 0/1 on the
    segmentation's grid; within: where the scar was looked for (e.g. the slices synthesised; None: everywhere), so
    segments are placed on the whole stack and a segment with no voxel there is missing. InputError as
    `segment_statistics` (another grid)."""
    labels = segmentation.labels
    mask = labels.mask_on_grid(scar, "the scar mask", "the AHA segmentation", allow_empty=True)
    rows = segment_statistics(segmentation, labels.with_array(100.0 * mask.astype(np.float32), units="%"),
                              mask=within)
    for row in rows:
        grade = None if row["missing"] else transmurality_grade(row["mean"])
        row.update(grade=grade, grade_label=None if grade is None else GRADE_LABELS[grade])
    return rows


def transmurality_bullseye_png(rows: list[dict], title: str = "") -> bytes:
    """The AHA bullseye of `segment_scar_extent` rows (or rows with "segment" and "extent_percent"): each segment
    coloured and labelled by its scar extent (%), the grades in the title."""
    values = [{"segment": row["segment"], "mean": row.get("mean", row.get("extent_percent"))} for row in rows]
    return bullseye_png(values, quantity="scar_extent", title=title or "Scar transmurality per AHA segment (%): grades "
                        f"{' / '.join(GRADE_LABELS)}")
