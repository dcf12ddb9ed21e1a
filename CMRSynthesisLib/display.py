"""Display conventions shared by the figures and the Slicer overlays: colour map, window, label and units per
quantity.

T1 maps use lipari, the colour map recommended for T1 (Fuderer et al., "Color-map recommendation for MR
relaxometry maps", MRM 2025), and T2 maps navia, from the same recommendation; both from cmcrameri. The
recommendation's logarithmic remapping of the colour map is not applied: the windows here start at 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from cmcrameri import cm as crameri
from matplotlib.colors import Colormap

from .errors import InputError


@dataclasses.dataclass(frozen=True)
class Display:
    """How to show one quantity. window: (low, high) in `units`, or None to take it from the data."""

    quantity: str
    label: str
    units: str
    colormap_name: str  # a cmcrameri colour map
    window: tuple[float, float] | None
    decimals: int | None  # for printed values; None: three significant digits


_DISPLAYS = {
    "t1_native": Display("t1_native", "native T1", "ms", "lipari", (0.0, 2000.0), 0),
    "t1_post": Display("t1_post", "post-contrast T1", "ms", "lipari", (0.0, 1000.0), 0),
    "ecv": Display("ecv", "ECV", "%", "batlow", (0.0, 100.0), 1),
    "t2": Display("t2", "T2", "ms", "navia", (0.0, 100.0), 0),
    # signed: a diverging map centred on 0 (shortening blue, lengthening red)
    "peak_circumferential_strain": Display("peak_circumferential_strain", "peak circumferential strain", "%", "vik",
                                           (-30.0, 30.0), 1),
    "scar_extent": Display("scar_extent", "scar extent", "%", "lajolla", (0.0, 100.0), 0),
    "radial_strain": Display("radial_strain", "radial strain", "1", "vik", (-0.6, 0.6), 2),
    "circumferential_strain": Display("circumferential_strain", "circumferential strain", "1", "vik", (-0.3, 0.3), 2),
}
_ALIASES = {"t1": "t1_native"}  # a T1 map of unknown timing is shown as a native one


def display_for(quantity: str, units: str | None = None) -> Display:
    """Display settings of `quantity` ("t1_native", "t1_post", "ecv", "t2"; "t1" counts as native). Any other
    quantity gets batlow, a window from its data, and `units` (default empty)."""
    known = _DISPLAYS.get(_ALIASES.get(quantity, quantity))
    if known is not None:
        return known
    return Display(quantity, quantity.replace("_", " "), units or "", "batlow", None, None)


def colormap(quantity: str) -> Colormap:
    """The matplotlib colour map of `quantity`."""
    return getattr(crameri, display_for(quantity).colormap_name)


def colour_table(quantity: str, entries: int = 256) -> np.ndarray:
    """(entries, 4) float RGBA in [0, 1], the window's low end first (for Slicer colour nodes)."""
    if entries < 2:
        raise InputError(f"a colour table needs at least 2 entries; got {entries}")
    return np.asarray(colormap(quantity)(np.linspace(0.0, 1.0, entries)), dtype=float)


def window(quantity: str, values: np.ndarray | None = None, *,
           percentiles: tuple[float, float] = (1.0, 99.0)) -> tuple[float, float]:
    """(low, high) display window: the quantity's fixed one, else these percentiles of the finite `values`."""
    fixed = display_for(quantity).window
    if fixed is not None:
        return fixed
    finite = np.asarray([] if values is None else values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise InputError(f"no fixed display window for {quantity!r} and no finite values to take one from")
    low, high = (float(v) for v in np.percentile(finite, percentiles))
    return (low, high) if high > low else (low - 0.5, low + 0.5)


def format_value(quantity: str, value: float) -> str:
    """A value printed with the quantity's precision (no units)."""
    decimals = display_for(quantity).decimals
    return f"{value:.3g}" if decimals is None else f"{value:.{decimals}f}"
