"""`cmrsynth demo`: localized scar enhancement of held-out phantom subjects, evaluated as in paper 002 (Table 1).

The demo is the evaluation harness (`CMRSynthesisLib.evaluation`, the same run as `cmrsynth evaluate
scar_enhancement`) with `--slices` scarred slices per subject, plus what a person wants to look at. Two families are
evaluated, each in its own sub-folder: the in-distribution test split, and the out-of-distribution family (noisier,
stronger shading of another form, other contrast and intensity scale), which shows whether the shipped models
generalise beyond the acquisition they were trained on. For each held-out subject with scar: the shipped segmenter
finds the heart ROI on the whole stack; the scarred slices (largest scar first) are enhanced inside that ROI by partial
diffusion with the mean of k samples. Metrics are computed against the tissue-specific gamma-corrected target on the
ground-truth ROI crop (SSIM, PSNR, MSE, NMSE, LPIPS when available) and CNR(scar, myo), CNR(scar, blood) for input,
enhanced and target. Writes per family the harness's metrics.json, figure.png and table.md, the volumes and a PNG
figure (input / enhanced / target / difference with the ROI contour), and prints a table per family.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
from pathlib import Path
from typing import Any

import numpy as np

from .evaluation import evaluate
from .io import atomic_write_bytes, write_volumes
from .methods import get_spec
from .methods.registry import EvaluationCase
from .methods.scar_enhancement import METHOD, enhancement_target, evaluation_cases, scarred_subjects, slice_metrics
from .metrics import lpips_status
from .progress import Reporter

TABLE_ROWS = (("Baseline (input LGE)", "input"), ("Enhanced (this run)", "enhanced"), ("Target (gamma)", "target"))
MODEL_PREFIX = {"input": "input", METHOD: "enhanced", "target": "target"}  # harness model -> table key prefix


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def heldout_cases(subjects: int, slices: int, segmenter, split: str = "test") -> list[dict[str, Any]]:
    """Held-out phantom subjects with scar (test split or the ood family; validation for choosing models): each with
    its study, the segmenter's ROI (z, y, x) and up to `slices` scarred slice indices (largest scar inside the ROI
    first); see `scar_enhancement.scarred_subjects`."""
    return scarred_subjects(split, subjects, slices, segmenter)


def evaluate_slice(image: np.ndarray, enhanced: np.ndarray, masks: dict[str, np.ndarray], roi: np.ndarray,
                   config: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """Paper-002 metrics of one enhanced slice: quality on the ground-truth ROI crop against the gamma target and
    CNRs, for input, enhanced and target (keys "<which>_<metric>"), and the Dice of the ROI used; and the target."""
    target, _ = enhancement_target(image, masks["scar"], masks["blood"], masks["heart_roi"], config["crop_size"],
                                   config.get("roi_margin_px", 4), config["blood_reference"])
    row: dict[str, Any] = {"roi_dice": _dice(roi, masks["heart_roi"])}
    for name, values in (("input", image), ("enhanced", enhanced), ("target", target)):
        # the target against itself has no quality to measure
        metrics = slice_metrics(values, None if name == "target" else target, masks)
        row.update({f"{name}_{key}": value for key, value in metrics.items()})
    return row, target


def run_demo(args: argparse.Namespace, progress: Reporter) -> dict[str, Any]:
    """Run the demo on each family of args.split ("test", "ood" or "test,ood") through the evaluation harness;
    returns {"outputs": {family: paths}, "table": the printed tables, "summary": {family: headline metrics}}."""
    spec = get_spec(METHOD)
    evaluation = dataclasses.replace(spec.evaluation, cases=functools.partial(evaluation_cases, slices=args.slices))
    families = [family.strip() for family in args.split.split(",")]
    kept: dict[str, list[tuple[EvaluationCase, np.ndarray]]] = {family: [] for family in families}

    def keep(case: EvaluationCase, model: str, output: Any) -> None:
        if model == METHOD:  # the enhanced stack: only the case's slice was enhanced
            kept[case.family].append((case, output.array[case.slice]))

    options = {"steps": args.steps, "samples": args.samples, "seed": args.seed, "sampler": args.sampler,
               "ddim_steps": args.ddim_steps}
    command = (f"cmrsynth demo --out {args.out} --split {args.split} --subjects {args.subjects} --slices "
               f"{args.slices} --steps {args.steps} --samples {args.samples} --sampler {args.sampler} --ddim-steps "
               f"{args.ddim_steps} --seed {args.seed} --device {args.device}")
    result = evaluate(spec, Path(args.out), splits=families, subjects=args.subjects, options=options,
                      checkpoint=args.checkpoint, checkpoints={"segmenter": args.segmenter}, device=args.device,
                      progress=progress, evaluation=evaluation, on_output=keep, command=command)
    outputs, tables, headline = {}, [], {}
    for family in families:
        document = result["documents"][family]
        folder = Path(args.out) / family
        figure = _write_volumes_and_figure(kept[family], folder)
        written = result["outputs"][family]
        outputs[family] = {"figure": str(figure.resolve()), "metrics": written["metrics"],
                           "metrics_figure": written["figure"], "table": written["table"]}
        summary = demo_summary(document)
        headline[family] = {key: summary["mean_sd"].get(key) for key in (
            "enhanced_ssim", "enhanced_cnr_scar_myo", "input_cnr_scar_myo", "enhanced_cnr_scar_blood",
            "input_cnr_scar_blood")}
        tables.append(format_table(summary))
    return {"outputs": outputs, "table": "\n\n".join(tables), "summary": headline}


def demo_summary(document: dict[str, Any]) -> dict[str, Any]:
    """The demo table's view of one family's metrics.json: "mean_sd" keyed "<input|enhanced|target>_<metric>" (and
    the case facts, e.g. roi_dice), the family, the subject and slice counts, and the LPIPS status."""
    mean_sd = {f"{prefix}_{metric}": stats for name, prefix in MODEL_PREFIX.items()
               for metric, stats in document["models"][name].items()}
    mean_sd.update(document["case_facts"])
    return {"family": document["family"], "subjects": len(document["subjects"]), "slices": len(document["cases"]),
            "lpips": lpips_status()[1], "mean_sd": mean_sd}


def _write_volumes_and_figure(kept: list[tuple[EvaluationCase, np.ndarray]], out: Path) -> Path:
    """Per subject lge.nrrd, enhanced.nrrd (its evaluated slices enhanced) and roi.nrrd (the segmenter's ROI) in
    out/subject_XXXXXXX/, and out/demo_figure.png with a row per evaluated slice."""
    subjects: dict[int, dict[str, Any]] = {}
    panels = []
    for case, enhanced in kept:
        lge = case.inputs["lge"]
        entry = subjects.setdefault(case.subject, {"lge": lge, "roi": case.context["roi"], "volume": lge.array.copy()})
        entry["volume"][case.slice] = enhanced
        panels.append((case.subject, case.slice, lge.array[case.slice].astype(np.float32),
                       enhanced.astype(np.float32), case.reference, case.context["roi"][case.slice]))
    for subject, entry in subjects.items():
        folder = out / f"subject_{subject:07d}"
        lge = entry["lge"]
        write_volumes([(lge, folder / "lge.nrrd"), (lge.with_array(entry["volume"]), folder / "enhanced.nrrd"),
                       (lge.with_array(entry["roi"].astype(np.uint8)), folder / "roi.nrrd")])
    return _figure(panels, out / "demo_figure.png")


def format_table(summary: dict[str, Any]) -> str:
    """A paper-style table (mean +- SD over slices) of the demo metrics."""
    stats = summary["mean_sd"]

    def cell(key: str, scale: float = 1.0) -> str:
        entry = stats.get(key)
        if not entry or entry.get("mean") is None:
            return "n/a"
        if entry.get("sd") is None:  # a single slice has no SD
            return f"{entry['mean'] * scale:.2f}"
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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
