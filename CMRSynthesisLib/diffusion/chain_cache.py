"""Condition features computed once per sampling chain.

A conditional denoiser that encodes its condition (T1Diff's modality encoder, CPKDM's kinematic encoder and
morphology autoencoder) gets the same condition at every step of a sampling chain, so its encoding need not be
computed again at each step: inside `one_chain()` the features of a condition are reused while the condition tensor
is equal to the last one (the same numbers as computing them again). Everywhere else (training, validation, weights
changing between calls) they are computed every time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch


class ChainCache:
    """`features(key, compute)`: compute() or, inside `one_chain()`, the value last computed for an equal `key`
    (a tensor: the condition the features are computed from). One cache per encoder."""

    def __init__(self) -> None:
        self._active = False
        self._last: tuple[torch.Tensor, Any] | None = None

    @contextlib.contextmanager
    def one_chain(self) -> Iterator[None]:
        """The scope of one sampling chain with fixed weights and no gradients; the cache is emptied on leaving."""
        self._active, self._last = True, None
        try:
            with torch.no_grad():
                yield
        finally:
            self._active, self._last = False, None

    def features(self, key: torch.Tensor, compute: Callable[[], Any]) -> Any:
        if not self._active:
            return compute()
        last = self._last
        if last is not None and last[0].shape == key.shape and torch.equal(last[0], key):
            return last[1]
        value = compute()
        self._last = (key.clone(), value)
        return value
