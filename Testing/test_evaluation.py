"""The evaluation harness (`cmrsynth evaluate METHOD`): a toy method with an evaluation registered at run time goes
through the command on tiny synthetic cases, and its metrics.json, figures and tables are checked against hand
computations; bad input is refused with nothing written; the scar-enhancement demo, now run through the harness, gives
the numbers of the pre-port per-slice code path."""

import dataclasses
import functools
import json
import statistics

import numpy as np
import pytest
from conftest import toy_spec
from scipy import stats

from CMRSynthesisLib.cli import build_parser, main
from CMRSynthesisLib.errors import InputError
from CMRSynthesisLib.evaluation import ModelUnavailable, checkpoint_baseline, evaluate, input_baseline, mean_of_present
from CMRSynthesisLib.methods import get_spec, register, unregister
from CMRSynthesisLib.methods.registry import Baseline, Column, Evaluation, EvaluationCase, Option, ReferenceRow
from CMRSynthesisLib.metrics import agreement, bland_altman, segment_means
from CMRSynthesisLib.volume import Volume

FIRST = {"test": 1.0, "ood": 20.0, "validation": 40.0}  # the toy case values: FIRST[split] + number ** 2


def toy_value(split, number):
    return FIRST[split] + number**2


def toy_cases(split, subjects, method):
    """Case `number` of a split: a 1 x 2 x 2 image of one value v; the reference (the truth) is -v."""
    cases = []
    for number in range(subjects):
        value = toy_value(split, number)
        image = Volume(np.full((1, 2, 2), value, np.float32))
        cases.append(EvaluationCase(subject=100 + number, family=split, inputs={"image": image, "mask": None},
                                    reference=np.full((1, 2, 2), -value), slice=0, facts={"value": value}))
    return cases


def toy_error(output, reference, case):
    return {"error": float(np.abs(output.array - reference).mean()), "level": float(output.array.mean())}


def no_model(context):
    raise ModelUnavailable("the toy baseline has no trained weights on this machine")


TOY_EVALUATION = Evaluation(
    cases=toy_cases, metrics=(toy_error,),
    columns=(Column("error", "Error"), Column("level", "Level", digits=1), Column("level.r", "R"),
             Column("level.bias", "Bias"), Column("level.loa", "LoA")),
    lower_is_better=("error",),
    baselines=(input_baseline("input", "Input unchanged", "image"),
               checkpoint_baseline("trained", "Trained variant", "no_such_toy_checkpoint"),
               Baseline("absent", "Absent baseline", no_model)),
    method_label="Toy negation",
    reference_row=ReferenceRow("truth", "Truth", lambda reference, case: {"level": float(reference.mean())}),
    agreement=lambda output, reference, case: {"level": ([output.array.mean()], [reference.mean()])},
    units={"level": "a.u."},
    published=(("Paper", {"error": "0.5"}),), subjects=3, title="Toy negation")


@pytest.fixture
def toy_evaluated():
    spec = toy_spec(evaluation=TOY_EVALUATION)
    register(spec)
    yield spec
    unregister(spec.name)


def run_toy(out, *extra):
    return main(["evaluate", "toy_negate", "--out-dir", str(out), "--scale", "2", "--progress", "none", *extra])


def test_evaluate_refuses_the_facts_of_one_study(toy_evaluated, tmp_path, capsys):
    """A per-study option (the toy's mask label; T1Diff's ED frame or field strength) would override every held-out
    subject's own: `cmrsynth evaluate` does not take it, the Python API refuses it, the method's command takes it."""
    with pytest.raises(SystemExit):
        run_toy(tmp_path / "cli", "--label", "2")
    assert "unrecognized arguments: --label 2" in capsys.readouterr().err
    with pytest.raises(InputError, match="takes no label: each held-out case brings its own"):
        evaluate(toy_evaluated, tmp_path / "api", splits=["test"], subjects=1, options={"label": 2})
    assert not (tmp_path / "cli").exists() and not (tmp_path / "api").exists()
    assert "--label" in {action.option_strings[0] for action in _toy_command_parser()._actions if action.option_strings}


