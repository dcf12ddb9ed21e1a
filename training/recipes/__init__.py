"""Training recipes: one module per method in this package, found by discovery (nothing to register by hand).

A recipe is a function `recipe(config, out, context, resume) -> (weights, checkpoint_config)`: it trains from the
parsed config JSON into the folder `out` (continuing from `out/training_state` when `resume` is true) on the process
described by `context` (training.distributed.Context), and returns the product weights (a flat dict of tensors) and
what `config.json` of the checkpoint should say (at least its "method"); `python -m training` adds the command, the
config's data/train sections and writes the checkpoint.

A module declares its recipes in either (or both) of two ways:

    RECIPES = {"my_method": train_my_method}          # a module-level dict: name -> recipe function

    @recipe("my_method")                               # or the decorator, on the function itself
    def train_my_method(config, out, context, resume): ...

`discover()` imports every module of this package (pkgutil over its __path__; names starting with "_" are skipped)
and collects both. Adding a recipe = adding its module here; nothing else changes. A name declared twice, or a name
that `python -m training` reserves for itself ("manifest", "list"), is an error.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ..distributed import Context

Recipe = Callable[[dict[str, Any], Path, "Context", bool], tuple[dict[str, torch.Tensor], dict[str, Any]]]

RESERVED = ("manifest", "list")  # sub-commands of `python -m training`, not recipes

_DECORATED: dict[str, Recipe] = {}


def recipe(name: str) -> Callable[[Recipe], Recipe]:
    """Decorator declaring `name` as a recipe; the function is returned unchanged."""
    def register(function: Recipe) -> Recipe:
        _check_name(name, function)
        previous = _DECORATED.get(name)
        if previous is not None and previous is not function and _where(previous) != _where(function):
            raise ValueError(f"training recipe {name!r} is declared twice: {_where(previous)} and {_where(function)}")
        _DECORATED[name] = function
        return function
    return register


def _where(function: Callable) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', '?')}"


def _check_name(name: object, function: object) -> None:
    if not isinstance(name, str) or not name or name.startswith("-"):
        raise ValueError(f"a training recipe needs a non-empty name; got {name!r}")
    if name in RESERVED:
        raise ValueError(f"{name!r} is a sub-command of `python -m training`, not a recipe name")
    if not callable(function):
        raise TypeError(f"training recipe {name!r} is not a function: {function!r}")


def discover() -> dict[str, Recipe]:
    """Every recipe of the modules in this package, sorted by name. An import error of a recipe module propagates
    (a broken recipe is reported, not silently left out); a name declared by two different functions is a
    ValueError."""
    found: dict[str, Recipe] = {}

    def add(name: str, function: Recipe, source: str) -> None:
        _check_name(name, function)
        if name in found and found[name] is not function:
            raise ValueError(f"training recipe {name!r} is declared twice: {_where(found[name])} and {_where(function)}"
                             f" (in {source})")
        found[name] = function

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        declared = getattr(module, "RECIPES", {})
        if not isinstance(declared, dict):
            raise TypeError(f"{module.__name__}.RECIPES must be a dict of name -> recipe function")
        for name, function in declared.items():
            add(name, function, module.__name__)
    for name, function in _DECORATED.items():
        add(name, function, "@recipe")
    return dict(sorted(found.items()))


def summary(function: Recipe) -> str:
    """The first line of a recipe's docstring (for `python -m training list`)."""
    doc = (function.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
