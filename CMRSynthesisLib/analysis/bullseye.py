"""The AHA 16-segment bullseye: the standard view from the apex, anterior at the top and the septum on the left;
basal ring outside, mid in the middle, apical inside. Drawn with matplotlib's object API (no pyplot state)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Wedge

from ..display import colormap, display_for, format_value, window
from ..errors import InputError
from ..io.writing import atomic_write_bytes, check_output_paths

_RINGS = {"basal": (2.3, 3.3), "mid": (1.3, 2.3), "apical": (0.0, 1.3)}  # inner, outer radius
_MISSING_COLOUR = (0.85, 0.85, 0.85, 1.0)


def segment_layout(segment: int) -> tuple[str, float, float]:
    """(level, first angle, last angle) of a segment on screen, in degrees counter-clockwise from the right: seen
    from the apex the AHA order 1 -> 6 (anterior -> septum -> inferior) turns counter-clockwise, 1 centred on top."""
    if 1 <= segment <= 12:
        centre, half = 90.0 + 60.0 * ((segment - 1) % 6), 30.0
        level = "basal" if segment <= 6 else "mid"
    elif 13 <= segment <= 16:
        centre, half, level = 90.0 + 90.0 * (segment - 13), 45.0, "apical"
    else:
        raise InputError(f"AHA segments are numbered 1-16; got {segment}")
    return level, centre - half, centre + half


def bullseye_figure(rows: Sequence[dict], *, quantity: str, units: str | None = None, title: str = "",
                    value: str = "mean") -> Figure:
    """A Figure with the 16 segments coloured by `value` ("mean" or "median") of `segment_statistics` rows, the
    value printed in each segment with its number, missing segments grey and hatched, and a colour bar with units
    (`units` defaults to the quantity's, see CMRSynthesisLib.display)."""
    by_segment = {int(row["segment"]): row.get(value) for row in rows}
    if sorted(by_segment) != list(range(1, 17)) or len(rows) != 16:
        raise InputError(f"a bullseye needs one row for each AHA segment 1-16; got segments {sorted(by_segment)}")
    display = display_for(quantity, units)
    units = display.units if units is None else units
    present = np.array([v for v in by_segment.values() if v is not None], dtype=float)
    norm = Normalize(*window(quantity, present, percentiles=(0.0, 100.0)))  # a data window spans all 16 values
    cmap = colormap(quantity)

    figure = Figure(figsize=(6.4, 5.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.02, 0.04, 0.76, 0.86))
    axes.set_aspect("equal")
    axes.set_xlim(-3.85, 3.85)
    axes.set_ylim(-3.85, 3.85)
    axes.axis("off")
    for segment, number in sorted(by_segment.items()):
        level, first, last = segment_layout(segment)
        inner, outer = _RINGS[level]
        missing = number is None
        face = _MISSING_COLOUR if missing else cmap(norm(number))
        axes.add_patch(Wedge((0.0, 0.0), outer, first, last, width=outer - inner, facecolor=face,
                             edgecolor="white", linewidth=2.0, hatch="//" if missing else None))
        middle = np.radians(0.5 * (first + last))
        radius = 0.5 * (inner + outer) if inner > 0 else 0.75
        ink = "black" if missing or _luminance(face) > 0.5 else "white"
        axes.text(radius * np.cos(middle), radius * np.sin(middle) - 0.1,
                  "n/a" if missing else format_value(quantity, number), ha="center", va="center", fontsize=11,
                  fontweight="bold", color=ink)
        axes.text(radius * np.cos(middle), radius * np.sin(middle) + 0.24, str(segment), ha="center", va="center",
                  fontsize=7, color=ink)
    for text, x, y, rotation in (("anterior", 0.0, 3.6, 0), ("inferior", 0.0, -3.6, 0), ("septal", -3.6, 0.0, 90),
                                 ("lateral", 3.6, 0.0, -90)):
        axes.text(x, y, text, ha="center", va="center", fontsize=9, rotation=rotation, color="0.3")

    bar_axes = figure.add_axes((0.82, 0.15, 0.035, 0.64))
    bar = figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=bar_axes)
    bar.set_label(f"{display.label} ({units})" if units else display.label)
    figure.suptitle(title or f"{display.label}: AHA 16 segments ({value})", fontsize=12)
    return figure


def bullseye_png(rows: Sequence[dict], *, dpi: int = 150, **options) -> bytes:
    """`bullseye_figure(rows, **options)` rendered as PNG bytes."""
    buffer = io.BytesIO()
    bullseye_figure(rows, **options).savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def write_bullseye_png(rows: Sequence[dict], path: str | Path, *, protected: Iterable[str | Path] = (),
                       dpi: int = 150, **options) -> Path:
    """Render `bullseye_figure(rows, **options)` to a PNG at `path` atomically; never over a `protected` input."""
    check_output_paths([path], protected=protected, images=False)
    return atomic_write_bytes(path, bullseye_png(rows, dpi=dpi, **options))


def _luminance(rgba: Sequence[float]) -> float:
    return 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