def test_evaluate_neither_applies_nor_reports_a_fact_of_one_case_with_a_default(tmp_path):
    """A per-case fact that has a default (CMRDiff's --target: each case has its own direction) is left out of the
    settings the methods get and of the settings and command the run reports, which would otherwise claim it."""
    spec = toy_spec(evaluation=TOY_EVALUATION, options=(
        Option("scale", float, 1.0, "factor applied after negation"),
        Option("label", int, 1, "the mask's label", per_study=True)))
    register(spec)
    try:
        evaluate(spec, tmp_path / "run", splits=["test"], subjects=2, options={"scale": 2.0})
        document = json.loads((tmp_path / "run" / "test" / "metrics.json").read_text())
        assert document["settings"]["scale"] == 2.0 and "label" not in document["settings"]
        command = (tmp_path / "run" / "table.md").read_text()
        assert "cmrsynth evaluate toy_negate" in command and "--scale 2.0" in command and "--label" not in command
    finally:
        unregister(spec.name)
    assert get_spec("multi_sequence").option_defaults()["target"] == "lge"
    assert {"target", "slices"} <= {option.name for option in get_spec("multi_sequence").options if option.per_study}


def _toy_command_parser():
    commands = next(action for action in build_parser()._actions if action.dest == "command")
    return commands.choices["toy-negate"]


