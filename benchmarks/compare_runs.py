"""Compare models of different `cmrsynth evaluate` runs on the same cases: each named model against the first one,
per metric, paired by case (subject, slice, and the case's order within its slice) with the Wilcoxon signed-rank
test of `evaluation.paired_comparison`.

For probes: a model retrained with one setting changed is evaluated in its own run (same subjects, samples, sampler
and seed), then compared here with the model it changes and with the baseline of an earlier run. For training seeds:
give each model one run per seed, in the same seed order for every model (NAME=SEED0_DIR:MODEL,SEED1_DIR:MODEL);
cases are then paired by (seed, subject, slice), so n counts seed x case pairs, and the means pool the seeds.

    python benchmarks/compare_runs.py --family test NAME=RUN_DIR:MODEL[,RUN_DIR:MODEL ...] [NAME=...] [--out OUT.json]

MODEL is the model's key in RUN_DIR/FAMILY/metrics.json (e.g. virtual_lge, pix2pix). Prints a markdown table of the
means (with each seed's mean in brackets when there are several) and, after each mean, the two-sided p against the
first model (n: the pairs where both have a value).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from CMRSynthesisLib.evaluation import mean_of_present, metric_directions, paired_comparison
from CMRSynthesisLib.io import atomic_write_bytes


def case_metrics(run: Path, family: str, model: str
                 ) -> tuple[dict[tuple[Any, Any, int], dict[str, Any]], dict[str, str]]:
    """({(subject, slice, k): {metric: value}} of one model in one run's family, {metric: "higher" | "lower"}), k
    counting the cases of one slice in their order (multi-sequence synthesis scores a slice once per direction, in
    the same order in every run). ValueError when the run has no such family or model."""
    path = run / family / "metrics.json"
    if not path.is_file():
        raise ValueError(f"{path} does not exist: is {run} a `cmrsynth evaluate` output folder with family {family}?")
    document = json.loads(path.read_text())
    if model not in document["models"]:
        raise ValueError(f"{path} has no model {model!r}; it has {sorted(document['models'])}")
    seen: Counter[tuple[Any, Any]] = Counter()
    cases = {}
    for case in document["cases"]:
        where = (case["subject"], case["slice"])
        cases[(*where, seen[where])] = case["models"].get(model, {})
        seen[where] += 1
    return cases, metric_directions(document["higher_is_better"], document["lower_is_better"])


def compare(named: dict[str, list[tuple[Path, str]]], family: str) -> dict[str, Any]:
    """Means per model and metric, and each model after the first against the first, paired over the shared cases.

    named: {NAME: [(RUN_DIR, MODEL), ...]}, one run per training seed, in the same seed order for every model.
    ValueError when a model has another number of runs than the first, or a run lacks the family or model."""
    runs = {name: len(pairs) for name, pairs in named.items()}
    if len(set(runs.values())) > 1:
        raise ValueError(f"every model needs the same number of runs (one per seed, in the same order); got {runs}")
    per_run = {name: [case_metrics(run, family, model) for run, model in pairs] for name, pairs in named.items()}
    directions = next(iter(per_run.values()))[0][1]
    loaded = {name: {(seed, *key): values for seed, (cases, _) in enumerate(found) for key, values in cases.items()}
              for name, found in per_run.items()}
    reference, reference_cases = next(iter(loaded.items()))
    metrics = [key for key in directions if any(values.get(key) is not None
                                                for values in reference_cases.values())]
    result: dict[str, Any] = {"family": family, "reference": reference, "metrics": metrics, "models": {}}
    for name, cases in loaded.items():
        shared = [key for key in cases if key in reference_cases]
        entry: dict[str, Any] = {"runs": [str(run) for run, _ in named[name]], "model": named[name][0][1],
                                 "cases": len(cases), "means": {}, "means_per_run": {}, "against_reference": {}}
        for metric in metrics:
            entry["means"][metric] = mean_of_present([values.get(metric) for values in cases.values()])
            entry["means_per_run"][metric] = [mean_of_present([values.get(metric) for values in found.values()])
                                              for found, _ in per_run[name]]
            if name != reference:
                entry["against_reference"][metric] = paired_comparison(
                    [cases[key].get(metric) for key in shared], [reference_cases[key].get(metric) for key in shared],
                    directions[metric])
        result["models"][name] = entry
    return result


def markdown(result: dict[str, Any]) -> str:
    metrics = result["metrics"]
    lines = [f"| {result['family']} | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name, entry in result["models"].items():
        cells = []
        for metric in metrics:
            mean = entry["means"][metric]
            cell = "-" if mean is None else f"{mean:.4g}"
            seeds = entry["means_per_run"][metric]
            if len(seeds) > 1:
                cell += " [" + " / ".join("-" if value is None else f"{value:.4g}" for value in seeds) + "]"
            test = entry["against_reference"].get(metric)
            if test and test["p_wilcoxon"] is not None:
                cell += f" (p = {test['p_wilcoxon']:.2g}, n = {test['n']})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_named(text: str) -> tuple[str, list[tuple[Path, str]]]:
    """("NAME=RUN_DIR:MODEL[,RUN_DIR:MODEL ...]") -> (NAME, [(RUN_DIR, MODEL), ...]); ArgumentTypeError otherwise."""
    name, sep, rest = text.partition("=")
    parts = [part.rpartition(":") for part in rest.split(",")]
    if sep and name and all(run and colon and model for run, colon, model in parts):
        return name, [(Path(run), model) for run, _, model in parts]
    raise argparse.ArgumentTypeError(f"expected NAME=RUN_DIR:MODEL[,RUN_DIR:MODEL ...]; got {text!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", required=True, help="the family folder of each run, e.g. test or ood")
    parser.add_argument("models", nargs="+", type=parse_named,
                        help="NAME=RUN_DIR:MODEL[,RUN_DIR:MODEL ...] (one run per seed); the first is the reference")
    parser.add_argument("--out", type=Path, help="also write the comparison as JSON")
    args = parser.parse_args()
    names = [name for name, _ in args.models]
    if len(set(names)) != len(names):
        parser.error(f"each model needs its own NAME; got {names}")
    try:
        result = compare(dict(args.models), args.family)
    except ValueError as error:
        parser.error(str(error))
    if args.out:
        atomic_write_bytes(args.out, (json.dumps(result, indent=2) + "\n").encode())
    print(markdown(result), end="")


if __name__ == "__main__":
    main()
