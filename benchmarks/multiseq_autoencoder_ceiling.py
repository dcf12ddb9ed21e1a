"""How well multi-sequence synthesis (CMRDiff) could do with a perfect latent: the shared autoencoder's ceiling.

CMRDiff predicts the target's latent and decodes it, so its synthesis cannot be closer to the truth than the true
target crop encoded and decoded by the same autoencoder. On the evaluation's held-out phantom cases
(`multi_sequence.evaluation_cases`: every direction of every slice with a heart), each true target slice is cropped
as the method crops it (centred on the heart the method finds in the bSSFP, or in the LGE when the bSSFP is the
target; 64 x 64 of 2 mm, scaled to [-1, 1] by its percentiles), encoded and decoded, pasted back, and scored exactly as a synthesis is
(`multi_sequence.image_metrics`: PSNR and SSIM over the crop's box and its myocardium box, scar-myocardium CNR for
LGE). A pixel-space model (pix2pix) has no such ceiling. The same with a lossless codec gives the ceiling of the crop
alone (resampled to 2 mm and back), which every model, pix2pix included, shares.

    python benchmarks/multiseq_autoencoder_ceiling.py [--autoencoder FOLDER] [--split test,ood] [--subjects 2]
                                                      [--device auto] [--out JSON]

Writes (default results/multiseq_autoencoder_ceiling.json) per split, ceiling ("crop": lossless codec;
"autoencoder") and target the means and the per-slice rows.
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
from CMRSynthesisLib.methods.cmrdiff_network import CONTRASTS, roles_of
from CMRSynthesisLib.methods.multi_sequence import (
    METHOD,
    SHIPPED_AUTOENCODER,
    MultiSequence,
    crop_in_unit_range,
    evaluation_cases,
    image_metrics,
)
from CMRSynthesisLib.preprocess import LVCrop


class Lossless:
    """A codec that changes nothing: the ceiling of the crop's resampling alone."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


def reconstruction(case, method: MultiSequence, codec, device: torch.device):
    """The case's true target slice cropped as `method.run` crops it, encoded and decoded by `codec`, pasted on the
    first input's grid with the crop recorded as a synthesis records it: a Volume `image_metrics` scores."""
    first, _ = roles_of(case.context["target"])
    grid = case.inputs[first]
    kind = "bssfp" if "bssfp" in case.inputs else "lge"
    centre = method._heart_centres(case.inputs[kind], kind, [case.slice])[case.slice]
    crop = LVCrop(centre, (grid.spacing[1], grid.spacing[0]), int(method.config["crop_size"]),
                  float(method.config["pixel_mm"]))
    with torch.no_grad():
        truth = torch.from_numpy(crop_in_unit_range(case.reference, crop)[None]).to(device)
        made = codec.decode(codec.encode(truth))[0, 0].clamp(-1.0, 1.0).cpu().numpy()
    out = np.zeros(grid.spatial_shape, np.float32)
    out[case.slice] = crop.paste((made + 1.0) / 2.0, grid.spatial_shape[1:])
    return grid.with_array(out, synthesis={"crops": {str(case.slice + 1): crop.record()}})


def ceiling(cases: list, method: MultiSequence, codec, device: torch.device) -> dict[str, object]:
    """Per target the mean metrics of the cases' reconstructions through `codec`, and the per-case rows."""
    rows = []
    for case in cases:
        target = case.context["target"]
        metrics = image_metrics(reconstruction(case, method, codec, device), case.reference, case)
        rows.append({"subject": case.subject, "slice": case.slice + 1, "target": target,
                     **{key.removesuffix(f"_{target}"): value for key, value in metrics.items()}})
    means = {}
    for target in CONTRASTS:
        picked = [row for row in rows if row["target"] == target]
        values = {key: [row[key] for row in picked if row[key] is not None] for key in picked[0]
                  if key not in ("subject", "slice", "target")}
        means[target] = {"slices": len(picked), **{key: float(np.mean(found)) for key, found in values.items() if found}}
    return {"mean": means, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--autoencoder", type=Path, help="autoencoder checkpoint folder (default: the shipped one)")
    parser.add_argument("--split", default="test,ood", help="held-out splits, separated by commas")
    parser.add_argument("--subjects", type=int, default=2, help="subjects per split (the evaluation's default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "multiseq_autoencoder_ceiling.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    folder = args.autoencoder or shipped_checkpoint(SHIPPED_AUTOENCODER)
    codec, config = load_codec(folder, METHOD, device)
    method = MultiSequence.load(device=device)  # its heart finders and crop settings only
    result: dict[str, dict] = {"settings": vars(args) | {"out": str(args.out), "autoencoder": str(folder)},
                               "autoencoder_sha256": config.get("weights_sha256"), "splits": {}}
    for split in args.split.split(","):
        cases = evaluation_cases(split, args.subjects, method)
        result["splits"][split] = {name: ceiling(cases, method, chosen, device)
                                   for name, chosen in (("crop", Lossless()), ("autoencoder", codec))}
        print(split, json.dumps({name: entry["mean"] for name, entry in result["splits"][split].items()}), flush=True)
    atomic_write_bytes(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
