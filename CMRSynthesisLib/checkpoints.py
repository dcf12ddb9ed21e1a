"""Checkpoint folders: `model.safetensors` (weights only: no pickle, nothing executable) + `config.json`.

config.json holds the method name, network config, normalisation, schedule, training data and command, metrics,
plus `weights_sha256` (of model.safetensors) and `format_version`. Shipped checkpoints live in
`Resources/checkpoints/<name>/`, listed with the sha256 of both files in `Resources/checkpoints/manifest.json`.
Loading verifies every hash it has and refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError

from .errors import CheckpointError
from .io.writing import atomic_write_bytes, file_sha256

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
CHECKPOINTS_ENV = "CMRSYNTH_CHECKPOINTS"


def default_checkpoint_dir() -> Path:
    """The folder of shipped checkpoints: $CMRSYNTH_CHECKPOINTS if set, else <repo>/Resources/checkpoints."""
    override = os.environ.get(CHECKPOINTS_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "Resources" / "checkpoints"


def default_manifest() -> Path:
    """The manifest of the shipped checkpoints, default_checkpoint_dir() / manifest.json."""
    return default_checkpoint_dir() / MANIFEST_FILE


def _checkpoint_names(root: Path) -> list[str]:
    """Names of the sub-folders of `root` that hold a config.json, sorted."""
    if not root.is_dir():
        return []
    return sorted(child.name for child in root.iterdir() if (child / CONFIG_FILE).is_file())


def shipped_checkpoint(name: str) -> Path:
    """The folder of the shipped checkpoint `name`; CheckpointError listing the available ones if absent."""
    root = default_checkpoint_dir()
    folder = root / name
    if not (folder / CONFIG_FILE).is_file():
        available = ", ".join(_checkpoint_names(root)) or "none"
        raise CheckpointError(f"no shipped checkpoint '{name}' in {root} (available: {available})")
    return folder


def _json_bytes(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{what} {path} is not readable JSON ({error})") from error
    if not isinstance(value, dict):
        raise CheckpointError(f"{what} {path} must hold a JSON object, not {type(value).__name__}")
    return value


def _read_config(folder: Path) -> dict[str, Any]:
    """config.json of a checkpoint folder, which must name its method."""
    config = _read_json(folder / CONFIG_FILE, "checkpoint config")
    if not isinstance(config.get("method"), str):
        raise CheckpointError(f"checkpoint config {folder / CONFIG_FILE} has no \"method\" name")
    return config


def _require_files(folder: Path) -> None:
    for file_name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (folder / file_name).is_file():
            raise CheckpointError(f"checkpoint {folder} is incomplete: {folder / file_name} is missing")


def _require_hash(folder: Path, file_name: str, expected: Any, source: str) -> None:
    got = file_sha256(folder / file_name)
    if got != expected:
        raise CheckpointError(f"checkpoint {folder}: {file_name} sha256 {got} does not match {expected} "
                              f"(from {source}): the file was modified or corrupted; restore it or retrain")


def save_checkpoint(folder: str | Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write `state_dict` (moved to CPU, made contiguous) as model.safetensors and `config` plus
    weights_sha256 and format_version as config.json (indent 2, sorted keys), each atomically. Returns the folder.
    `config` must name the "method" and be JSON-serialisable; the caller's dict is not changed."""
    folder = Path(folder)
    if not isinstance(config.get("method"), str):
        raise CheckpointError(f"the config of checkpoint {folder} needs a \"method\" name")
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state_dict entry '{key}' is a {type(value).__name__}, not a tensor")
    weights = safetensors.torch.save({key: value.detach().cpu().contiguous() for key, value in state_dict.items()})
    config_data = _json_bytes({**config, "weights_sha256": hashlib.sha256(weights).hexdigest(),
                               "format_version": FORMAT_VERSION})
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / WEIGHTS_FILE, weights)
    atomic_write_bytes(folder / CONFIG_FILE, config_data)
    return folder


def _manifest_entry(folder: Path, manifest: Path) -> dict[str, Any] | None:
    """The manifest's entry for `folder` (matched as manifest-dir / name, resolved), or None if not listed."""
    checkpoints = _read_json(manifest, "checkpoint manifest").get("checkpoints")
    if not isinstance(checkpoints, dict):
        raise CheckpointError(f"checkpoint manifest {manifest} has no \"checkpoints\" object")
    target = folder.resolve()
    for name, entry in checkpoints.items():
        if (manifest.parent / name).resolve() == target:
            return entry
    return None


def load_checkpoint(folder: str | Path, *, manifest: str | Path | None = None,
                    expected_method: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict on CPU, config) of a checkpoint folder, after verifying it.

    manifest: the manifest to check against; None means default_manifest(). A shipped checkpoint (a folder in
    default_checkpoint_dir()) must be listed in the manifest; any listed folder must match the sha256 of both its
    files; the weights must always match config["weights_sha256"]. expected_method: refuse another method's.
    Raises CheckpointError naming the path and the reason.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    _require_files(folder)
    manifest_path = default_manifest() if manifest is None else Path(manifest)
    entry = None
    if manifest is not None or manifest_path.is_file():
        entry = _manifest_entry(folder, manifest_path)
        if entry is not None:
            files = entry.get("files") or {}
            for file_name in (WEIGHTS_FILE, CONFIG_FILE):
                _require_hash(folder, file_name, files.get(file_name), f"manifest {manifest_path}")
    if entry is None and folder.resolve().parent == default_checkpoint_dir().resolve():
        raise CheckpointError(f"shipped checkpoint {folder} is not listed in {manifest_path}, so its sha256 cannot be "
                              "verified; restore the manifest or rewrite it with `python -m training manifest`")
    config = _read_config(folder)
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {folder} has format_version {config.get('format_version')!r}; "
                              f"this version of CMRSynthesis reads format_version {FORMAT_VERSION}")
    _require_hash(folder, WEIGHTS_FILE, config.get("weights_sha256"), f"{CONFIG_FILE} weights_sha256")
    if expected_method is not None and config["method"] != expected_method:
        raise CheckpointError(f"checkpoint {folder} is for method '{config['method']}', not '{expected_method}'")
    try:
        state_dict = safetensors.torch.load_file(folder / WEIGHTS_FILE, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {folder}: {WEIGHTS_FILE} is not a valid safetensors file ({error})") from error
    return state_dict, config


def write_manifest(checkpoint_root: str | Path) -> Path:
    """Write checkpoint_root/manifest.json listing every sub-folder with a config.json: method, description,
    sha256 of both files and their total size in bytes. Refuses a folder whose weights do not match its config."""
    root = Path(checkpoint_root)
    checkpoints = {}
    for name in _checkpoint_names(root):
        folder = root / name
        _require_files(folder)
        config = _read_config(folder)
        _require_hash(folder, WEIGHTS_FILE, config.get("weights_sha256"), f"{CONFIG_FILE} weights_sha256")
        files = [WEIGHTS_FILE, CONFIG_FILE]
        checkpoints[name] = {
            "method": config["method"],
            "description": config.get("description"),
            "files": {file_name: file_sha256(folder / file_name) for file_name in files},
            "size_bytes": sum((folder / file_name).stat().st_size for file_name in files),
        }
    path = root / MANIFEST_FILE
    atomic_write_bytes(path, _json_bytes({"format_version": FORMAT_VERSION, "checkpoints": checkpoints}))
    return path
