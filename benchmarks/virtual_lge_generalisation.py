"""Does a virtual-LGE model learn the rule that finds the infarct (bright where T1 is raised and the wall moves less), or
memorise its training slices? Each model on training slices and on held-out validation slices alike.

Examples: the training recipe's own cached crops (`training.recipes.virtual_lge.cached_phantom_examples` with
`--config`; rendered into the config's cache when absent): the first `--train-slices` training slices and every
validation slice (subjects never trained on), with the phantom's true myocardium and scar on the 64 x 64 crop.

Per model (`--checkpoints`, each a virtual-LGE checkpoint folder with the shipped LGE autoencoder):
- pix2pix: its output;
- diffusion variants: the "conditional mean", the x0 the network predicts in one step from pure noise at the last
  timestep (what its loss makes the mean of the LGE given the inputs, with no sampling chain in the way), and one
  DDIM sample (50 steps, eta 1, seed 0 per slice, as the evaluation's default).
Metrics on the crop, LGE in [0, 1]: PSNR over the crop (all slices), and on the slices with scar the mean intensity
of the true scar and of the remote myocardium, the scar rule's Dice (> SCAR_THRESHOLD inside the true myocardium)
and the best Dice any one threshold in 0.10..0.85 reaches (whether the infarct is there but dim, or not there).

    python benchmarks/virtual_lge_generalisation.py [--checkpoints A,B,...] [--train-slices 80] [--device auto]

Writes results/virtual_lge_generalisation.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from CMRSynthesisLib.checkpoints import shipped_checkpoint
from CMRSynthesisLib.device import resolve_device
from CMRSynthesisLib.diffusion.samplers import sample, timestep_pairs
from CMRSynthesisLib.io import atomic_write_bytes
from CMRSynthesisLib.methods.cpkdm_networks import CPKDMNetwork, condition_values
from CMRSynthesisLib.methods.virtual_lge import SCAR_THRESHOLD, VirtualLGE, scar_dice
from CMRSynthesisLib.metrics import psnr
from training.recipes.virtual_lge import cached_phantom_examples

THRESHOLDS = np.arange(0.10, 0.851, 0.05)


def predictions(method: VirtualLGE, arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, np.ndarray]:
    """The model's outputs (N, S, S) in [-1, 1] by kind: "output" for pix2pix; "conditional_mean" and "sample" for a
    diffusion variant (module docstring)."""
    tensors = {key: torch.from_numpy(np.ascontiguousarray(arrays[key])).to(device)
               for key in ("cine", "kinematics", "curves")}
    with torch.no_grad():
        if method.model is None:
            made = method.network(torch.cat([tensors["cine"], tensors["curves"]], dim=1))
            return {"output": torch.tanh(made)[:, 0].cpu().numpy()}
        factor = int(method.config["factor"])
        size, channels = int(method.config["crop_size"]) // factor, int(method.config["latent_channels"])
        values = condition_values(method.variant, tensors["cine"], tensors["kinematics"], tensors["curves"], factor)
        count, last = len(arrays["lge"]), method.model.schedule.num_train_timesteps - 1
        chain = method.network.one_chain if isinstance(method.network, CPKDMNetwork) else contextlib.nullcontext
        noise = torch.randn((count, channels, size, size), generator=torch.Generator().manual_seed(0)).to(device)
        with chain():
            x0, _ = method.model.predict(noise, last, values)
        mean = method.codec.decode(x0)[:, 0]
        with chain():
            drawn = sample(method.model, timestep_pairs("ddim", last, last + 1, 50), shape=(count, channels, size, size),
                           start="noise", conditions=values, sampler="ddim", eta=1.0,
                           generator=[torch.Generator(device=device).manual_seed(i) for i in range(count)],
                           decode=method.codec.decode)
        return {"conditional_mean": mean.clamp(-1, 1).cpu().numpy(), "sample": drawn.mean[:, 0].clamp(-1, 1).cpu().numpy()}


def scores(made: np.ndarray, arrays: dict[str, np.ndarray]) -> dict[str, float]:
    """The module docstring's metrics of outputs (N, S, S) in [-1, 1] against the examples' LGE."""
    made01, truth01 = (made + 1.0) / 2.0, (arrays["lge"][:, 0] + 1.0) / 2.0
    myocardium, scar = arrays["myocardium"], arrays["scar"]
    with_scar = [i for i in range(len(made)) if scar[i].any()]

    def dice(threshold: float) -> float:
        return float(np.mean([scar_dice(made01[i] > threshold, myocardium[i], scar[i]) for i in with_scar]))

    return {"psnr": float(np.mean([psnr(truth01[i], made01[i], 1.0) for i in range(len(made))])),
            "scar_intensity": float(np.mean([made01[i][scar[i]].mean() for i in with_scar])),
            "remote_intensity": float(np.mean([made01[i][myocardium[i] & ~scar[i]].mean() for i in with_scar])),
            "scar_dice": dice(SCAR_THRESHOLD), "best_threshold_dice": max(dice(t) for t in THRESHOLDS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default=",".join(str(shipped_checkpoint(name)) for name in
                                                          ("virtual_lge_pix2pix", "virtual_lge")),
                        help="virtual-LGE checkpoint folders, separated by commas")
    parser.add_argument("--config", type=Path, default=Path("training/configs/virtual_lge_demo.json"),
                        help="the training config whose examples (and cache) to read")
    parser.add_argument("--train-slices", type=int, default=80)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "virtual_lge_generalisation.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    config = json.loads(args.config.read_text())
    data = config["data"]
    train = cached_phantom_examples("train", int(data["train_subjects"]), config)
    splits = {"train": {key: value[:args.train_slices] for key, value in train.items()},
              "validation": cached_phantom_examples("validation", int(data["validation_subjects"]), config)}
    result: dict[str, Any] = {"settings": {**vars(args), "config": str(args.config), "out": str(args.out)},
                              "slices": {name: {"all": len(arrays["lge"]),
                                                "with_scar": int(arrays["scar"].any(axis=(1, 2)).sum())}
                                         for name, arrays in splits.items()},
                              "true_lge": {name: scores(arrays["lge"][:, 0], arrays) for name, arrays in splits.items()},
                              "models": {}}
    for checkpoint in args.checkpoints.split(","):
        method = VirtualLGE.load(checkpoint, device=device)
        entry = {"variant": method.variant, "prediction_type": method.config.get("schedule", {}).get("prediction_type"),
                 "augmentation": method.config.get("augmentation"), "splits": {}}
        for name, arrays in splits.items():
            entry["splits"][name] = {kind: scores(made, arrays)
                                     for kind, made in predictions(method, arrays, device).items()}
        result["models"][checkpoint] = entry
        print(checkpoint, json.dumps(entry["splits"]), flush=True)
    atomic_write_bytes(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
