"""benchmarks/compare_runs.py: models of evaluation runs paired by case (and by seed when each model has one run per
seed), on hand-made metrics.json documents."""

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from compare_runs import compare, main, markdown, parse_named


def write_run(root: Path, psnr: list[float], dice: list[float | None]) -> Path:
    """One run's test family: cases (subject 1, slices 0..n-1) of the model "virtual_lge"."""
    cases = [{"subject": 1, "slice": index, "models": {"virtual_lge": {"psnr": p, "scar_dice": d}}}
             for index, (p, d) in enumerate(zip(psnr, dice))]
    document = {"models": {"virtual_lge": {}}, "cases": cases, "higher_is_better": ["psnr", "scar_dice"],
                "lower_is_better": ["mse"]}
    (root / "test").mkdir(parents=True)
    (root / "test" / "metrics.json").write_text(json.dumps(document))
    return root


def test_compare_pairs_cases_and_tests_against_the_first(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [10.0 + i for i in range(8)], [0.5, None, 0.4, 0.6, None, 0.5, 0.3, 0.7])
    better = write_run(tmp_path / "better", [11.0 + i + 0.01 * i for i in range(8)],
                       [0.6, None, 0.5, 0.7, None, 0.6, 0.4, 0.8])
    result = compare({"base": [(base, "virtual_lge")], "better": [(better, "virtual_lge")]}, "test")
    assert result["metrics"] == ["psnr", "scar_dice"]  # mse has no value: left out
    assert result["models"]["base"]["against_reference"] == {}
    psnr = result["models"]["better"]["against_reference"]["psnr"]
    assert psnr["n"] == 8 and psnr["method_better"] is True and psnr["p_wilcoxon"] == pytest.approx(2 / 256)
    assert result["models"]["better"]["against_reference"]["scar_dice"]["n"] == 6  # slices without scar left out
    assert result["models"]["better"]["means"]["scar_dice"] == pytest.approx(0.6)
    assert "p = 0.0078, n = 8" in markdown(result)


def test_compare_names_a_missing_family_or_model(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [10.0], [0.5])
    with pytest.raises(ValueError, match="family ood"):
        compare({"a": [(run, "virtual_lge")]}, "ood")
    with pytest.raises(ValueError, match="no model 'pix2pix'"):
        compare({"a": [(run, "pix2pix")]}, "test")
    with pytest.raises(ValueError, match="same number of runs"):
        compare({"a": [(run, "virtual_lge"), (run, "virtual_lge")], "b": [(run, "virtual_lge")]}, "test")
    assert parse_named("lr=runs/a:b:virtual_lge") == ("lr", [(Path("runs/a:b"), "virtual_lge")])
    assert parse_named("s=r0:m,r1:pix2pix") == ("s", [(Path("r0"), "m"), (Path("r1"), "pix2pix")])
    for bad in ("r0:m", "s=r0", "s=r0:m,r1"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=RUN_DIR:MODEL"):
            parse_named(bad)


def test_compare_pools_seeds_pairing_each_case_within_its_seed(tmp_path: Path) -> None:
    """Seed 1's cases repeat seed 0's (subject, slice) keys: pooled, they are 2 x 4 pairs, never crossed over seeds."""
    base = [write_run(tmp_path / "base0", [10.0, 11.0, 12.0, 13.0], [0.5] * 4),
            write_run(tmp_path / "base1", [20.0, 21.0, 22.0, 23.0], [0.5] * 4)]
    other = [write_run(tmp_path / "other0", [10.5, 11.5, 12.5, 13.5], [0.5] * 4),
             write_run(tmp_path / "other1", [19.0, 20.0, 21.0, 22.0], [0.5] * 4)]
    result = compare({"base": [(run, "virtual_lge") for run in base],
                      "other": [(run, "virtual_lge") for run in other]}, "test")
    entry = result["models"]["other"]
    assert entry["cases"] == 8 and entry["means_per_run"]["psnr"] == [12.0, 20.5]
    assert entry["means"]["psnr"] == pytest.approx(16.25)
    psnr = entry["against_reference"]["psnr"]
    assert psnr["n"] == 8  # had seeds been crossed, other's seed-1 cases would meet base's seed-0 ones
    assert psnr["method_better"] is False  # 4 pairs +0.5 dB, 4 pairs -1 dB: worse on the mean difference
    assert "16.25 [12 / 20.5]" in markdown(result)


def test_compare_keeps_every_case_of_a_slice(tmp_path: Path) -> None:
    """Multi-sequence synthesis scores each slice once per direction: three cases share (subject, slice) and pair in
    their order, none overwriting another."""
    def write(root: Path, offset: float) -> Path:
        cases = [{"subject": 1, "slice": index, "models": {"m": {f"psnr_{target}": 10.0 + index + offset}}}
                 for index in range(6) for target in ("bssfp", "t2w", "lge")]
        (root / "test").mkdir(parents=True)
        (root / "test" / "metrics.json").write_text(json.dumps(
            {"models": {"m": {}}, "cases": cases, "higher_is_better": ["psnr_bssfp", "psnr_t2w", "psnr_lge"],
             "lower_is_better": []}))
        return root

    result = compare({"a": [(write(tmp_path / "a", 0.0), "m")], "b": [(write(tmp_path / "b", 1.0), "m")]}, "test")
    assert result["metrics"] == ["psnr_bssfp", "psnr_t2w", "psnr_lge"]
    assert result["models"]["b"]["cases"] == 18
    for metric in result["metrics"]:
        assert result["models"]["b"]["against_reference"][metric]["n"] == 6
        assert result["models"]["b"]["means"][metric] == pytest.approx(13.5)


def test_the_command_names_a_missing_run_without_a_traceback(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["compare_runs.py", "--family", "test", f"a={tmp_path / 'absent'}:virtual_lge"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert "absent/test/metrics.json does not exist" in capsys.readouterr().err
