"""Spectral clustering of per-pixel T1 recovery curves (CPKDM's MR-ESMP, paper 000, section 2.2 and eq. 3).

Each pixel of a slice is described by its recovery curve on common inversion times (`relaxation.recovery_curves`)
and a sinusoidal positional encoding. The paper's eq. 3 is the transformer encoding (Vaswani et al. 2017),
PE(t, 2j) = sin(t / 10000^(2j/d)), PE(t, 2j+1) = cos(...). An encoding of the sample index alone is the same for
every pixel and leaves every distance between pixels unchanged, so here (chosen) the encoding is of the pixel's
row and column (d dimensions each; the paper's encoding is of its 3-D index, ours of the 2-D slice), weighted by
`position_weight`, with positions scaled to [0, pi] over the clustered region's extent so that the encoding distance
grows with the distance between pixels over the whole region (raw pixel positions at the rate 1 rad per pixel wrap
around and make a pixel 6 apart look nearer than one 2 apart): neighbouring pixels with alike curves fall together,
which keeps the clusters spatially coherent as the paper's masks are. The
clustering itself is scikit-learn's SpectralClustering on a k-nearest-neighbour affinity graph, with
`cluster_qr` label assignment (deterministic for a seed). Clusters are numbered canonically by recovery, fastest
first (largest mean s over the inversion times: short T1), so label k means the same kind of tissue in every slice
and every study.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

DEFAULT_CLUSTERS = 4
DEFAULT_ENCODING_DIMS = 8  # per axis: d / 2 = 4 sines and cosines of the row, as many of the column
DEFAULT_POSITION_WEIGHT = 0.3  # chosen: an encoding vector has norm sqrt(d / 2); curves differ by about 0.1-1
DEFAULT_NEIGHBOURS = 10
MAX_PIXELS = 20000  # spectral clustering is quadratic-ish in memory: cluster a heart crop, not a whole slice


def positional_encoding(positions: np.ndarray, dims: int) -> np.ndarray:
    """Sinusoidal encoding (paper 000 eq. 3; Vaswani et al. 2017) of positions (p,) -> (p, dims) float64:
    column 2j = sin(pos / 10000^(2j/dims)), column 2j+1 = cos(...). dims must be even and positive."""
    if dims <= 0 or dims % 2:
        raise InputError(f"the positional encoding needs an even, positive number of dimensions; got {dims}")
    rates = 1.0 / 10000.0 ** (np.arange(0, dims, 2) / dims)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * rates[None, :]
    encoding = np.empty((angles.shape[0], dims))
    encoding[:, 0::2], encoding[:, 1::2] = np.sin(angles), np.cos(angles)
    return encoding


def curve_features(curves: np.ndarray, mask: np.ndarray, *, encoding_dims: int = DEFAULT_ENCODING_DIMS,
                   position_weight: float = DEFAULT_POSITION_WEIGHT) -> np.ndarray:
    """Feature vectors of the pixels of `mask` (row-major order): the curve (n values) then position_weight times
    the encodings of row and column (encoding_dims each), each position scaled to [0, pi] over the mask's extent.
    curves: (n, y, x); mask: (y, x) bool -> (p, n + 2 dims)."""
    rows, cols = np.nonzero(mask)
    parts = [np.asarray(curves, dtype=np.float64)[:, rows, cols].T]
    if position_weight > 0:
        for positions in (rows, cols):
            scaled = np.pi * (positions - positions.min()) / max(int(np.ptp(positions)), 1)
            parts.append(position_weight * positional_encoding(scaled, encoding_dims))
    return np.concatenate(parts, axis=1)


def cluster_curves(curves: np.ndarray, mask: np.ndarray, *, clusters: int = DEFAULT_CLUSTERS,
                   encoding_dims: int = DEFAULT_ENCODING_DIMS, position_weight: float = DEFAULT_POSITION_WEIGHT,
                   neighbours: int = DEFAULT_NEIGHBOURS, seed: int = 0) -> np.ndarray:
    """Cluster mask of one slice: (y, x) uint8, 0 outside `mask`, 1..clusters ordered by recovery (fastest first).

    curves: (n, y, x) recovery curves (`relaxation.recovery_curves`); mask: (y, x) bool, the pixels to cluster
    (fitted pixels of the heart region; at most MAX_PIXELS). InputError for mismatched shapes, too few pixels for
    the clusters and neighbours asked, or too many pixels.
    """
    curves = np.asarray(curves)
    mask = np.asarray(mask, dtype=bool)
    if curves.ndim != 3 or curves.shape[1:] != mask.shape:
        raise InputError(f"curves of shape {curves.shape} and a mask of shape {mask.shape} do not match: the curves "
                         "must be (n, y, x) over the mask's (y, x) pixels")
    if clusters < 2:
        raise InputError(f"spectral clustering needs at least 2 clusters; got {clusters}")
    pixels = int(mask.sum())
    if pixels < max(clusters, neighbours + 1):
        raise InputError(f"the mask holds {pixels} pixels: too few for {clusters} clusters of {neighbours} "
                         "neighbours each")
    if pixels > MAX_PIXELS:
        raise InputError(f"the mask holds {pixels} pixels; cluster a heart region of at most {MAX_PIXELS}")
    from sklearn.cluster import SpectralClustering

    features = curve_features(curves, mask, encoding_dims=encoding_dims, position_weight=position_weight)
    labels = SpectralClustering(n_clusters=clusters, affinity="nearest_neighbors", n_neighbors=neighbours,
                                assign_labels="cluster_qr", random_state=seed).fit_predict(features)
    recovery = np.array([curves[:, mask][:, labels == k].mean() if np.any(labels == k) else -np.inf
                         for k in range(clusters)])
    rank = np.empty(clusters, dtype=np.uint8)
    rank[np.argsort(-recovery, kind="stable")] = np.arange(1, clusters + 1, dtype=np.uint8)
    out = np.zeros(mask.shape, dtype=np.uint8)
    out[mask] = rank[labels]
    return out
