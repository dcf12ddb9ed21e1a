"""Where virtual LGE loses the infarct: the latent autoencoder or the diffusion model, and bias or sampling noise.

On the held-out phantom slices with scar (the evaluation's cases, `virtual_lge.evaluation_cases`):
- the LGE autoencoder's ceiling: the true LGE crop (64 x 64, as in training) encoded and decoded by the shipped
  `virtual_lge_autoencoder`; PSNR of the reconstruction against the crop, and the scar rule's Dice (> SCAR_THRESHOLD
  inside the true myocardium) on the crop and on the reconstruction (what a perfect latent would give);
- the shipped CPKDM with k = 1, 3, 8 samples (DDIM 50, eta 1, seed 0, as the evaluation): PSNR over the crop's box
  and scar Dice (`virtual_lge.image_metrics`). If the mean of more samples gains little, the samples are wrong on
  average (bias), not merely noisy (a perfect posterior sampler's mean of k gains 10 log10(2 / (1 + 1/k)) dB on one).

    python benchmarks/virtual_lge_bottleneck.py [--subjects 3] [--split test,ood] [--samples 1,3,8]
                                                [--sampling-split test] [--device auto]

Writes results/virtual_lge_bottleneck.json: per split, the means over the slices with scar and the per-slice rows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from CMRSynthesisLib.checkpoints import shipped_checkpoint
from CMRSynthesisLib.device import resolve_device
from CMRSynthesisLib.diffusion.latent import load_codec
from CMRSynthesisLib.io import atomic_write_bytes
from CMRSynthesisLib.methods.virtual_lge import (
    METHOD,
    SCAR_THRESHOLD,
    SHIPPED_AUTOENCODER,
    VirtualLGE,
    evaluation_cases,
    image_metrics,
    lge_on_crop,
    scar_dice,
)
from CMRSynthesisLib.metrics import psnr


def autoencoder_rows(cases: list, device: torch.device) -> list[dict[str, float | None]]:
    """Per case: the reconstruction's PSNR and the scar rule's Dice on the true crop and on its reconstruction."""
    codec, _ = load_codec(shipped_checkpoint(SHIPPED_AUTOENCODER), METHOD, device)
    rows = []
    for case in cases:
        crop = case.context["crop"]
        truth = lge_on_crop(case.reference, crop)
        with torch.no_grad():
            made = codec.decode(codec.encode(torch.from_numpy(truth)[None].to(device)))[0].cpu().numpy()
        truth01, made01 = (truth[0] + 1.0) / 2.0, (made[0] + 1.0) / 2.0
        myocardium = crop.extract(case.context["myocardium"].astype(np.float32)) > 0.5
        scar = crop.extract(case.context["scar"].astype(np.float32)) > 0.5
        rows.append({"subject": case.subject, "slice": case.slice + 1,
                     "reconstruction_psnr": psnr(truth01, made01, 1.0),
                     "rule_dice_true_crop": scar_dice(truth01 > SCAR_THRESHOLD, myocardium, scar),
                     "rule_dice_reconstruction": scar_dice(made01 > SCAR_THRESHOLD, myocardium, scar)})
    return rows


def sampling_rows(cases: list, method: VirtualLGE, samples: list[int]) -> dict[str, list[dict[str, float | None]]]:
    """Per k: per case, PSNR and scar Dice of the mean of k samples (the evaluation's other settings)."""
    rows: dict[str, list[dict[str, float | None]]] = {}
    for k in samples:
        rows[str(k)] = []
        for case in cases:
            output = method.run(case.inputs, samples=k, seed=0, sampler="ddim", ddim_steps=50, ddim_eta=1.0,
                                slices=str(case.slice + 1))["lge"]
            metrics = image_metrics(output, case.reference, case)
            rows[str(k)].append({"subject": case.subject, "slice": case.slice + 1, "psnr": metrics["psnr"],
                                 "scar_dice": metrics["scar_dice"]})
    return rows


def means(rows: list[dict[str, float | None]]) -> dict[str, float]:
    """The mean of each numeric column over the rows (None left out)."""
    keys = [key for key in rows[0] if key not in ("subject", "slice")]
    return {key: float(np.mean([row[key] for row in rows if row[key] is not None])) for key in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--split", default="test,ood", help="held-out splits, separated by commas")
    parser.add_argument("--samples", default="1,3,8", help="numbers of samples to compare, separated by commas")
    parser.add_argument("--sampling-split", default="test", help="the split on which k is varied (slow)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "virtual_lge_bottleneck.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    method = VirtualLGE.load(device=device)
    result: dict[str, dict] = {"settings": vars(args) | {"out": str(args.out)}, "splits": {}}
    for split in args.split.split(","):
        cases = [case for case in evaluation_cases(split, args.subjects, method) if case.facts["scar_pixels"] > 0]
        entry: dict[str, dict] = {"slices_with_scar": len(cases)}
        auto = autoencoder_rows(cases, device)
        entry["autoencoder"] = {"mean": means(auto), "rows": auto}
        if split == args.sampling_split:
            by_k = sampling_rows(cases, method, [int(k) for k in args.samples.split(",")])
            entry["cpkdm_by_samples"] = {k: {"mean": means(rows), "rows": rows} for k, rows in by_k.items()}
        result["splits"][split] = entry
        print(split, json.dumps({key: value.get("mean", value) if isinstance(value, dict) else value
                                 for key, value in entry.items() if key != "cpkdm_by_samples"}), flush=True)
    atomic_write_bytes(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
