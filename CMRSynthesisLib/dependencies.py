"""What the Slicer extension needs installed, checked without Qt or Slicer: a new enough Python (that is, Slicer),
PyTorch (installed in Slicer through the PyTorch extension, never by pip) and the packages of
Resources/requirements.txt; and the pip constraints that hold the packages Slicer ships at their installed versions.

Importing this module needs only the standard library and `packaging` (both in every Slicer), and it reads on
Python 3.9, so an old Slicer can load the module and say what it lacks.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement

PYTHON_REQUIRED = (3, 11)  # the pinned packages (scikit-image 0.26, matplotlib 3.11) need it: Slicer 5.10 or later
TORCH_REQUIREMENT = ">=2.8"  # MONAI 1.6 needs torch 2.8 or newer
SLICER_OWNED_PACKAGES = ("torch", "SimpleITK", "numpy", "scipy", "pydicom", "Pillow", "packaging", "requests")
"""Packages Slicer ships that requirements.txt could pull in: pip keeps them at their installed versions."""


def python_too_old(version: tuple[int, ...] | None = None) -> str:
    """What to install when Python `version` (default: this one) is older than PYTHON_REQUIRED; empty when it is
    new enough."""
    found = platform.python_version() if version is None else ".".join(map(str, version))
    if (tuple(sys.version_info[:3]) if version is None else tuple(version)) >= PYTHON_REQUIRED:
        return ""
    required = ".".join(map(str, PYTHON_REQUIRED))
    return f"Slicer 5.10 or later (its packages need Python {required} or newer; this Slicer has Python {found})"


def requirement_lines(path: str | Path) -> list[str]:
    """The requirements of a requirements file: its lines without blanks and comments."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def unmet_requirement(requirement: str) -> str | None:
    """`requirement` (a pip requirement line) with the reason, when no installed version satisfies it; else None."""
    parsed = Requirement(requirement)
    try:
        installed = importlib.metadata.version(parsed.name)
    except importlib.metadata.PackageNotFoundError:
        return f"{requirement} (not installed)"
    return None if parsed.specifier.contains(installed, prereleases=True) else f"{requirement} (found {installed})"


def missing(requirements_file: str | Path) -> list[str]:
    """What this Python lacks, as text to show: a new enough Python (Slicer), else every requirement (torch and those
    of `requirements_file`) that no installed version satisfies."""
    if python_too_old():
        return [python_too_old()]
    requirements = [f"torch{TORCH_REQUIREMENT}"] + requirement_lines(requirements_file)
    return [problem for problem in map(unmet_requirement, requirements) if problem]


def installed_versions(names: Iterable[str]) -> dict[str, str]:
    """The installed version of each of `names` that is installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def constraints(names: Iterable[str] = SLICER_OWNED_PACKAGES) -> str:
    """A pip constraints file's text holding each installed package of `names` at its version."""
    return "".join(f"{name}=={version}\n" for name, version in installed_versions(names).items())
