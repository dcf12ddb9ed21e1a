"""Writing volumes without ever touching the inputs: protected paths are refused, writes are atomic."""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterable, Sequence
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


def same_file(first: str | Path, second: str | Path) -> bool:
    """True when both paths name one file (after symlinks; hard links count too)."""
    first, second = Path(first).expanduser(), Path(second).expanduser()
    if first.resolve() == second.resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes to a temporary file beside `path`, then move it into place in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}-{uuid.uuid4().hex[:12]}.partial")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def check_output_paths(paths: Sequence[str | Path], *, protected: Iterable[str | Path] = (),
                       overwrite: bool = True, images: bool = True) -> list[str]:
    """Refuse (OutputError) output paths that could not or must not be written: an unknown image type (when
    `images`; other files: any name), a folder, one of the `protected` inputs, a path given twice, an existing
    file when `overwrite` is False, or a path whose folder cannot be made or written (see `check_writable_folder`).
    Returns each path's suffix. Call it before long work, so bad outputs fail fast."""
    protected, paths = list(protected), [Path(path) for path in paths]
    suffixes, probed = [], set()
    for index, path in enumerate(paths):
        suffix = itk_suffix(path, WRITE_SUFFIXES) if images else path.suffix
        if suffix is None:
            raise OutputError(f"{path}: unknown output type; use one of {', '.join(WRITE_SUFFIXES)}")
        for source in protected:
            if same_file(path, source):
                raise OutputError(f"{path}: refusing to overwrite the input file {source}; choose another output path")
        if path.is_dir():
            raise OutputError(f"{path}: is a folder; give a file name")
        if path.exists() and not overwrite:
            raise OutputError(f"{path}: already exists and overwriting was not allowed")
        if any(same_file(path, other) for other in paths[:index]):
            raise OutputError(f"{path}: given for two outputs; choose distinct output paths")
        folder = path.absolute().parent
        if folder not in probed:
            check_writable_folder(folder, path)
            probed.add(folder)
        suffixes.append(suffix)
    return suffixes


def check_writable_folder(folder: str | Path, path: str | Path) -> None:
    """Raise OutputError unless files can be written in `folder`, or it can be made: its nearest existing ancestor
    must be a folder (not a file) in which a file can really be created. The check creates and removes an empty
    temporary file there, since permission bits do not tell (root may write anywhere they forbid, and read-only
    file systems allow nothing). path: the output the folder is for, named in the message."""
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{path}: cannot be written: {existing} is a file, not a folder; choose another output path")
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".cmrsynth-write-check-", dir=existing)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{path}: cannot be written: no file can be created in {existing} ({err.strerror}); "
                          "choose another output folder") from err


def write_volumes(items: Sequence[tuple[Volume, str | Path]], *, protected: Iterable[str | Path] = (),
                  overwrite: bool = True) -> list[Path]:
    """Write several volumes all or nothing: every path is checked (`check_output_paths`), every image goes to a
    temporary file in its target folder, and only when all are written do they move into place.
    NIfTI (.nii, .nii.gz), NRRD (.nrrd) or MetaImage (.mha) by extension; dtypes kept (bool stored as uint8)."""
    paths = [Path(path) for _, path in items]
    suffixes = check_output_paths(paths, protected=protected, overwrite=overwrite)
    temporaries: list[Path] = []
    try:
        for (volume, _), path, suffix in zip(items, paths, suffixes):
            try:
                image = to_sitk(volume)
            except (TypeError, RuntimeError) as err:
                raise OutputError(f"{path}: cannot store an array of dtype {volume.array.dtype} "
                                  f"({error_reason(err)})") from err
            temporary = path.with_name(f".{path.name[:-len(suffix)]}-{uuid.uuid4().hex[:12]}.partial{suffix}")
            temporaries.append(temporary)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                sitk.WriteImage(image, str(temporary), useCompression=suffix != ".nii")
            except (RuntimeError, OSError) as err:
                raise OutputError(f"{path}: could not be written ({error_reason(err)})") from err
        for temporary, path in zip(temporaries, paths):
            os.replace(temporary, path)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
    return paths


def write_volume(volume: Volume, path: str | Path, *, protected: Iterable[str | Path] = (),
                 overwrite: bool = True) -> Path:
    """Write one volume atomically; see `write_volumes` (refuses protected inputs, keeps the dtype)."""
    return write_volumes([(volume, path)], protected=protected, overwrite=overwrite)[0]
