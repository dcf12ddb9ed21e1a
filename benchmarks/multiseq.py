"""Multi-sequence synthesis (CMRDiff) speed and memory per slice and direction with the shipped checkpoints, on the
first phantom test subject's bSSFP (cine ED frame), T2w and LGE (its middle `--slices` slices), with the default
sampler (DDIM 50 steps, eta 1, k = 3, guided start); and, with `--guidance-grid`, the trade-off of the two guidance
scales (c1, c2 in {1, 2, 3, 5}) and of the guided start's strength on held-out phantom slices: PSNR and SSIM of each
direction against the truth, and the settings per target they choose, as JSON and a figure.

Times are wall and CPU seconds of whole `run` calls (heart segmentation, encoding, sampling with its 3 guidance
passes per step batched, decoding) divided by the slices synthesised, median of `--repeats` calls after an untimed
warm-up, all directions in one run so their ratios see one machine load (the load average is recorded). Memory: the
peak bytes allocated by Python and numpy during one traced call (tracemalloc; torch's CPU allocator is not seen) and
the process's peak RSS. Target: under 5 s per slice on CPU (issue 15).

    python benchmarks/multiseq.py [--slices 2] [--repeats 1] [--device auto]
    python benchmarks/multiseq.py --guidance-grid [--split validation] [--subjects 2] [--slices 2] [--scales 1,2,3,5]
        [--strengths 0.3,0.5,0.7,1] [--rounds 2] [--checkpoint CMRDIFF_CHECKPOINT] [--autoencoder ITS_AUTOENCODER]
        [--write-checkpoint TUNED]
    python benchmarks/multiseq.py --from-search SEARCH_JSON --write-checkpoint TUNED [--checkpoint CMRDIFF_CHECKPOINT]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from measure import machine_facts, per_slice_rows, write_report

from CMRSynthesisLib import phantom
from CMRSynthesisLib.methods import get_spec, load_method
from CMRSynthesisLib.methods.cmrdiff_network import CONTRASTS

TARGET_SECONDS_PER_SLICE = 5.0
RESULTS = Path(__file__).parent / "results"


def speed(args: argparse.Namespace, method) -> None:
    study = phantom.multi_sequence_study(phantom.subject_ids("test", 1)[0])
    count = study["bssfp"].spatial_shape[0]
    start = max(0, count // 2 - args.slices // 2)
    slices = f"{start + 1}-{start + args.slices}"
    settings = {f"to_{target}": {"target": target} for target in CONTRASTS}
    rows = per_slice_rows(settings, lambda options: method.run(
        {name: study[name] for name in CONTRASTS if name != options["target"]}, slices=slices, **options),
        lambda outputs: len(outputs["image"].metadata["synthesis"]["slices"]), args.repeats, str(method.device))
    report = {"settings": {"slices": slices, "repeats": args.repeats, "matrix": list(study["bssfp"].spatial_shape[1:]),
                           "device": str(method.device), "defaults": get_spec("multi_sequence").option_defaults()},
              "machine": machine_facts(), **rows, "target_seconds_per_slice": TARGET_SECONDS_PER_SLICE,
              **{f"{name}_target_met": row["seconds_per_slice"] < TARGET_SECONDS_PER_SLICE
                 for name, row in rows.items()}}
    write_report(args.out or RESULTS / "multiseq.json", report)


def mean_scores(method, cases: list, options: dict[str, dict[str, object]]) -> dict[str, dict[str, float]]:
    """Mean PSNR and SSIM per direction of `method.run` over the cases (the evaluation's), with options[target] (e.g.
    guidance, strength) for the cases of each target."""
    import numpy as np

    from CMRSynthesisLib.methods.multi_sequence import image_metrics

    scores: dict[str, list[dict[str, float]]] = {target: [] for target in CONTRASTS}
    for case in cases:
        target = case.context["target"]
        output = method.run(case.inputs, target=target, slices=str(case.slice + 1), **options[target])
        scores[target].append(image_metrics(output["image"], case.reference, case))
    return {target: {metric: float(np.mean([row[f"{metric}_{target}"] for row in rows])) for metric in ("psnr", "ssim")}
            for target, rows in scores.items()}


def middle_slices(cases: list, count: int) -> list:
    """The cases of the middle `count` slices of each subject (every direction of them)."""
    kept = []
    for subject in sorted({case.subject for case in cases}):
        slices = sorted({case.slice for case in cases if case.subject == subject})
        start = max(0, len(slices) // 2 - count // 2)
        chosen = set(slices[start:start + count])
        kept += [case for case in cases if case.subject == subject and case.slice in chosen]
    return kept


def guidance_grid(args: argparse.Namespace, method) -> None:
    """Choose each direction's guidance and guided-start strength on held-out slices of `--split` (the evaluation's
    cases; validation by default: a checkpoint's inference settings are chosen there, never on the test subjects) by
    up to `--rounds` rounds of coordinate ascent on PSNR, fewer when the strengths no longer change: PSNR / SSIM of
    every (c1, c2) of the grid at each target's current strength (at first the checkpoint's own: `method.defaults`),
    then of every strength of `--strengths` at that round's best (c1, c2). The JSON's "chosen" is, per target, the
    best-PSNR setting measured; the figure shows the first round's grid. `--write-checkpoint TUNED` also writes a
    copy of the checkpoint (weights and config, no training state) whose inference settings are the chosen ones."""
    import numpy as np

    from CMRSynthesisLib.evaluation import _png, _pyplot
    from CMRSynthesisLib.io import atomic_write_bytes
    from CMRSynthesisLib.methods.multi_sequence import EVALUATION

    cases = middle_slices(EVALUATION.cases(args.split, args.subjects, method), args.slices)
    scales = [float(value) for value in args.scales.split(",")]
    current = {target: method.defaults(target)[1] for target in CONTRASTS}
    measured: dict[str, dict[str, dict[str, float]]] = {target: {} for target in CONTRASTS}
    rounds = []
    for _ in range(args.rounds):
        grid: dict[str, dict[str, dict[str, float]]] = {target: {} for target in CONTRASTS}
        for c1, c2 in itertools.product(scales, scales):
            pair = f"{c1:g},{c2:g}"
            found = mean_scores(method, cases, {target: {"guidance": pair, "strength": current[target]}
                                                for target in CONTRASTS})
            for target, means in found.items():
                grid[target][pair] = means
                measured[target][f"{pair}@{current[target]:g}"] = means
            print(f"c1={c1:g} c2={c2:g}: " + ", ".join(f"{t} PSNR {grid[t][pair]['psnr']:.2f}" for t in CONTRASTS))
        best = {target: max(grid[target], key=lambda pair, target=target: grid[target][pair]["psnr"])
                for target in CONTRASTS}
        strengths: dict[str, dict[str, dict[str, float]]] = {}
        for value in (float(text) for text in args.strengths.split(",")):
            strengths[f"{value:g}"] = mean_scores(method, cases, {target: {"guidance": best[target], "strength": value}
                                                                  for target in CONTRASTS})
            for target, means in strengths[f"{value:g}"].items():
                measured[target][f"{best[target]}@{value:g}"] = means
        print("strengths: " + json.dumps(strengths))
        rounds.append({"grid_strength": dict(current), "grid": grid, "best_guidance": best, "strengths": strengths})
        chosen_strengths = {target: float(max(strengths, key=lambda value, target=target:
                                              strengths[value][target]["psnr"])) for target in CONTRASTS}
        if chosen_strengths == current:
            break  # converged: another round would measure the same settings again
        current = chosen_strengths
    chosen = {}
    for target in CONTRASTS:
        setting = max(measured[target], key=lambda key, target=target: measured[target][key]["psnr"])
        pair, _, strength = setting.partition("@")
        chosen[target] = {"guidance": pair, "strength": float(strength), **measured[target][setting]}
    print("chosen: " + json.dumps(chosen))
    grid = rounds[0]["grid"]
    out = args.out or RESULTS / "multiseq_guidance.json"
    report = {"checkpoint": str(args.checkpoint or "shipped multi_sequence"), "split": args.split,
              "subjects": args.subjects, "middle_slices_per_subject": args.slices,
              "scales": scales, "cases_per_direction": len(cases) // len(CONTRASTS),
              "note": "c1, c2: the guidance scales of the two given sequences in bSSFP, T2w, LGE order; per round the "
                      "grid at each target's grid_strength, then the strengths at that round's best guidance; "
                      "chosen: the best-PSNR setting measured per target (guidance@strength keys in measured)",
              "rounds": rounds, "measured": measured, "chosen": chosen, "machine": machine_facts()}
    atomic_write_bytes(out, (json.dumps(report, indent=2) + "\n").encode())
    plt = _pyplot()
    figure, axes = plt.subplots(2, len(CONTRASTS), figsize=(4 * len(CONTRASTS), 7), squeeze=False)
    for column, target in enumerate(CONTRASTS):
        given = [name for name in CONTRASTS if name != target]
        for row, metric in enumerate(("psnr", "ssim")):
            values = np.array([[grid[target][f"{c1:g},{c2:g}"][metric] for c2 in scales] for c1 in scales])
            axis = axes[row, column]
            shown = axis.imshow(values, origin="lower", cmap="viridis")
            axis.set_xticks(range(len(scales)), [f"{s:g}" for s in scales])
            axis.set_yticks(range(len(scales)), [f"{s:g}" for s in scales])
            axis.set_xlabel(f"c2 ({given[1]})")
            axis.set_ylabel(f"c1 ({given[0]})")
            axis.set_title(f"to {target}: {metric.upper()}")
            for (i, j), value in np.ndenumerate(values):
                axis.text(j, i, f"{value:.2f}" if metric == "psnr" else f"{value:.3f}", ha="center", va="center",
                          color="white", fontsize=7)
            figure.colorbar(shown, ax=axis, shrink=0.8)
    figure.suptitle("CMRDiff guidance scales on held-out phantom slices (synthetic data)")
    atomic_write_bytes(out.with_suffix(".png"), _png(figure))
    print(f"-> {out}")
    if args.write_checkpoint:
        write_tuned_checkpoint(args.checkpoint, out, args.write_checkpoint)


def write_tuned_checkpoint(checkpoint: Path | None, search: Path, tuned: Path) -> None:
    """Save the weights of `checkpoint` (None: the shipped multi_sequence) to the folder `tuned` with
    inference.guidance / strength per target set to the "chosen" of the guidance-grid JSON `search` and a note of
    that search (for a retrained model the same settings go into its training config's `inference` block)."""
    from CMRSynthesisLib.checkpoints import default_checkpoint_dir, load_checkpoint, save_checkpoint

    report = json.loads(search.read_text())
    weights, config = load_checkpoint(checkpoint or default_checkpoint_dir() / "multi_sequence",
                                      expected_method="multi_sequence")
    chosen = report["chosen"]
    config["inference"] = {  # save_checkpoint rewrites weights_sha256 and format_version
        **config.get("inference", {}),
        "guidance": {target: setting["guidance"] for target, setting in chosen.items()},
        "strength": {target: setting["strength"] for target, setting in chosen.items()},
        "chosen": f"on {report['split']} phantom slices ({report['subjects']} subject(s), "
                  f"{report['middle_slices_per_subject']} middle slices each) by python benchmarks/multiseq.py "
                  f"--guidance-grid ({search}): per target the best PSNR of the guidance grid, then of the "
                  "guided-start strengths at the best guidance, repeated while the strengths changed"}
    save_checkpoint(tuned, weights, config)
    print(f"-> {tuned}: inference {json.dumps(config['inference'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=2, help="middle slices per subject (speed and guidance grid)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--guidance-grid", action="store_true", help="measure the guidance-scale trade-off instead")
    parser.add_argument("--split", default="validation", help="phantom split of the guidance grid")
    parser.add_argument("--subjects", type=int, default=1, help="subjects of that split for the guidance grid")
    parser.add_argument("--scales", default="1,2,3,5", help="guidance scales of the grid")
    parser.add_argument("--strengths", default="0.3,0.5,0.7,1",
                        help="guided-start strengths (1: pure noise), at each target's best guidance of the grid")
    parser.add_argument("--rounds", type=int, default=2, help="most rounds of the guidance-then-strength search")
    parser.add_argument("--checkpoint", type=Path,
                        help="CMRDiff checkpoint folder, e.g. a retrained model whose guidance and strength are to be "
                             "chosen (default: the shipped multi_sequence)")
    parser.add_argument("--autoencoder", type=Path,
                        help="the autoencoder folder that checkpoint was trained on (default: the shipped one)")
    parser.add_argument("--write-checkpoint", type=Path,
                        help="folder for a copy of the checkpoint with the settings chosen by --guidance-grid "
                             "or by the saved search --from-search")
    parser.add_argument("--from-search", type=Path,
                        help="a --guidance-grid JSON whose chosen settings --write-checkpoint applies (no measuring)")
    parser.add_argument("--out", type=Path, help="JSON file (default: benchmarks/results/multiseq[_guidance].json)")
    args = parser.parse_args()
    if args.write_checkpoint and not (args.guidance_grid or args.from_search):
        parser.error("--write-checkpoint needs --guidance-grid or --from-search")
    if args.write_checkpoint and args.write_checkpoint.exists():
        parser.error(f"--write-checkpoint {args.write_checkpoint} exists; give a new folder (nothing is overwritten)")
    if args.from_search:
        if not args.write_checkpoint:
            parser.error("--from-search needs --write-checkpoint")
        write_tuned_checkpoint(args.checkpoint, args.from_search, args.write_checkpoint)
        return
    method = load_method("multi_sequence", args.checkpoint, autoencoder=args.autoencoder, device=args.device)
    (guidance_grid if args.guidance_grid else speed)(args, method)


if __name__ == "__main__":
    main()
