"""Networks rebuilt from a JSON config: every architecture argument lives in the checkpoint's config.json.

A network config is `{"class": <name>, "args": {...constructor arguments...}}` where name is one of NETWORKS.
Only these MONAI classes can be built, so a config can never name arbitrary code.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import AutoencoderKL, BasicUNet, DiffusionModelUNet, PatchDiscriminator, UNet

from ..errors import CheckpointError

NETWORKS: dict[str, type[torch.nn.Module]] = {
    "DiffusionModelUNet": DiffusionModelUNet,
    "UNet": UNet,
    "BasicUNet": BasicUNet,
    "PatchDiscriminator": PatchDiscriminator,
    "AutoencoderKL": AutoencoderKL,
}


def build_network(config: dict[str, Any]) -> torch.nn.Module:
    """Instantiate the network described by `config` ({"class": ..., "args": {...}})."""
    name = config.get("class")
    if name not in NETWORKS:
        raise CheckpointError(f"unknown network class {name!r} in checkpoint config; known: {sorted(NETWORKS)}")
    args = {key: tuple(value) if isinstance(value, list) else value for key, value in config.get("args", {}).items()}
    try:
        return NETWORKS[name](**args)
    except (TypeError, ValueError, AssertionError) as error:
        raise CheckpointError(f"cannot build {name} from the checkpoint config: {error}") from error


def load_weights(network: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Load a state dict strictly; a missing or unexpected tensor is a CheckpointError naming it."""
    result = network.load_state_dict(state_dict, strict=False)
    problems = [f"missing {key}" for key in result.missing_keys] + [f"unexpected {key}" for key in result.unexpected_keys]
    if problems:
        raise CheckpointError("checkpoint weights do not fit the network in its config: " + ", ".join(problems[:5]))
    return network.eval()
