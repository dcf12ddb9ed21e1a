"""Our T1 fit against the scanners' own T1 maps on every reference box of the real test data (Philips 1.5 T MOLLI
patient, native and post-contrast; Siemens 3 T ShMOLLI phantom). Writes JSON (default
benchmarks/results/t1_scanner_agreement.json) and prints the markdown table the README shows.

    python benchmarks/t1_scanner_agreement.py [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))

from scanner_references import fit_boxes, reference_boxes

from CMRSynthesisLib.io import atomic_write_bytes

STUDY_NAMES = {"native": "Philips MOLLI native", "post": "Philips MOLLI post-contrast",
               "shmolli": "Siemens ShMOLLI phantom"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "t1_scanner_agreement.json")
    out = parser.parse_args().out
    rows = fit_boxes(reference_boxes())
    for row in rows:
        pixels = np.abs(row.pop("pixel_differences_percent"))
        row["pixels_within_3_percent"] = float(np.mean(pixels < 3.0))
    atomic_write_bytes(out, json.dumps({"boxes": rows}, indent=2).encode())
    print("| study | map | region | pixels (failed fits) | scanner median (ms) | ours (ms) | difference | pixels "
          "within 3 % |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {STUDY_NAMES[row['study']]} | {row['map_file']} | {row['region']} | {row['pixels']} "
              f"({row['failed_fits']}) | "
              f"{row['scanner_median_ms']:.1f} | {row['our_median_ms']:.1f} | {row['difference_percent']:+.2f} % | "
              f"{100 * row['pixels_within_3_percent']:.0f} % |")


if __name__ == "__main__":
    main()
