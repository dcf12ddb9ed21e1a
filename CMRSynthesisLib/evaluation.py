"""The evaluation harness, one for every method: `cmrsynth evaluate METHOD --out-dir DIR`.

A method declares how it is measured once, as the `evaluation` of its `MethodSpec` (`methods.registry.Evaluation`):
how held-out cases are built from the phantom for a split, which baselines it is compared with, its metric functions
and table columns. `evaluate` then runs every case through the method and every baseline in one run, with the same
settings for all (the same seed: a method draws one generator per slice from the seed and the slice's position, so a
case's result depends neither on the order nor on the other cases), and writes, per split ("family"),
DIR/<family>/:

- `metrics.json`: {"models": {name: {metric: {"mean", "sd", "n"}}}, "subjects": [ids], ...} (the schema is
  `family_document`'s docstring): mean and sample SD (ddof=1) over the cases where the metric is finite; a model that
  cannot run here is {"unavailable": "<why>"}, never numbers; the paired comparisons of the method against every
  other model (Wilcoxon signed-rank over cases); the pooled agreement statistics (Pearson R, Bland-Altman) when the
  method declares paired measurements; the settings, device, seconds and every case's row;
- `figure.png`: per metric of the table, a box and strip plot of the cases per model;
- `bland_altman_<quantity>.png`: one Bland-Altman panel per model, when the method declares paired measurements;
- `table.md`: the markdown table (mean ± SD over cases), the paired p-values and notes;

and DIR/table.md, every family's table under one heading with the command that made it (what the README shows).
Every file is written atomically, after all the work: a run that fails or is cancelled writes nothing.

Helpers for declarations: `checkpoint_baseline` (the same method from another checkpoint, e.g. an ablation trained
on the same data), `input_baseline` (an input passed through unchanged: "no method" as a baseline), and
`ModelUnavailable`. Pooled agreement statistics are `metrics.agreement` (with `metrics.segment_means` for the 16 AHA
segments); `bland_altman_png` draws them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import textwrap
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError, CMRSynthesisError, InputError, OutputError
from .io.writing import atomic_write_bytes, check_writable_folder
from .methods.registry import Baseline, Column, Evaluation, EvaluationCase, MethodSpec
from .metrics import agreement as agreement_statistics
from .metrics import summarise
from .progress import Progress, report

FAMILY_NAMES = {"test": "held-out test subjects", "ood": "out-of-distribution family",
                "validation": "validation subjects", "train": "training subjects"}
TUNING_SPLIT = "validation"
AGREEMENT_STATS = ("r", "p_r", "bias", "sd", "loa", "loa_low", "loa_high", "n")


class ModelUnavailable(CMRSynthesisError):
    """A baseline cannot be run on this machine (its message says why); the evaluation reports it as unavailable."""


@dataclasses.dataclass(frozen=True)
class EvaluationContext:
    """What a baseline's `load` receives: the method's declaration and evaluation, the loaded method (a baseline may
    share its segmenter or config), the device asked for ("auto", "cpu", "cuda"), the other checkpoints given on the
    command line (role name -> folder or None: shipped), the `run` options (sampling settings, seed, options) and
    where the baselines' checkpoints come from (`baselines_from`: a folder holding them under their shipped names, e.g.
    the models of another training seed; None: the shipped ones)."""

    spec: MethodSpec
    evaluation: Evaluation
    method: Any
    device: str
    checkpoints: dict[str, Any]
    options: dict[str, Any]
    baselines_from: Path | None = None

    def predict_with(self, model: Any) -> Callable[[EvaluationCase, Progress | None], Any]:
        """predict(case, progress) running `model` (an object loaded like the method) the way the method runs."""
        runner = self.evaluation.predict or default_predict(self.spec)
        return lambda case, progress: runner(model, case, self.options, progress)


def default_predict(spec: MethodSpec) -> Callable[..., Any]:
    """predict(method, case, options, progress): `method.run(case.inputs, progress=..., **options)` and its main
    output (the first declared output role)."""
    def predict(method: Any, case: EvaluationCase, options: dict[str, Any], progress: Progress | None) -> Any:
        return method.run(case.inputs, progress=progress, **options)[spec.main_output.name]

    return predict


def checkpoint_baseline(name: str, label: str, checkpoint: str | Path, help: str = "") -> Baseline:
    """A baseline that is the same method loaded from another checkpoint and run like the method (same options,
    seed and device): an ablation or a baseline network trained on the same data with the same budget.

    checkpoint: the name of a shipped checkpoint (Resources/checkpoints; taken from the context's `baselines_from`
    folder instead when that is given) or a folder (Path). A checkpoint that is missing or fails its hash check makes
    the baseline "unavailable: <why>" (the CheckpointError's message).
    """
    def load(context: EvaluationContext) -> Callable[..., Any]:
        from .checkpoints import shipped_checkpoint

        if isinstance(checkpoint, Path):
            folder = checkpoint
        elif context.baselines_from is not None:
            folder = Path(context.baselines_from) / checkpoint
        else:
            folder = shipped_checkpoint(checkpoint)
        model = context.spec.load(folder, context.device, **context.checkpoints)
        return context.predict_with(model)

    return Baseline(name, label, load, help or f"the method with the checkpoint {checkpoint}")


def input_baseline(name: str, label: str, role: str, help: str = "") -> Baseline:
    """A baseline whose output is the case's input `role` unchanged (e.g. the unenhanced LGE): what the method has
    to improve on."""
    def load(context: EvaluationContext) -> Callable[..., Any]:
        return lambda case, progress: case.inputs[role]

    return Baseline(name, label, load, help or f"the input {role!r} unchanged")


def allowed_splits(evaluation: Evaluation) -> tuple[str, ...]:
    """The splits a --split value may name: the method's held-out `evaluation.splits` and, for every method,
    "validation": the phantom's validation subjects, held out from the gradients but watched during training, the
    split on which to choose sampling or training settings before one run on the held-out splits reports them."""
    return tuple(evaluation.splits) + (() if TUNING_SPLIT in evaluation.splits else (TUNING_SPLIT,))


def parse_splits(text: str, evaluation: Evaluation) -> list[str]:
    """The families of a --split value ("test", "test,ood", "validation"): names from `allowed_splits`, each once,
    in the order given. InputError otherwise."""
    families = [part.strip() for part in str(text).split(",")]
    if not text or any(not family for family in families):
        raise InputError(f"--split takes split names separated by commas, e.g. {','.join(evaluation.splits)}; "
                         f"got {text!r}")
    unknown = [family for family in families if family not in allowed_splits(evaluation)]
    if unknown:
        raise InputError(f"unknown split(s) {', '.join(map(repr, unknown))}; this method is evaluated on "
                         f"{', '.join(allowed_splits(evaluation))}")
    if len(set(families)) < len(families):
        raise InputError(f"--split names a split twice: {text!r}")
    return families


@dataclasses.dataclass
class _Model:
    """A row of the evaluation: the method, a baseline or the reference row."""

    name: str
    label: str
    role: str  # "method", "baseline" or "reference"
    help: str
    predict: Callable[[EvaluationCase, Progress | None], Any] | None = None
    unavailable: str | None = None


def evaluate(spec: MethodSpec, out_dir: str | Path, *, splits: Sequence[str] | None = None,
             subjects: int | None = None, options: dict[str, Any] | None = None,
             checkpoint: str | Path | None = None, checkpoints: dict[str, Any] | None = None, device: str = "auto",
             progress: Progress | None = None, evaluation: Evaluation | None = None,
             on_output: Callable[[EvaluationCase, str, Any], None] | None = None,
             command: str | None = None, baselines_from: str | Path | None = None) -> dict[str, Any]:
    """Evaluate method `spec` on held-out phantom cases of each split against its baselines; write the results.

    out_dir: folder of the results (DIR/<family>/metrics.json, figure.png, table.md, DIR/table.md; see the module
    docstring). splits: families (default: the evaluation's `splits`); subjects: phantom subjects per family (default:
    the evaluation's). options: `run` keywords (sampling settings, seed, options; missing ones take the declared
    defaults). checkpoint / checkpoints: the method's own checkpoint and its other roles (None: shipped). device:
    "auto", "cpu" or "cuda". progress(fraction, message): counts cases x models; returning False cancels.
    evaluation: overrides `spec.evaluation` (e.g. the demo's with more slices per subject). on_output(case, model
    name, output): called with every output (e.g. to save volumes). command: the command line recorded in the tables
    (default: the equivalent `cmrsynth evaluate` command). baselines_from: a folder holding the baselines' checkpoints
    under their shipped names (e.g. another training seed's models; None: the shipped ones).

    Everything is checked before the work (InputError: no evaluation, an unknown split, subjects < 1, unknown options;
    OutputError: an unwritable folder; CheckpointError: the method's own checkpoint) and nothing is written until all
    cases have run. Returns {"outputs": {family: {file stem: path}, "table": path}, "summary": {family: {"models",
    "subjects", "comparisons", "agreement"}}, "table": the combined markdown, "documents": {family: the metrics.json
    content}}.
    """
    evaluation = evaluation or spec.evaluation
    if evaluation is None:
        raise InputError(f"method {spec.name!r} declares no evaluation, so it cannot be evaluated here")
    families = parse_splits(",".join(splits), evaluation) if splits is not None else list(evaluation.splits)
    subjects = evaluation.subjects if subjects is None else subjects
    if isinstance(subjects, bool) or not isinstance(subjects, (int, np.integer)) or subjects < 1:
        raise InputError(f"--subjects must be a whole number of at least 1 (subjects per split); got {subjects!r}")
    settings = _run_options(spec, options)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: is a file; --out-dir must be a folder for the results")
    check_writable_folder(out_dir, out_dir / "table.md")
    checkpoints = dict(checkpoints or {})

    report(progress, 0.0, f"loading {spec.name}")
    method = spec.load(checkpoint, device, **checkpoints)
    context = EvaluationContext(spec, evaluation, method, device, checkpoints, settings,
                                None if baselines_from is None else Path(baselines_from))
    models = _models(spec, evaluation, context)
    runnable = [model for model in models if model.predict is not None]
    cases = {}
    for family in families:
        report(progress, 0.0, f"{family}: building the held-out cases")
        cases[family] = list(evaluation.cases(family, int(subjects), method))
        if not cases[family]:
            raise InputError(f"the {family} split gave no case to evaluate {spec.name} on (subjects: {subjects})")

    total, done = sum(len(found) for found in cases.values()) * len(runnable), 0
    documents, unit = {}, 1.0 / max(total, 1)
    for family in families:
        started, rows = time.time(), []
        for number, case in enumerate(cases[family]):
            row = {"subject": int(case.subject), "slice": None if case.slice is None else int(case.slice),
                   **_checked_metrics(case.facts, "the case"), "models": {}, "pairs": {}}
            for model in runnable:
                where = f"{family}: case {number + 1}/{len(cases[family])} (subject {case.subject}" + (
                    f", slice {case.slice})" if case.slice is not None else ")") + f": {model.label}"
                report(progress, done * unit, where)
                sub = _sub_progress(progress, done * unit, unit, where)
                output = model.predict(case, sub)
                if on_output is not None:
                    on_output(case, model.name, output)
                row["models"][model.name] = _case_metrics(evaluation, output, case, model.name)
                if evaluation.agreement is not None:
                    row["pairs"][model.name] = {
                        quantity: {"predicted": _values(predicted), "true": _values(true)}
                        for quantity, (predicted, true) in evaluation.agreement(output, case.reference, case).items()}
                done += 1
            if evaluation.reference_row is not None:
                reference_metrics = evaluation.reference_row.metrics(case.reference, case)
                row["models"][evaluation.reference_row.name] = _checked_metrics(
                    reference_metrics, evaluation.reference_row.name)
            rows.append(row)
        documents[family] = family_document(spec, evaluation, models, family, rows, settings, method,
                                            time.time() - started, subjects, checkpoint, checkpoints)
    report(progress, 1.0, "writing metrics, figures and tables")
    command = command or evaluate_command(spec, families, subjects, settings, checkpoint, checkpoints, device,
                                          baselines_from)
    return _write(spec, evaluation, documents, out_dir, command)


def _sub_progress(progress: Progress | None, start: float, width: float, where: str) -> Progress | None:
    """The progress callback of one prediction: its [0, 1] mapped onto [start, start + width]."""
    if progress is None:
        return None
    return lambda fraction, message: progress(start + width * min(max(fraction, 0.0), 1.0), f"{where}: {message}")


def _run_options(spec: MethodSpec, options: dict[str, Any] | None) -> dict[str, Any]:
    """The declared `run` keywords with their defaults, updated by `options`, less the facts of one study or case
    (`Option.per_study`: each held-out case brings its own, e.g. its ED frame or its direction); InputError for
    unknown options and for such facts given other than at their default."""
    defaults = spec.option_defaults()
    unknown = sorted(set(options or {}) - set(defaults))
    if unknown:
        raise InputError(f"{spec.name} takes no option {', '.join(unknown)}; it takes {', '.join(defaults) or 'none'}")
    per_study = {option.name for option in spec.options if option.per_study}
    given = sorted(name for name in per_study if (options or {}).get(name, defaults[name]) != defaults[name])
    if given:
        raise InputError(f"the evaluation takes no {', '.join(given)}: each held-out case brings its own (its "
                         f"frames, slices, field strength or direction are read from it)")
    return {name: value for name, value in {**defaults, **(options or {})}.items() if name not in per_study}


def _models(spec: MethodSpec, evaluation: Evaluation, context: EvaluationContext) -> list[_Model]:
    """The rows in table order: baselines (loaded, or unavailable with the reason), the method, the reference row."""
    others = [b.name for b in evaluation.baselines] + ([evaluation.reference_row.name] if evaluation.reference_row
                                                      else [])
    if spec.name in others:  # the rows' names must differ (Evaluation checks the others among themselves)
        raise ValueError(f"{spec.name}: a baseline or the reference row of its evaluation is named like the method")
    models = []
    for baseline in evaluation.baselines:
        model = _Model(baseline.name, baseline.label, "baseline", baseline.help)
        try:
            model.predict = baseline.load(context)
        except (CheckpointError, ModelUnavailable) as error:
            model.unavailable = str(error)
        models.append(model)
    models.append(_Model(spec.name, evaluation.method_label, "method", spec.paper, context.predict_with(context.method)))
    if evaluation.reference_row is not None:
        models.append(_Model(evaluation.reference_row.name, evaluation.reference_row.label, "reference",
                             "the reference itself"))
    return models


def _checked_metrics(values: dict[str, Any], model: str) -> dict[str, float | None]:
    """Metric values as floats (None kept); TypeError naming the metric for anything else (a declaration bug)."""
    checked = {}
    for key, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))):
            raise TypeError(f"metric {key!r} of {model} is {value!r}; metric functions return numbers or None")
        checked[key] = None if value is None else float(value)
    return checked


def _case_metrics(evaluation: Evaluation, output: Any, case: EvaluationCase, model: str) -> dict[str, float | None]:
    """Every metric function of the evaluation on one output, merged."""
    merged: dict[str, Any] = {}
    for function in evaluation.metrics:
        merged.update(function(output, case.reference, case))
    return _checked_metrics(merged, model)


def _finite_or_none(value: Any) -> Any:
    """JSON has no infinity or NaN: such a number is written as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _values(values: Any) -> list[float | None]:
    """Paired measurements as a flat list of floats, None where not finite (e.g. a missing AHA segment)."""
    return [_finite_or_none(float(value)) for value in np.asarray(values, dtype=np.float64).ravel()]


def pooled_pairs(document: dict[str, Any], model: str, quantity: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The (predicted, true) values of one quantity of one model pooled over a family's cases (None -> NaN), or
    None when the model has none."""
    found = [row["pairs"][model][quantity] for row in document["cases"]
             if quantity in row.get("pairs", {}).get(model, {})]
    if not found:
        return None
    pooled = [np.array([np.nan if v is None else v for pair in found for v in pair[key]], dtype=np.float64)
              for key in ("predicted", "true")]
    return pooled[0], pooled[1]


def mean_of_present(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are not None (a metrics.json null: no value for that case), None if none are."""
    present = [value for value in values if value is not None]
    return float(np.mean(present)) if present else None


def metric_directions(higher_is_better: Sequence[str], lower_is_better: Sequence[str]) -> dict[str, str]:
    """{metric: "higher" | "lower"}: which way each metric is better, as `paired_comparison` takes it (from an
    `Evaluation`, or from a family's metrics.json document's "higher_is_better" / "lower_is_better")."""
    return {**{key: "higher" for key in higher_is_better}, **{key: "lower" for key in lower_is_better}}


def paired_comparison(method: Sequence[float | None], other: Sequence[float | None],
                      direction: str | None = None) -> dict[str, Any]:
    """The method against another model on one metric, paired by case.

    method, other: the metric per case (same order; None or non-finite: left out of the pairs). direction: "higher"
    or "lower" is better, or None. Returns {"n": pairs, "median_difference": median(method - other), "p_wilcoxon":
    two-sided p of the Wilcoxon signed-rank test (Wilcoxon 1945; scipy.stats.wilcoxon, zero differences dropped as
    in Wilcoxon's method; exact distribution for small n without ties), "method_better": True / False by the sign of
    the median difference and the direction (None without direction or when it is 0), "note": why p is None}.
    """
    from scipy import stats

    pairs = [(a, b) for a, b in zip(method, other) if a is not None and b is not None
             and math.isfinite(a) and math.isfinite(b)]
    difference = np.array([a - b for a, b in pairs], dtype=np.float64)
    result: dict[str, Any] = {"n": int(difference.size), "median_difference": None, "p_wilcoxon": None,
                              "method_better": None, "note": None}
    if not difference.size:
        result["note"] = "no case has a value for both models"
        return result
    median = float(np.median(difference))
    result["median_difference"] = median
    if direction is not None and median != 0:
        result["method_better"] = (median > 0) == (direction == "higher")
    if not difference.any():
        result["note"] = "every paired difference is zero"
        return result
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on small samples; n is reported beside p
        result["p_wilcoxon"] = float(stats.wilcoxon(difference).pvalue)
    return result


def family_document(spec: MethodSpec, evaluation: Evaluation, models: list[_Model], family: str,
                    rows: list[dict[str, Any]], settings: dict[str, Any], method: Any, seconds: float, subjects: int,
                    checkpoint: Any, checkpoints: dict[str, Any]) -> dict[str, Any]:
    """The metrics.json of one family:

    {"method": name, "family": split, "title",
     "models": {name: {metric: {"mean", "sd", "n"}}} or {name: {"unavailable": "<why>"}},
     "subjects": [subject ids, in case order],
     "labels": {name: {"label": table row, "role": "method" | "baseline" | "reference", "help"}},
     "settings": {run options, "subjects": per split asked, "checkpoint", other checkpoint roles},
     "device", "seconds": the family's run time,
     "cases": [{"subject", "slice", facts..., "models": {name: {metric: value or null}},
                "pairs": {name: {quantity: {"predicted": [...], "true": [...]}}} (paired measurements, null: missing)}],
     "case_facts": {fact: {"mean", "sd", "n"}},
     "nonfinite": {name: {metric: count of infinite / NaN values left out of the statistics}} (only where any),
     "comparisons": {other model: {metric: `paired_comparison`}} (the method against each other model),
     "agreement": {name: {quantity: `metrics.agreement` over the pooled pairs}} (when the method declares pairs),
     "higher_is_better", "lower_is_better", "metric_notes": {metric: why it is unavailable here}}.
    mean / sd / n are over the cases where the metric is finite; sd is the sample SD (ddof=1), null below 2 cases.
    """
    statistics, nonfinite = {}, {}
    for model in models:
        if model.unavailable is not None:
            statistics[model.name] = {"unavailable": model.unavailable}
            continue
        summary = summarise([row["models"][model.name] for row in rows if model.name in row["models"]])
        statistics[model.name] = {key: {"mean": s["mean"], "sd": s["sd"], "n": s["n"]} for key, s in summary.items()}
        counts = {key: s["n_nonfinite"] for key, s in summary.items() if s["n_nonfinite"]}
        if counts:
            nonfinite[model.name] = counts
    facts = sorted({key for row in rows for key in row} - {"subject", "slice", "models", "pairs"})
    fact_summary = summarise([{key: row.get(key) for key in facts} for row in rows])
    directions = metric_directions(evaluation.higher_is_better, evaluation.lower_is_better)
    comparisons = {}
    for other in models:
        if other.role == "method" or other.unavailable is not None:
            continue
        metrics = [key for key in statistics[spec.name] if key in statistics[other.name]]
        comparisons[other.name] = {key: paired_comparison(
            [row["models"][spec.name].get(key) for row in rows],
            [row["models"].get(other.name, {}).get(key) for row in rows], directions.get(key)) for key in metrics}
    subject_ids = list(dict.fromkeys(row["subject"] for row in rows))
    document = {
        "method": spec.name, "family": family, "title": evaluation.title or spec.title,
        "models": statistics, "subjects": subject_ids,
        "labels": {model.name: {"label": model.label, "role": model.role, "help": model.help} for model in models},
        "settings": {**settings, "subjects": int(subjects), "checkpoint": None if checkpoint is None else str(checkpoint),
                     **{role: None if path is None else str(path) for role, path in checkpoints.items()}},
        "device": str(getattr(method, "device", "unknown")), "seconds": round(seconds, 2),
        "cases": [{**{key: _finite_or_none(value) for key, value in row.items() if key not in ("models", "pairs")},
                   "models": {name: {key: _finite_or_none(value) for key, value in values.items()}
                              for name, values in row["models"].items()},
                   **({"pairs": row["pairs"]} if row["pairs"] else {})} for row in rows],
        "case_facts": {key: {"mean": s["mean"], "sd": s["sd"], "n": s["n"]} for key, s in fact_summary.items()},
        "nonfinite": nonfinite, "comparisons": comparisons, "agreement": {},
        "higher_is_better": list(evaluation.higher_is_better), "lower_is_better": list(evaluation.lower_is_better),
        "metric_notes": evaluation.unavailable_metrics() if evaluation.unavailable_metrics else {},
    }
    quantities = dict.fromkeys(q for row in rows for found in row["pairs"].values() for q in found)
    for model in models:
        for quantity in quantities:
            pooled = pooled_pairs(document, model.name, quantity)
            if pooled is not None:
                document["agreement"].setdefault(model.name, {})[quantity] = agreement_statistics(*pooled)
    return document


def evaluate_command(spec: MethodSpec, families: Sequence[str], subjects: int, settings: dict[str, Any],
                     checkpoint: Any, checkpoints: dict[str, Any], device: str,
                     baselines_from: str | Path | None = None) -> str:
    """The `cmrsynth evaluate` command line that repeats a run (options at their values; paths as given)."""
    parts = ["cmrsynth", "evaluate", spec.name, "--out-dir", "DIR", "--split", ",".join(families), "--subjects",
             str(subjects)]
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + key.replace("_", "-"))
        elif value is not None:
            parts += [flag, str(value)]
    for role, path in {"checkpoint": checkpoint, **checkpoints}.items():
        if path is not None:
            parts += ["--" + role.replace("_", "-"), str(path)]
    if baselines_from is not None:
        parts += ["--baselines-from", str(baselines_from)]
    return " ".join(parts + ["--device", device])


# --- tables ----------------------------------------------------------------------------------------------------------


def _number(value: float | None, digits: int, scale: float = 1.0) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def _cell(document: dict[str, Any], name: str, column: Column) -> str:
    """One cell: mean ± SD of a per-case metric, or an agreement statistic ("quantity.stat")."""
    if "." in column.key:
        quantity, stat = column.key.rsplit(".", 1)
        found = document["agreement"].get(name, {}).get(quantity)
        if found is None:
            return "-"
        if stat == "loa":
            if found["loa_low"] is None:
                return "n/a"
            return f"{_number(found['loa_low'], column.digits, column.scale)} to " \
                   f"{_number(found['loa_high'], column.digits, column.scale)}"
        if stat == "n":
            return str(found["n"])
        return _number(found.get(stat), column.digits, 1.0 if stat in ("r", "p_r") else column.scale)
    stats = document["models"][name].get(column.key)
    if stats is None:
        return "-"
    if stats["mean"] is None:
        return "unavailable" if column.key in document["metric_notes"] else "n/a"
    text = _number(stats["mean"], column.digits, column.scale)
    return text if stats["sd"] is None else f"{text} ± {_number(stats['sd'], column.digits, column.scale)}"


def family_table(document: dict[str, Any], evaluation: Evaluation) -> str:
    """The markdown of one family: caption, one row per model (mean ± SD over cases), published rows in italics,
    the method's paired p-values against each other model, and notes on what is unavailable."""
    family = document["family"]
    caption = (f"**{document['title']}: {FAMILY_NAMES.get(family, family)}** (subjects "
               f"{', '.join(map(str, document['subjects']))}; {len(document['cases'])} cases; "
               f"{document['seconds']:.0f} s on {document['device']})")
    columns = evaluation.columns
    lines = [caption, "", "| | " + " | ".join(column.header for column in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name, info in document["labels"].items():
        unavailable = document["models"][name].get("unavailable")
        if isinstance(unavailable, str):
            cells = [f"unavailable: {unavailable}"] + ["-"] * (len(columns) - 1)
        else:
            cells = [_cell(document, name, column) for column in columns]
        lines.append(f"| {info['label']} | " + " | ".join(cells) + " |")
    for label, values in evaluation.published:
        lines.append(f"| *{label}* | " + " | ".join(f"*{values[c.key]}*" if c.key in values else "" for c in columns)
                     + " |")
    method = document["method"]
    compared = [c for c in columns if "." not in c.key]
    if document["comparisons"] and compared:
        heading = (f"{document['labels'][method]['label']} against each model, paired over cases: two-sided "
                   "Wilcoxon signed-rank p (n pairs)")
        lines += ["", heading, "",
                  "| against | " + " | ".join(c.header for c in compared) + " |", "|---|" + "---|" * len(compared)]
        for other, found in document["comparisons"].items():
            cells = []
            for column in compared:
                result = found.get(column.key)
                if result is None or result["p_wilcoxon"] is None:
                    cells.append("-" if result is None else f"n/a ({result['n']})")
                else:
                    cells.append(f"{result['p_wilcoxon']:.3g} ({result['n']})")
            lines.append(f"| {document['labels'][other]['label']} | " + " | ".join(cells) + " |")
    notes = [f"{metric}: {reason}" for metric, reason in document["metric_notes"].items()]
    notes += [f"{document['labels'][name]['label']}: {count} non-finite {metric} left out"
              for name, counts in document["nonfinite"].items() for metric, count in counts.items()]
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines)


def combined_table(spec: MethodSpec, evaluation: Evaluation, documents: dict[str, dict[str, Any]],
                   command: str) -> str:
    """DIR/table.md: a heading, every family's table, and the command."""
    title = evaluation.title or spec.title
    parts = [f"## Evaluation: {title}", ""]
    for document in documents.values():
        parts += [family_table(document, evaluation), ""]
    parts += ["```bash", command, "```", ""]
    return "\n".join(parts)


# --- figures ---------------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


FIGURE_COLUMNS = 4  # panels a row of the metrics figure


def metrics_png(document: dict[str, Any], evaluation: Evaluation) -> bytes:
    """PNG bytes: one panel per per-case metric of the table (at most FIGURE_COLUMNS panels a row), a box and the
    cases as points for each model that has values (unavailable models and metrics are named in the panel)."""
    plt = _pyplot()
    columns = [column for column in evaluation.columns if "." not in column.key]
    across = min(max(len(columns), 1), FIGURE_COLUMNS)
    down = -(-max(len(columns), 1) // across)
    figure, axes = plt.subplots(down, across, figsize=(3.6 * across, 3.9 * down), squeeze=False)
    for axis in axes.flat[len(columns):]:
        axis.set_visible(False)
    rng = np.random.default_rng(0)  # jitter of the points only
    for axis, column in zip(axes.flat, columns):
        names, data = [], []
        for name in document["labels"]:
            values = [row["models"].get(name, {}).get(column.key) for row in document["cases"]]
            values = [value * column.scale for value in values if value is not None]
            if values:
                names.append(document["labels"][name]["label"])
                data.append(values)
        if data:
            axis.boxplot(data, showfliers=False)
            for position, values in enumerate(data, start=1):
                axis.scatter(position + rng.uniform(-0.12, 0.12, len(values)), values, s=12, alpha=0.7, zorder=3)
            axis.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right", fontsize=7)
        else:
            reason = textwrap.fill(document["metric_notes"].get(column.key, "no values"), 36)
            axis.text(0.5, 0.5, f"unavailable:\n{reason}", ha="center", va="center", fontsize=6)
            axis.set_xticks([])
            axis.set_yticks([])
        axis.set_title(column.header, fontsize=9)
    figure.suptitle(f"{document['title']}: {FAMILY_NAMES.get(document['family'], document['family'])} "
                    f"({len(document['cases'])} cases)", fontsize=9)
    figure.tight_layout()
    return _png(figure)


def bland_altman_png(panels: Sequence[tuple[str, Any, Any]], quantity: str, units: str = "") -> bytes:
    """PNG bytes of Bland-Altman plots (Bland & Altman, Lancet 1986), one panel per (title, predicted, true): the
    difference predicted - true against the mean of the pair, with the bias and the 95 % limits of agreement
    (bias -+ 1.96 SD) as lines and Pearson r in the title. Non-finite pairs are left out."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 3.8), squeeze=False,
                                sharey=True)
    suffix = f" ({units})" if units else ""
    for axis, (title, predicted, true) in zip(axes[0], panels):
        predicted, true = np.asarray(predicted, dtype=np.float64), np.asarray(true, dtype=np.float64)
        keep = np.isfinite(predicted) & np.isfinite(true)
        predicted, true = predicted[keep], true[keep]
        stats = agreement_statistics(predicted, true)
        axis.scatter((predicted + true) / 2, predicted - true, s=12, alpha=0.7)
        if stats["bias"] is not None:
            axis.axhline(stats["bias"], color="k", linewidth=1)
            for limit in (stats["loa_low"], stats["loa_high"]):
                axis.axhline(limit, color="k", linewidth=0.8, linestyle="--")
        r_text = "n/a" if stats["r"] is None else f"{stats['r']:.2f}"
        limits = "n/a" if stats["bias"] is None else (
            f"bias {stats['bias']:.3g}, limits {stats['loa_low']:.3g} to {stats['loa_high']:.3g}")
        axis.set_title(f"{title} (n = {stats['n']}, r = {r_text})\n{limits}", fontsize=8)
        axis.set_xlabel(f"mean of {quantity}{suffix}", fontsize=8)
        axis.set_ylabel(f"difference{suffix}", fontsize=8)
    figure.tight_layout()
    return _png(figure)


def _agreement_pngs(document: dict[str, Any], evaluation: Evaluation) -> dict[str, bytes]:
    """bland_altman_<quantity>.png of one family: a panel per model with paired measurements of that quantity."""
    quantities = dict.fromkeys(q for found in document["agreement"].values() for q in found)
    figures = {}
    for quantity in quantities:
        panels = []
        for name, info in document["labels"].items():
            pooled = pooled_pairs(document, name, quantity)
            if pooled is not None:
                panels.append((info["label"], *pooled))
        figures[f"bland_altman_{quantity}.png"] = bland_altman_png(panels, quantity, evaluation.units.get(quantity, ""))
    return figures


def _write(spec: MethodSpec, evaluation: Evaluation, documents: dict[str, dict[str, Any]], out_dir: Path,
           command: str) -> dict[str, Any]:
    """Render every file, then write them all (each atomically); metrics.json last in each family."""
    files: list[tuple[Path, bytes]] = []
    outputs: dict[str, Any] = {}
    for family, document in documents.items():
        folder = out_dir / family
        pngs = {"figure.png": metrics_png(document, evaluation), **_agreement_pngs(document, evaluation)}
        table = family_table(document, evaluation) + "\n"
        metrics = json.dumps(document, indent=2, allow_nan=False) + "\n"
        family_files = {**pngs, "table.md": table.encode("utf-8"),
                        "metrics.json": metrics.encode("utf-8")}
        files += [(folder / name, data) for name, data in family_files.items()]
        outputs[family] = {Path(name).stem: str((folder / name).resolve()) for name in family_files}
    table = combined_table(spec, evaluation, documents, command)
    files.append((out_dir / "table.md", table.encode("utf-8")))
    outputs["table"] = str((out_dir / "table.md").resolve())
    for path, data in files:
        atomic_write_bytes(path, data)
    summary = {family: {key: document[key] for key in ("models", "subjects", "comparisons", "agreement")}
               for family, document in documents.items()}
    return {"outputs": outputs, "summary": summary, "table": table, "documents": documents}