def test_toy_method_through_cmrsynth_evaluate(toy_evaluated, tmp_path, capsys):
    out = tmp_path / "evaluation"
    assert run_toy(out, "--split", "test,ood", "--subjects", "6") == 0
    printed = capsys.readouterr().out
    assert "| Toy negation |" in printed and "unavailable: " in printed
    for family in ("test", "ood"):
        document = json.loads((out / family / "metrics.json").read_text())
        values = [toy_value(family, number) for number in range(6)]
        assert document["subjects"] == list(range(100, 106))
        # the schema of the issue: models -> metric -> mean, sd, n
        for name in ("toy_negate", "input", "truth"):
            assert all(set(entry) == {"mean", "sd", "n"} for entry in document["models"][name].values())
        # the method outputs -2 v against the truth -v: error v, level -2 v; the input v: error 2 v, level v
        method, unchanged = document["models"]["toy_negate"], document["models"]["input"]
        assert method["error"]["mean"] == pytest.approx(statistics.mean(values))
        assert method["error"]["sd"] == pytest.approx(statistics.stdev(values))
        assert method["error"]["n"] == 6
        assert method["level"]["mean"] == pytest.approx(-2 * statistics.mean(values))
        assert unchanged["error"]["mean"] == pytest.approx(2 * statistics.mean(values))
        assert unchanged["error"]["sd"] == pytest.approx(2 * statistics.stdev(values))
        assert document["models"]["truth"] == {"level": {"mean": pytest.approx(-statistics.mean(values)),
                                                         "sd": pytest.approx(statistics.stdev(values)), "n": 6}}
        assert document["case_facts"]["value"]["mean"] == pytest.approx(statistics.mean(values))
        # unavailable baselines are reported with the reason, never with numbers
        assert set(document["models"]["trained"]) == {"unavailable"}
        assert "no_such_toy_checkpoint" in document["models"]["trained"]["unavailable"]
        assert document["models"]["absent"] == {"unavailable": "the toy baseline has no trained weights on this "
                                                               "machine"}
        assert all("trained" not in case["models"] for case in document["cases"])
        # paired comparison: the method's error minus the input's is -v < 0 in all 6 cases: exact p = 2 / 2^6
        comparison = document["comparisons"]["input"]["error"]
        assert comparison["n"] == 6 and comparison["method_better"] is True
        assert comparison["p_wilcoxon"] == pytest.approx(2 / 2**6)
        assert comparison["p_wilcoxon"] == pytest.approx(stats.wilcoxon(-np.array(values)).pvalue)
        assert "trained" not in document["comparisons"]
        # agreement of the levels, pooled over cases: predicted -2 v, true -v
        level = document["agreement"]["toy_negate"]["level"]
        assert level["n"] == 6 and level["r"] == pytest.approx(1.0)
        assert level["bias"] == pytest.approx(-statistics.mean(values))
        assert level["loa_high"] == pytest.approx(-statistics.mean(values) + 1.96 * statistics.stdev(values))
        assert document["settings"]["scale"] == 2.0
        for name in ("figure.png", "bland_altman_level.png"):
            assert (out / family / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        table = (out / family / "table.md").read_text()
        assert "| Trained variant | unavailable: " in table and "| *Paper* | *0.5* |" in table
        assert f"| Toy negation | {statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} |" in table
    combined = (out / "table.md").read_text()
    assert "held-out test subjects" in combined and "out-of-distribution family" in combined
    assert "cmrsynth evaluate toy_negate --out-dir DIR --split test,ood --subjects 6 --scale 2.0" in combined
    assert not list(out.rglob("*.partial"))


def test_baselines_come_from_another_folder_when_asked(toy_evaluated, tmp_path, capsys):
    """--baselines-from DIR: a checkpoint baseline loads DIR/<its shipped name> (another training seed's models), so
    the baseline missing from the shipped ones runs; the recorded command repeats the option."""
    seeds = tmp_path / "seed1"
    (seeds / "no_such_toy_checkpoint").mkdir(parents=True)  # the toy model loads any folder
    assert run_toy(tmp_path / "found", "--split", "test", "--subjects", "2", "--baselines-from", str(seeds)) == 0
    document = json.loads((tmp_path / "found" / "test" / "metrics.json").read_text())
    assert document["models"]["trained"]["error"]["n"] == 2
    assert f"--baselines-from {seeds}" in (tmp_path / "found" / "table.md").read_text()


def test_progress_counts_cases_times_models_and_outputs_reach_the_callback(toy_evaluated, tmp_path):
    fractions, messages, outputs = [], [], []

    def progress(fraction, message):
        fractions.append(fraction)
        messages.append(message)

    evaluate(toy_evaluated, tmp_path, splits=["test"], subjects=3, options={"scale": 1.0}, progress=progress,
             on_output=lambda case, model, output: outputs.append((case.subject, model)))
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # 3 cases x 2 runnable models (the method and the input baseline; the other two are unavailable)
    started = {message for message in messages if message.endswith(("): Input unchanged", "): Toy negation"))}
    assert len(started) == 6
    assert "test: case 2/3 (subject 101, slice 0): Toy negation: negating" in messages  # the method's own reports
    assert sorted(outputs) == sorted((100 + n, model) for n in range(3) for model in ("input", "toy_negate"))


def test_a_method_without_evaluation_is_not_offered(toy, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", "toy_negate", "--out-dir", str(tmp_path / "out")])
    assert stopped.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_validation_split_is_offered_for_tuning_but_never_run_by_default(toy_evaluated, tmp_path):
    """Settings are chosen on the validation subjects (`--split validation`), which the default held-out run
    (the method's own splits) leaves out."""
    assert run_toy(tmp_path / "tuning", "--split", "validation", "--subjects", "2") == 0
    document = json.loads((tmp_path / "tuning" / "validation" / "metrics.json").read_text())
    values = [toy_value("validation", number) for number in range(2)]
    assert document["models"]["toy_negate"]["error"]["mean"] == pytest.approx(statistics.mean(values))
    assert sorted(path.name for path in (tmp_path / "tuning").iterdir() if path.is_dir()) == ["validation"]
    assert run_toy(tmp_path / "default", "--subjects", "1") == 0
    assert sorted(path.name for path in (tmp_path / "default").iterdir() if path.is_dir()) == ["ood", "test"]


@pytest.mark.parametrize("arguments, expected", [
    (["--subjects", "0"], "--subjects must be a whole number of at least 1"),
    (["--split", "train"], "unknown split(s) 'train'"),
    (["--split", "test,test"], "names a split twice"),
    (["--scale", "2", "--split", ""], "--split takes split names"),
])
def test_bad_input_is_refused_clearly_and_writes_nothing(toy_evaluated, tmp_path, capsys, arguments, expected):
    out = tmp_path / "out"
    assert main(["evaluate", "toy_negate", "--out-dir", str(out), "--progress", "none", *arguments]) == 1
    message = capsys.readouterr().err
    assert message.startswith("error: ") and expected in message and "Traceback" not in message
    assert not out.exists()


def test_unknown_method_and_out_dir_on_a_file(toy_evaluated, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", "no_such_method", "--out-dir", str(tmp_path / "out")])
    assert stopped.value.code == 2 and "invalid choice: 'no_such_method'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_toy(blocker) == 1
    assert "is a file" in capsys.readouterr().err and blocker.read_text() == "x"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]


def test_agreement_helpers_against_hand_computation():
    predicted, true = np.array([1010.0, 980.0, 1100.0, 1205.0]), np.array([1000.0, 1000.0, 1080.0, 1190.0])
    difference = predicted - true  # 10, -20, 20, 15
    found = bland_altman(predicted, true)
    assert found["bias"] == pytest.approx(6.25) and found["sd"] == pytest.approx(statistics.stdev(difference))
    assert found["loa_low"] == pytest.approx(6.25 - 1.96 * statistics.stdev(difference))
    pooled = agreement(np.append(predicted, np.nan), np.append(true, 900.0))  # a missing segment is left out
    assert pooled["n"] == 4 and pooled["r"] == pytest.approx(np.corrcoef(predicted, true)[0, 1])
    labels = np.zeros((1, 2, 4), np.uint8)
    labels[0, 0, :2], labels[0, 1, :] = 1, 16
    values = np.array([[[1000.0, 1200.0, 5.0, 5.0], [900.0, 950.0, np.nan, 0.0]]])
    means = segment_means(labels, values, mask=values > 0)
    assert means[0] == 1100.0 and means[15] == 925.0 and np.isnan(means[1:15]).all()


def test_scar_enhancement_demo_through_the_harness_gives_the_pre_port_numbers(tmp_path, capsys):
    """`cmrsynth demo` now runs the harness; its per-slice numbers equal the pre-port path (heldout_cases,
    enhance_slices over the chosen slices, evaluate_slice), which the old demo used."""
    from CMRSynthesisLib.demo import evaluate_slice, heldout_cases
    from CMRSynthesisLib.methods import load_method

    fast = ["--samples", "2", "--sampler", "ddim", "--ddim-steps", "4", "--seed", "3", "--device", "cpu"]
    assert main(["demo", "--out", str(tmp_path), "--split", "test", "--subjects", "1", "--slices", "1", *fast,
                 "--progress", "none"]) == 0
    assert "Enhanced (this run)" in capsys.readouterr().out
    document = json.loads((tmp_path / "test" / "metrics.json").read_text())
    method = load_method("scar_enhancement", device="cpu")
    (case,) = heldout_cases(1, 1, method.segmenter)
    lge, roi, chosen = case["study"]["lge"], case["roi"], case["slices"]
    enhanced, _ = method.enhance_slices(lge.array[chosen], roi[chosen], steps=250, samples=2, seed=3, sampler="ddim",
                                        ddim_steps=4, slice_keys=[lge.slice_keys()[z] for z in chosen])
    masks = {name: case["study"]["masks"][name][chosen[0]] for name in ("scar", "myocardium", "blood", "heart_roi")}
    row, _ = evaluate_slice(lge.array[chosen[0]], enhanced[0], masks, roi[chosen[0]], method.config)
    (measured,) = document["cases"]
    assert (measured["subject"], measured["slice"]) == (case["study"]["subject"].subject_id, chosen[0])
    assert measured["roi_dice"] == row["roi_dice"]
    prefixes = {"input": "input", "scar_enhancement": "enhanced", "target": "target"}
    flat = {f"{prefixes[model]}_{key}": value for model, values in measured["models"].items()
            for key, value in values.items()}
    assert flat == {key: value for key, value in row.items() if key != "roi_dice"}
    assert (tmp_path / "test" / "demo_figure.png").is_file() and (tmp_path / "test" / "figure.png").is_file()


def test_scar_enhancement_is_offered_with_its_declared_evaluation():
    spec = get_spec("scar_enhancement")
    assert spec.evaluation is not None and spec.evaluation.reference_row.name == "target"
    assert [baseline.name for baseline in spec.evaluation.baselines] == ["input"]
    changed = dataclasses.replace(spec.evaluation, cases=functools.partial(spec.evaluation.cases, slices=1))
    assert changed.cases.keywords == {"slices": 1}
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", "enhance", "--help"])
    assert stopped.value.code == 0


def test_mean_of_present_leaves_out_missing_values_only():
    assert mean_of_present([1.0, None, 2.0, 0.0]) == pytest.approx(1.0)
    assert mean_of_present([None, None]) is None
    assert mean_of_present([]) is None
