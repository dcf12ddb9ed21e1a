"""Writing volumes without ever touching the inputs: protected paths are refused, writes are atomic."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import SimpleITK as sitk

from ..errors import OutputError
from ..volume import Volume
from .itk_files import WRITE_SUFFIXES, error_reason, itk_suffix, to_sitk


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_file(first: Path, second: Path) -> bool:
    """True when both paths name one file (after symlinks; hard links count too)."""
    if first.resolve() == second.resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def write_volume(volume: Volume, path: str | Path, *, protected: Iterable[str | Path] = (),
                 overwrite: bool = True) -> Path:
    """Write `volume` as NIfTI (.nii, .nii.gz), NRRD (.nrrd) or MetaImage (.mha), chosen by the extension.

    Refuses (OutputError) to write onto any file in `protected` (pass the inputs) and onto an existing file
    when `overwrite` is False. The image goes to a temporary file in the target folder that then replaces
    the target in one step, so a failed write leaves no partial file. Parent folders are created; the array
    dtype is kept (bool is stored as uint8). Returns the path written.
    """
    path = Path(path)
    suffix = itk_suffix(path, WRITE_SUFFIXES)
    if suffix is None:
        raise OutputError(f"{path}: unknown output type; use one of {', '.join(WRITE_SUFFIXES)}")
    for source in protected:
        if _same_file(path, Path(source)):
            raise OutputError(f"{path}: refusing to overwrite the input file {source}; choose another output path")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists and overwriting was not allowed")
    try:
        image = to_sitk(volume)
    except (TypeError, RuntimeError) as err:
        raise OutputError(f"{path}: cannot store an array of dtype {volume.array.dtype} ({error_reason(err)})") from err
    temporary = path.with_name(f".{path.name[:-len(suffix)]}-{uuid.uuid4().hex[:12]}.partial{suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(temporary), useCompression=suffix != ".nii")
        os.replace(temporary, path)
    except (RuntimeError, OSError) as err:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"{path}: could not be written ({error_reason(err)})") from err
    return path
