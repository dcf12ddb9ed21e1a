"""The training package on tiny configs: checkpoints that load, exact resume, the recorded command, torchrun DDP."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from CMRSynthesisLib.checkpoints import load_checkpoint, write_manifest
from CMRSynthesisLib.methods import load_method
from training.__main__ import main as train

TINY_DATA = {"source": "phantom", "train_subjects": 2, "validation_subjects": 1}
TINY = {
    "scar_enhancement_segmenter": {
        "description": "test", "data": TINY_DATA, "target_spacing_mm": 3.0, "threshold": 0.5, "dilation_mm": 0.0,
        "network": {"class": "UNet", "args": {"spatial_dims": 2, "in_channels": 1, "out_channels": 1,
                                              "channels": [4, 8], "strides": [2], "num_res_units": 0}},
        "train": {"steps": 4, "batch_size": 2, "patch_size": 64, "lr": 0.001, "ema_decay": 0.9, "seed": 0,
                  "validate_every": 2}},
    "scar_enhancement": {
        "description": "test", "data": TINY_DATA, "crop_size": 32, "roi_margin_px": 2,
        "network": {"class": "DiffusionModelUNet", "args": {"spatial_dims": 2, "in_channels": 2, "out_channels": 1,
                                                            "channels": [8, 8], "attention_levels": [False, False],
                                                            "num_res_blocks": 1, "norm_num_groups": 8}},
        "schedule": {"num_train_timesteps": 1000, "schedule": "linear_beta", "beta_start": 0.0001, "beta_end": 0.02},
        "train": {"steps": 4, "batch_size": 2, "lr": 0.001, "ema_decay": 0.9, "max_timestep": 300,
                  "scar_fraction": 0.5, "seed": 0, "validate_every": 2}},
}


@pytest.fixture
def configs(tmp_path):
    paths = {}
    for recipe, config in TINY.items():
        paths[recipe] = tmp_path / f"{recipe}.json"
        paths[recipe].write_text(json.dumps(config))
    return paths


def test_trained_checkpoints_record_their_command_and_run_the_method(tmp_path, configs):
    for recipe in TINY:
        assert train([recipe, "--config", str(configs[recipe]), "--out", str(tmp_path / recipe)]) == 0
    _, config = load_checkpoint(tmp_path / "scar_enhancement", expected_method="scar_enhancement")
    assert config["command"].startswith("python -m training scar_enhancement --config")
    assert 0 < config["blood_reference"] < 1 and config["training_summary"]["steps"] == 4
    assert len(config["training_summary"]["best"]["metrics"]) > 0
    _, seg_config = load_checkpoint(tmp_path / "scar_enhancement_segmenter", expected_method="heart_segmentation")
    assert 0 <= seg_config["training_summary"]["best"]["score"] <= 1
    write_manifest(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["checkpoints"]) == set(TINY)
    method = load_method("scar_enhancement", tmp_path / "scar_enhancement", device="cpu",
                         segmenter=tmp_path / "scar_enhancement_segmenter")
    assert method.config["crop_size"] == 32


def test_resume_continues_exactly_where_training_stopped(tmp_path, configs):
    straight = tmp_path / "straight"
    assert train(["scar_enhancement", "--config", str(configs["scar_enhancement"]), "--out", str(straight)]) == 0
    halves = tmp_path / "halves"
    half = {**TINY["scar_enhancement"], "train": {**TINY["scar_enhancement"]["train"], "steps": 2}}
    (tmp_path / "half.json").write_text(json.dumps(half))
    assert train(["scar_enhancement", "--config", str(tmp_path / "half.json"), "--out", str(halves)]) == 0
    assert train(["scar_enhancement", "--config", str(configs["scar_enhancement"]), "--out", str(halves),
                  "--resume"]) == 0
    first, second = load_file(str(straight / "model.safetensors")), load_file(str(halves / "model.safetensors"))
    assert first.keys() == second.keys()
    assert all((first[k] - second[k]).abs().max() < 1e-6 for k in first)


def test_torchrun_ddp_on_cpu_processes(tmp_path, configs):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "-m", "training", "scar_enhancement", "--config", str(configs["scar_enhancement"]),
               "--out", str(tmp_path / "ddp"), "--device", "cpu"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    _, config = load_checkpoint(tmp_path / "ddp", expected_method="scar_enhancement")
    assert config["training_summary"]["world_size"] == 2
    assert config["command"].startswith("torchrun --nnodes 1 --nproc_per_node 2 -m training scar_enhancement")
    state = load_file(str(tmp_path / "ddp" / "training_state" / "state.safetensors"))
    assert not torch.equal(state["rng.0"], state["rng.1"])  # each rank keeps its own random stream for --resume


def test_resume_without_state_is_an_error(tmp_path, configs):
    with pytest.raises(FileNotFoundError, match="no training state"):
        train(["scar_enhancement", "--config", str(configs["scar_enhancement"]), "--out", str(tmp_path / "x"),
               "--resume"])
