"""Checkpoint folders: round trip, sha256 verification against config and manifest, refusals."""

import hashlib
import json
import pathlib
import pickle
import re

import pytest
import torch

from CMRSynthesisLib import checkpoints
from CMRSynthesisLib.errors import CheckpointError

CONFIG = {"method": "scar_enhancement", "description": "tiny test model", "network": {"in": 3, "out": 2}}


@pytest.fixture
def state_dict():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2).state_dict()


@pytest.fixture
def saved(tmp_path, state_dict):
    return checkpoints.save_checkpoint(tmp_path / "root" / "tiny", state_dict, CONFIG)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_keeps_tensors_and_config(saved, state_dict):
    loaded, config = checkpoints.load_checkpoint(saved, expected_method="scar_enhancement")
    assert loaded.keys() == state_dict.keys()
    for key, tensor in state_dict.items():
        assert torch.equal(loaded[key], tensor)
    assert {key: config[key] for key in CONFIG} == CONFIG
    assert config["format_version"] == 1
    assert config["weights_sha256"] == _sha(saved / "model.safetensors")
    assert "weights_sha256" not in CONFIG  # the caller's dict is left alone
    text = (saved / "config.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert sorted(path.name for path in saved.iterdir()) == ["config.json", "model.safetensors"]  # no temp files


def test_non_contiguous_tensor_is_saved(tmp_path):
    weight = torch.arange(6.0).reshape(2, 3).t()
    loaded, _ = checkpoints.load_checkpoint(checkpoints.save_checkpoint(tmp_path / "t", {"w": weight}, CONFIG))
    assert torch.equal(loaded["w"], weight)


def test_tampered_weights_are_refused(saved):
    path = saved / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors sha256 .* does not match .*config\.json"):
        checkpoints.load_checkpoint(saved)


def test_tampered_config_is_refused_against_the_manifest(saved):
    manifest = checkpoints.write_manifest(saved.parent)
    config = json.loads((saved / "config.json").read_text())
    config["description"] = "edited"
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json sha256 .* \(from manifest .*manifest\.json\)"):
        checkpoints.load_checkpoint(saved, manifest=manifest)
    # Matched by resolved path too: a relative spelling of the same folder is still checked.
    with pytest.raises(CheckpointError, match="config.json sha256"):
        checkpoints.load_checkpoint(saved / ".." / "tiny", manifest=manifest)


def test_default_manifest_from_environment(saved, monkeypatch):
    checkpoints.write_manifest(saved.parent)
    monkeypatch.setenv("CMRSYNTH_CHECKPOINTS", str(saved.parent))
    assert checkpoints.default_manifest() == saved.parent / "manifest.json"
    assert checkpoints.shipped_checkpoint("tiny") == saved
    checkpoints.load_checkpoint(checkpoints.shipped_checkpoint("tiny"))
    (saved / "config.json").write_text((saved / "config.json").read_text() + " ")
    with pytest.raises(CheckpointError, match="from manifest"):
        checkpoints.load_checkpoint(saved)
    with pytest.raises(CheckpointError, match=r"no shipped checkpoint 'other' .*available: tiny"):
        checkpoints.shipped_checkpoint("other")


def test_default_checkpoint_dir_is_beside_the_package(monkeypatch):
    monkeypatch.delenv("CMRSYNTH_CHECKPOINTS", raising=False)
    package = pathlib.Path(checkpoints.__file__).resolve().parent
    assert checkpoints.default_checkpoint_dir() == package.parent / "Resources" / "checkpoints"


def test_missing_folder_and_file(tmp_path, saved):
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "absent"))):
        checkpoints.load_checkpoint(tmp_path / "absent")
    (saved / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        checkpoints.load_checkpoint(saved)


def test_wrong_method_is_refused(saved):
    with pytest.raises(CheckpointError, match="'scar_enhancement', not 'virtual_lge'"):
        checkpoints.load_checkpoint(saved, expected_method="virtual_lge")


def test_config_without_method_is_refused(tmp_path, state_dict):
    with pytest.raises(CheckpointError, match="method"):
        checkpoints.save_checkpoint(tmp_path / "x", state_dict, {"description": "no method"})


def test_write_manifest_lists_folders_with_hashes(saved, tmp_path):
    (saved.parent / "not_a_checkpoint").mkdir()
    manifest = json.loads(checkpoints.write_manifest(saved.parent).read_text())
    weights, config = saved / "model.safetensors", saved / "config.json"
    assert manifest == {
        "format_version": 1,
        "checkpoints": {"tiny": {
            "method": "scar_enhancement",
            "description": "tiny test model",
            "files": {"model.safetensors": _sha(weights), "config.json": _sha(config)},
            "size_bytes": weights.stat().st_size + config.stat().st_size,
        }},
    }


class _TouchOnUnpickle:
    """Unpickling this creates a marker file: proof that the loader executed pickle code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_pickle_renamed_to_safetensors_is_never_unpickled(saved, tmp_path):
    marker = tmp_path / "unpickled"
    weights = saved / "model.safetensors"
    weights.write_bytes(pickle.dumps(_TouchOnUnpickle(marker)))
    with pytest.raises(CheckpointError, match="sha256"):
        checkpoints.load_checkpoint(saved)
    # Even with a config updated to the pickle's hash, safetensors cannot parse it.
    config = json.loads((saved / "config.json").read_text())
    config["weights_sha256"] = _sha(weights)
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        checkpoints.load_checkpoint(saved)
    assert not marker.exists()


def test_shipped_checkpoint_without_a_manifest_entry_is_refused(saved, monkeypatch, state_dict):
    monkeypatch.setenv("CMRSYNTH_CHECKPOINTS", str(saved.parent))
    with pytest.raises(CheckpointError, match="not listed"):  # no manifest at all
        checkpoints.load_checkpoint(checkpoints.shipped_checkpoint("tiny"))
    checkpoints.write_manifest(saved.parent)
    checkpoints.load_checkpoint(checkpoints.shipped_checkpoint("tiny"))
    checkpoints.save_checkpoint(saved.parent / "added_later", state_dict, CONFIG)
    with pytest.raises(CheckpointError, match="not listed"):  # a folder slipped in after the manifest
        checkpoints.load_checkpoint(checkpoints.shipped_checkpoint("added_later"))
