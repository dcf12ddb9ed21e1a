"""Scar enhancement's numbers pinned: a small enhancement of a held-out phantom subject with the shipped models, whose
CNRs and means were recorded with the code before the diffusion core was rewritten (Data/scar_enhancement_reference
.json), and the voxels outside the ROI bit-identical to the input.

The JSON was written by this file's `measure` run against the pre-port code (commit 6b55cc8, diffusion/roi_diffusion.py
on MONAI's schedulers), exported with `git archive` and put first on the path:
`PYTHONPATH=<export> python Testing/test_enhance_reference.py --write` (torch 2.13.0 CPU, 1 thread).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from CMRSynthesisLib import phantom
from CMRSynthesisLib.methods.scar_enhancement import ScarEnhancement
from CMRSynthesisLib.metrics import cnr

REFERENCE = Path(__file__).parent / "Data" / "scar_enhancement_reference.json"
RUNS = {
    "ddpm_t0_40_k3_seed7": {"steps": 40, "samples": 3, "seed": 7, "sampler": "ddpm"},
    "ddim_t0_250_20steps_k5_seed0": {"steps": 250, "samples": 5, "seed": 0, "sampler": "ddim", "ddim_steps": 20},
    "ddim_t0_250_10steps_k3_seed2": {"steps": 250, "samples": 3, "seed": 2, "sampler": "ddim", "ddim_steps": 10},
}


def reference_case() -> dict[str, Any]:
    """The first test-split phantom subject with scar: its two most scarred slices, their ground-truth masks and
    slice keys."""
    subject_id = next(i for i in phantom.subject_ids("test", 20) if phantom.make_subject(i).scar)
    study = phantom.lge_study(subject_id)
    masks = study["masks"]
    areas = masks["scar"].reshape(len(masks["scar"]), -1).sum(axis=1)
    chosen = sorted(int(z) for z in np.argsort(-areas)[:2])
    keys = study["lge"].slice_keys()
    return {"subject": int(subject_id), "slices": chosen, "images": study["lge"].array[chosen],
            "masks": {name: masks[name][chosen] for name in ("heart_roi", "scar", "myocardium", "blood")},
            "keys": [keys[z] for z in chosen]}


def enhance(method: ScarEnhancement, case: dict[str, Any], settings: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    return method.enhance_slices(case["images"], case["masks"]["heart_roi"], slice_keys=case["keys"], **settings)


def measure(method: ScarEnhancement, case: dict[str, Any]) -> dict[str, list[dict[str, float]]]:
    """Per run and slice: CNR(scar, myo) and CNR(scar, blood) of the enhanced slice, the mean enhanced intensity and
    the mean spread (SD of the k samples) inside the ROI, in input units."""
    values = {}
    for name, settings in RUNS.items():
        enhanced, spread = enhance(method, case, settings)
        rows = []
        for index in range(len(enhanced)):
            image, masks = enhanced[index].astype(np.float64), {k: v[index] for k, v in case["masks"].items()}
            rows.append({"cnr_scar_myo": cnr(image, masks["scar"], masks["myocardium"]),
                         "cnr_scar_blood": cnr(image, masks["scar"], masks["blood"]),
                         "roi_mean": float(image[masks["heart_roi"]].mean()),
                         "roi_spread_mean": float(spread[index][masks["heart_roi"]].mean())})
        values[name] = rows
    return values


@pytest.fixture(scope="module")
def method() -> ScarEnhancement:
    return ScarEnhancement.load(device="cpu")


@pytest.fixture(scope="module")
def case() -> dict[str, Any]:
    return reference_case()


def test_enhancement_numbers_match_the_pre_port_reference(method, case):
    reference = json.loads(REFERENCE.read_text())
    assert reference["subject"] == case["subject"] and reference["slices"] == case["slices"]
    assert reference["runs"] == RUNS
    measured = measure(method, case)
    for name, rows in reference["values"].items():
        for index, row in enumerate(rows):
            for key, value in row.items():
                # bit-identical on the machine that recorded it; the tolerance allows another CPU's float rounding
                assert measured[name][index][key] == pytest.approx(value, rel=1e-4, abs=1e-3), (name, index, key)
    # the enhancement is real: the shipped model raises CNR(scar, myo) above the input's on these slices
    before = np.mean([cnr(case["images"][i].astype(np.float64), case["masks"]["scar"][i],
                          case["masks"]["myocardium"][i]) for i in range(len(case["images"]))])
    assert np.mean([row["cnr_scar_myo"] for row in measured["ddim_t0_250_20steps_k5_seed0"]]) > 1.05 * before


@pytest.mark.parametrize("name", ["ddpm_t0_40_k3_seed7", "ddim_t0_250_10steps_k3_seed2"])
def test_voxels_outside_the_roi_are_bit_identical_and_have_no_spread(method, case, name):
    enhanced, spread = enhance(method, case, RUNS[name])
    outside = ~case["masks"]["heart_roi"]
    assert enhanced.dtype == case["images"].dtype
    assert np.array_equal(enhanced[outside], case["images"][outside])
    assert not np.any(spread[outside])
    assert np.abs(enhanced[~outside].astype(float) - case["images"][~outside]).mean() > 1.0


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python Testing/test_enhance_reference.py --write  (records the reference JSON)")
    torch.set_num_threads(1)
    reference_case_ = reference_case()
    record = {"note": __doc__.split("\n\n", 1)[1].strip(), "subject": reference_case_["subject"],
              "slices": reference_case_["slices"], "runs": RUNS,
              "values": measure(ScarEnhancement.load(device="cpu"), reference_case_)}
    REFERENCE.write_text(json.dumps(record, indent=1) + "\n")
