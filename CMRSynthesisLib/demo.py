"""`cmrsynth demo`: localized scar enhancement of held-out phantom subjects, evaluated as in paper 002 (Table 1).

Two families are evaluated, each in its own sub-folder: the in-distribution test split, and the out-of-distribution
family (noisier, stronger shading of another form, other contrast and intensity scale), which shows whether the
shipped models generalise beyond the acquisition they were trained on. For each held-out subject with scar: the shipped
segmenter finds the heart ROI on the whole stack; the scarred slices (largest scar first) are enhanced inside that ROI
by partial diffusion with the mean of k samples. Metrics are computed against the tissue-specific gamma-corrected
target on the ground-truth ROI crop (SSIM, PSNR, MSE, NMSE, LPIPS when available) and CNR(scar, myo), CNR(scar,
blood) for input, enhanced and target. Writes the volumes, a PNG figure (input / enhanced / target / difference with
the ROI contour) and metrics.json per family, and prints a table per family.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import phantom
from .io import atomic_write_bytes, write_volumes
from .methods import load_method
from .methods.scar_enhancement import enhancement_target
from .metrics import contrast_metrics, lpips_status, region_metrics, summarise
from .progress import Reporter

TABLE_ROWS = (("Baseline (input LGE)", "input"), ("Enhanced (this run)", "enhanced"), ("Target (gamma)", "target"))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def _finite_or_none(value: Any) -> Any:
    """JSON has no infinity: a non-finite number (the PSNR of identical images) is written as null."""
    return None if isinstance(value, float) and not np.isfinite(value) else value


def heldout_cases(subjects: int, slices: int, segmenter, split: str = "test") -> list[dict[str, Any]]:
    """Held-out phantom subjects with scar (test split or the ood family; validation for choosing models): each with
    its study, the segmenter's ROI (z, y, x) and up to `slices` scarred slice indices (largest scar inside the ROI
    first)."""
    cases = []
    for subject_id in phantom.subject_ids(split, 4 * subjects):
        study = phantom.lge_study(subject_id)
        if not study["masks"]["scar"].any():
            continue
        roi = segmenter.segment(study["lge"])
        inside = (study["masks"]["scar"] & roi).reshape(len(roi), -1).sum(axis=1)
        chosen = sorted(int(i) for i in np.argsort(-inside)[:slices] if inside[i] > 0)
        if chosen:
            cases.append({"study": study, "roi": roi, "slices": chosen})
        if len(cases) == subjects:
            break
    return cases


def evaluate_slice(image: np.ndarray, enhanced: np.ndarray, masks: dict[str, np.ndarray], roi: np.ndarray,
                   config: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """Paper-002 metrics of one enhanced slice: quality on the ground-truth ROI crop against the gamma target and
    CNRs, for input, enhanced and target (keys "<which>_<metric>"), and the Dice of the ROI used; and the target."""
    target, _ = enhancement_target(image, masks["scar"], masks["blood"], masks["heart_roi"], config["crop_size"],
                                   config.get("roi_margin_px", 4), config["blood_reference"])
    row: dict[str, Any] = {"roi_dice": _dice(roi, masks["heart_roi"])}
    for name, values in (("input", image), ("enhanced", enhanced), ("target", target)):
        values = values.astype(np.float32)
        metrics = contrast_metrics(values, masks["scar"], masks["myocardium"], masks["blood"])
        if name != "target":  # the target against itself has no quality to measure
            metrics.update(region_metrics(target, values, masks["heart_roi"]))
        row.update({f"{name}_{key}": value for key, value in metrics.items() if not key.endswith("reason")})
    return row, target


def run_demo(args: argparse.Namespace, progress: Reporter) -> dict[str, Any]:
    """Run the demo on each family of args.split ("test", "ood" or "test,ood"); returns {"outputs": {family: paths},
    "table": the printed tables, "summary": {family: headline metrics}}."""
    method = load_method("scar_enhancement", args.checkpoint, device=args.device, segmenter=args.segmenter)
    families = [family.strip() for family in args.split.split(",")]
    outputs, tables, headline = {}, [], {}
    for number, family in enumerate(families):
        report = lambda f, m, n=number, name=family: progress((n + f) / len(families), f"{name}: {m}")
        summary, paths = _run_family(method, family, Path(args.out) / family, args, report)
        outputs[family], headline[family] = paths, {
            key: summary["mean_sd"].get(key) for key in ("enhanced_ssim", "enhanced_cnr_scar_myo",
                                                         "input_cnr_scar_myo", "enhanced_cnr_scar_blood",
                                                         "input_cnr_scar_blood")}
        tables.append(format_table(summary))
    return {"outputs": outputs, "table": "\n\n".join(tables), "summary": headline}


def _run_family(method, family: str, out: Path, args: argparse.Namespace, progress) -> tuple[dict[str, Any], dict]:
    """Enhance and evaluate the held-out subjects of one family into `out`; returns (metrics summary, output paths)."""
    cases = heldout_cases(args.subjects, args.slices, method.segmenter, split=family)
    rows, panels, started = [], [], time.time()
    for number, case in enumerate(cases):
        lge, masks, roi, chosen = case["study"]["lge"], case["study"]["masks"], case["roi"], case["slices"]
        subject = case["study"]["subject"].subject_id
        report = lambda f, m, n=number: progress((n + f) / len(cases), f"subject {n + 1}/{len(cases)}: {m}")
        images = lge.array[chosen]
        enhanced, _ = method.enhance_slices(images, roi[chosen], steps=args.steps, samples=args.samples,
                                            seed=args.seed, sampler=args.sampler, ddim_steps=args.ddim_steps,
                                            progress=report,
                                            slice_keys=[lge.slice_keys()[z] for z in chosen])  # as `enhance` would
        volume = lge.array.copy()
        volume[chosen] = enhanced
        folder = out / f"subject_{subject:07d}"
        write_volumes([(lge, folder / "lge.nrrd"), (lge.with_array(volume), folder / "enhanced.nrrd"),
                       (lge.with_array(roi.astype(np.uint8)), folder / "roi.nrrd")])
        for index, z in enumerate(chosen):
            slice_masks = {name: masks[name][z] for name in ("scar", "myocardium", "blood", "heart_roi")}
            row, target = evaluate_slice(images[index], enhanced[index], slice_masks, roi[z], method.config)
            rows.append({"subject": subject, "slice": z, **row})
            panels.append((subject, z, images[index].astype(np.float32), enhanced[index].astype(np.float32), target,
                           roi[z]))
    progress(1.0, "writing figure and metrics")
    figure = _figure(panels, out / "demo_figure.png")
    summary = {"family": family, "subjects": len(cases), "slices": len(rows),
               "seconds": round(time.time() - started, 1),
               "settings": {"t0": args.steps, "samples": args.samples, "sampler": args.sampler, "seed": args.seed,
                            "device": str(method.device)},
               "lpips": lpips_status()[1], "mean_sd": summarise(rows),
               "per_slice": [{key: _finite_or_none(value) for key, value in row.items()} for row in rows]}
    metrics_path = out / "metrics.json"
    atomic_write_bytes(metrics_path, json.dumps(summary, indent=2, allow_nan=False).encode())
    return summary, {"figure": str(figure), "metrics": str(metrics_path)}


def format_table(summary: dict[str, Any]) -> str:
    """A paper-style table (mean +- SD over slices) of the demo metrics."""
    stats = summary["mean_sd"]

    def cell(key: str, scale: float = 1.0) -> str:
        entry = stats.get(key)
        if not entry or entry.get("mean") is None:
            return "n/a"
        return f"{entry['mean'] * scale:.2f} ± {entry['sd'] * scale:.2f}"

    header = f"{'':24}{'SSIM %':>16}{'PSNR dB':>16}{'LPIPS':>10}{'CNR(scar,myo)':>18}{'CNR(scar,blood)':>18}"
    lines = [header, "-" * len(header)]
    for label, key in TABLE_ROWS:
        quality = key != "target"
        lines.append(f"{label:24}{cell(f'{key}_ssim', 100) if quality else '-':>16}"
                     f"{cell(f'{key}_psnr') if quality else '-':>16}{cell(f'{key}_lpips') if quality else '-':>10}"
                     f"{cell(f'{key}_cnr_scar_myo'):>18}{cell(f'{key}_cnr_scar_blood'):>18}")
    family = {"test": "held-out test", "ood": "out-of-distribution"}.get(summary["family"], summary["family"])
    lines.append(f"{summary['slices']} slices of {summary['subjects']} {family} phantom subjects; "
                 f"SSIM/PSNR on the ROI crop against the gamma target; LPIPS: {summary['lpips']}")
    return "\n".join(lines)


def _figure(panels: list, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .metrics import roi_bounding_box

    fig, axes = plt.subplots(len(panels), 4, figsize=(12, 3 * len(panels)), squeeze=False)
    for row, (subject, z, image, enhanced, target, roi) in zip(axes, panels):
        box = roi_bounding_box(roi, min_size=48)
        low, high = np.percentile(image[box], [1, 99.5])
        difference = (enhanced - image)[box]
        limit = max(float(np.abs(difference).max()), 1e-6)
        for axis, data, title in zip(row[:3], (image, enhanced, target), ("input LGE", "enhanced", "target (gamma)")):
            axis.imshow(data[box], cmap="gray", vmin=low, vmax=high * 1.3)
            axis.contour(roi[box], levels=[0.5], colors="tab:orange", linewidths=0.8)
            axis.set_title(f"{title} · subject {subject} slice {z}", fontsize=8)
        shown = row[3].imshow(difference, cmap="RdBu_r", vmin=-limit, vmax=limit)
        row[3].contour(roi[box], levels=[0.5], colors="k", linewidths=0.8)
        row[3].set_title("enhanced - input", fontsize=8)
        fig.colorbar(shown, ax=row[3], fraction=0.046)
        for axis in row:
            axis.set_axis_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
