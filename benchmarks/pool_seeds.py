"""Pool `cmrsynth evaluate` runs of several training seeds: per family, the method against each other model paired
over (seed, case), with the Wilcoxon signed-rank test of `evaluation.paired_comparison`, and each seed's means beside.

Each run is one seed's models evaluated on the same cases with the same sampling settings (e.g. the shipped seed-0
models, then `--checkpoint SEED1/<method> --baselines-from SEED1`). A case is paired with itself across models of the
same run only; runs are concatenated, so n counts seed x case pairs.

    python benchmarks/pool_seeds.py RUN_DIR [RUN_DIR ...] --out OUT.json [--markdown OUT.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from CMRSynthesisLib.evaluation import mean_of_present, metric_directions, paired_comparison
from CMRSynthesisLib.io import atomic_write_bytes


def pooled_family(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The pooled comparisons of one family over the runs' metrics.json documents (same method, same cases)."""
    first = documents[0]
    method = first["method"]
    directions = metric_directions(first["higher_is_better"], first["lower_is_better"])
    models = [name for name, entry in first["models"].items()
              if name != method and first["labels"][name]["role"] != "reference" and "unavailable" not in entry
              and all("unavailable" not in document["models"].get(name, {"unavailable": True})
                      for document in documents)]
    metrics = [key for key in first["models"][method] if key in directions]
    comparisons = {}
    for other in models:
        comparisons[other] = {}
        for metric in metrics:
            ours, theirs = [], []
            for document in documents:
                for case in document["cases"]:
                    ours.append(case["models"][method].get(metric))
                    theirs.append(case["models"].get(other, {}).get(metric))
            comparisons[other][metric] = paired_comparison(ours, theirs, directions[metric])
    means = {name: [{metric: document["models"][name].get(metric, {}).get("mean") for metric in metrics}
                    for document in documents] for name in [method, *models]}
    return {"method": method, "models": [method, *models],
            "labels": {name: first["labels"][name]["label"] for name in [method, *models]},
            "metrics": metrics, "cases_per_run": [len(document["cases"]) for document in documents],
            "means_per_run": means, "mean_over_runs": {
                name: {metric: mean_of_present([run[metric] for run in runs]) for metric in metrics}
                for name, runs in means.items()},
            "comparisons": comparisons}


def markdown(pooled: dict[str, dict[str, Any]], runs: list[str]) -> str:
    """Tables: per family the mean over runs of each model's metric means, then the pooled paired p-values."""
    lines = [f"Pooled over {len(runs)} training seed run(s): {', '.join(runs)}", ""]
    for family, result in pooled.items():
        metrics = result["metrics"]
        lines += [f"### {family}", "", "| model | " + " | ".join(metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        for name in result["models"]:
            cells = [_cell(result["mean_over_runs"][name][metric]) for metric in metrics]
            lines.append(f"| {result['labels'][name]} | " + " | ".join(cells) + " |")
        lines += ["", (f"{result['labels'][result['method']]} against each model, paired over seed x case "
                  "(two-sided Wilcoxon p, n; + method better, - worse):"), "",
                  "| against | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for other, found in result["comparisons"].items():
            cells = []
            for metric in metrics:
                entry = found[metric]
                sign = {True: "+", False: "-"}.get(entry["method_better"], "")
                cells.append("n/a" if entry["p_wilcoxon"] is None else f"{sign}{entry['p_wilcoxon']:.3g} ({entry['n']})")
            lines.append(f"| {result['labels'][other]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="`cmrsynth evaluate` output folders, one per seed")
    parser.add_argument("--out", type=Path, required=True, help="pooled JSON")
    parser.add_argument("--markdown", type=Path, help="also write the tables as markdown")
    args = parser.parse_args()
    families = sorted({path.parent.name for run in args.runs for path in run.glob("*/metrics.json")})
    pooled = {}
    for family in families:
        documents = [json.loads((run / family / "metrics.json").read_text()) for run in args.runs
                     if (run / family / "metrics.json").is_file()]
        if len(documents) == len(args.runs):
            pooled[family] = pooled_family(documents)
    atomic_write_bytes(args.out, (json.dumps({"runs": [str(run) for run in args.runs], "families": pooled},
                                             indent=2) + "\n").encode())
    text = markdown(pooled, [str(run) for run in args.runs])
    if args.markdown:
        atomic_write_bytes(args.markdown, text.encode())
    print(text)


if __name__ == "__main__":
    main()
