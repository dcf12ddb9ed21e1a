"""Where T1 from cine's error lies: the squared error of each shipped model's T1 map against the fitted MOLLI T1
(the evaluation's reference), summed over the LV crops by the phantom's ED tissue (lung, LV cavity, myocardium with
scar, RV, everything else), on held-out test subjects, so a difference in PSNR can be traced to the tissue it comes
from. Every model runs with the evaluation's settings (DDIM with eta 1, k samples, one seed).

    python benchmarks/t1_error_by_tissue.py [--subjects 4] [--samples 4] [--ddim-steps 100] [--seed 0] [--device auto]

Writes results/t1_error_by_tissue.json: per model, the summed squared error per tissue (ms^2), each tissue's fraction
of the model's total, and each tissue's error relative to the ablation's ("DDPM w/o disentangled conditions").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from CMRSynthesisLib import phantom
from CMRSynthesisLib.checkpoints import shipped_checkpoint
from CMRSynthesisLib.io import atomic_write_bytes
from CMRSynthesisLib.methods import load_method
from CMRSynthesisLib.methods.t1_from_cine import EVALUATION, SHIPPED_CHECKPOINT

TISSUES = {"lung": ("lung",), "lv_cavity": ("lv_blood",), "myocardium_and_scar": ("lv_myocardium", "scar"),
           "rv": ("rv_blood", "rv_wall"), "other": ("background", "body", "fat", "liver", "aorta")}
MODELS = {"t1diff": SHIPPED_CHECKPOINT, "ablation": "t1_from_cine_raw_ddpm", "pix2pix": "t1_from_cine_pix2pix"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--ddim-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "t1_error_by_tissue.json")
    args = parser.parse_args()
    methods = {name: load_method("t1_from_cine", shipped_checkpoint(folder), device=args.device)
               for name, folder in MODELS.items()}
    sums = {name: dict.fromkeys(TISSUES, 0.0) for name in MODELS}
    cases = EVALUATION.cases("test", args.subjects, None)
    for case in cases:
        _, labels = phantom.render_cine(phantom.make_subject(case.subject))
        tissue_at_ed = labels.array[0]
        for name, method in methods.items():
            t1 = method.run(case.inputs, samples=args.samples, seed=args.seed, sampler="ddim",
                            ddim_steps=args.ddim_steps)["t1"].array
            squared = (t1.astype(np.float64) - case.reference.array) ** 2
            for tissue, label_names in TISSUES.items():
                inside = (t1 > 0) & np.isin(tissue_at_ed, [phantom.LABELS[label] for label in label_names])
                sums[name][tissue] += float(squared[inside].sum())
        print(f"subject {case.subject} done", flush=True)
    report = {"settings": {"subjects": [case.subject for case in cases], "samples": args.samples, "sampler": "ddim",
                           "ddim_steps": args.ddim_steps, "ddim_eta": 1.0, "seed": args.seed,
                           "checkpoints": {name: {"folder": MODELS[name], "weights_sha256": method.config.get(
                               "weights_sha256")} for name, method in methods.items()}},
              "models": {name: {"squared_error_ms2": sums[name],
                                "fraction_of_total": {tissue: value / sum(sums[name].values())
                                                      for tissue, value in sums[name].items()},
                                "relative_to_ablation": {tissue: value / sums["ablation"][tissue]
                                                         for tissue, value in sums[name].items()}}
                         for name in MODELS}}
    atomic_write_bytes(args.out, (json.dumps(report, indent=1) + "\n").encode())
    for name, row in report["models"].items():
        print(name, {tissue: round(value, 3) for tissue, value in row["relative_to_ablation"].items()})
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
