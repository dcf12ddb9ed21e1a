"""`cmrsynth batch`: a method over a list of studies; a bad study is recorded and the others finish; a rerun does
only what is missing; under torchrun two CPU ranks share the list."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from CMRSynthesisLib.batch import read_study_list
from CMRSynthesisLib.cli import main
from CMRSynthesisLib.errors import InputError
from CMRSynthesisLib.io import read_volume, write_volume
from CMRSynthesisLib.methods import get_spec
from CMRSynthesisLib.volume import Volume

ROOT = Path(__file__).resolve().parents[1]


def write_list(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def toy_studies(folder: Path) -> Path:
    """Three studies: a and c with an image (c also a mask), b naming an image that does not exist."""
    for name, value in (("a", 1.0), ("c", 3.0)):
        write_volume(Volume(np.full((2, 3, 4), value, np.float32)), folder / f"{name}.nrrd")
    write_volume(Volume(np.ones((2, 3, 4), np.uint8)), folder / "mask_c.nrrd")
    return write_list(folder / "studies.csv", [{"study": "a", "image": "a.nrrd", "mask": ""},
                                               {"study": "b", "image": "missing.nrrd", "mask": ""},
                                               {"study": "c", "image": "c.nrrd", "mask": "mask_c.nrrd"}])


def statuses(out: Path) -> dict[str, str]:
    with (out / "batch_status.csv").open() as handle:
        return {row["study"]: row["status"] for row in csv.DictReader(handle)}


def test_a_bad_study_is_recorded_and_a_rerun_does_only_what_is_missing(toy, tmp_path, capsys):
    studies, out = toy_studies(tmp_path), tmp_path / "out"
    command = ["batch", "toy_negate", "--studies", str(studies), "--out-dir", str(out), "--scale", "2",
               "--progress", "none"]
    assert main(command) == 1  # a study failed: the others ran, and the exit status says so
    assert statuses(out) == {"a": "done", "b": "failed", "c": "done"}
    printed = capsys.readouterr()
    assert "1 of 3 studies failed (the others ran)" in printed.err
    result = json.loads(printed.out)
    failed = next(row for row in result["summary"]["studies"] if row["study"] == "b")
    assert "missing.nrrd" in failed["message"]
    np.testing.assert_array_equal(read_volume(out / "a" / "negated.nii.gz").array, -2.0)
    np.testing.assert_array_equal(read_volume(out / "c" / "changed.nii.gz").array, 1)
    assert not (out / "b").exists() or not (out / "b" / "done.json").exists()
    stamps = {name: (out / name / "negated.nii.gz").stat().st_mtime_ns for name in ("a", "c")}

    write_volume(Volume(np.full((2, 3, 4), 5.0, np.float32)), tmp_path / "missing.nrrd")  # the bad study mended
    assert main(command) == 0
    assert statuses(out) == {"a": "already done", "b": "done", "c": "already done"}
    assert {name: (out / name / "negated.nii.gz").stat().st_mtime_ns for name in ("a", "c")} == stamps
    np.testing.assert_array_equal(read_volume(out / "b" / "negated.nii.gz").array, -10.0)
    record = json.loads((out / "b" / "done.json").read_text())
    assert record["method"] == "toy_negate" and record["summary"]["changed_voxels"] == 24
    assert record["settings"]["scale"] == 2.0


def test_a_rerun_with_other_settings_refuses_the_studies_done_with_the_old_ones(toy, tmp_path, capsys):
    studies, out = toy_studies(tmp_path), tmp_path / "out"
    command = ["batch", "toy_negate", "--studies", str(studies), "--out-dir", str(out), "--progress", "none"]
    assert main([*command, "--scale", "2"]) == 1  # b's image is missing
    capsys.readouterr()
    before = {name: (out / name / "negated.nii.gz").read_bytes() for name in ("a", "c")}
    assert main([*command, "--scale", "3"]) == 1
    printed = capsys.readouterr()
    assert "3 of 3 studies failed:" in printed.err
    result = json.loads(printed.out)
    rows = {row["study"]: row for row in result["summary"]["studies"]}
    assert {name: row["status"] for name, row in rows.items()} == {"a": "failed", "b": "failed", "c": "failed"}
    assert "other settings (scale: 2.0 -> 3.0)" in rows["a"]["message"]
    assert {name: (out / name / "negated.nii.gz").read_bytes() for name in ("a", "c")} == before  # kept as they were


@pytest.mark.parametrize("rows, message", [
    ([{"study": "a", "picture": "a.nrrd"}], "unknown columns"),
    ([{"study": "a", "mask": "a.nrrd"}], "no column"),
    ([{"study": "a", "image": ""}], "line 2: no image"),
    ([{"study": "a", "image": "a.nrrd"}, {"study": "a", "image": "c.nrrd"}], "two studies named 'a'"),
])
def test_a_bad_study_list_is_refused(toy, tmp_path, rows, message):
    with pytest.raises(InputError, match=message):
        read_study_list(write_list(tmp_path / "list.csv", rows), toy)


def test_study_names_default_to_the_first_input_and_are_safe_folder_names(toy, tmp_path):
    rows = [{"study": "", "image": "x/p 1.nrrd"}, {"study": "../up", "image": "y.nrrd"},
            {"study": "..", "image": "z.nrrd"}]
    studies = read_study_list(write_list(tmp_path / "list.csv", rows), toy)
    assert [name for name, _ in studies] == ["p_1.nrrd", ".._up", "__"]
    assert studies[0][1]["image"] == tmp_path / "x" / "p 1.nrrd" and studies[0][1]["mask"] is None


def test_two_torchrun_ranks_share_the_list(tmp_path):
    """The cine segmenter over three one-frame stacks (one unreadable) with 2 CPU ranks, then a rerun."""
    rng = np.random.default_rng(0)
    for name in ("s1", "s2"):
        write_volume(Volume(rng.random((2, 48, 48)).astype(np.float32), spacing=(1.5, 1.5, 8.0)),
                     tmp_path / f"{name}.nii.gz")
    (tmp_path / "s3.nii.gz").write_bytes(b"not an image")
    studies = write_list(tmp_path / "list.csv", [{"study": f"s{index}", "cine": f"s{index}.nii.gz"}
                                                 for index in (1, 2, 3)])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "CMRSynthesisLib.cli", "batch",
               "segment", "--studies", str(studies), "--out-dir", str(out), "--device", "cpu", "--progress", "none"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode != 0 and "1 of 3 studies failed" in run.stderr, run.stderr[-3000:]  # s3
    table = json.loads((out / "batch_status.json").read_text())
    rows = {row["study"]: row for row in table["studies"]}
    assert {name: row["status"] for name, row in rows.items()} == {"s1": "done", "s2": "done", "s3": "failed"}
    assert {row["rank"] for row in rows.values()} == {0, 1}  # s1 and s3 on rank 0, s2 on rank 1
    labels = read_volume(out / "s2" / "labels.nii.gz")
    assert labels.array.shape == (2, 48, 48) and set(np.unique(labels.array)) <= {0, 1, 2, 3}
    assert get_spec("cine_segmentation").main_output.name == "labels"
    rerun = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300,
                         check=False)
    assert rerun.returncode != 0, rerun.stderr[-3000:]
    table = json.loads((out / "batch_status.json").read_text())
    assert [row["status"] for row in table["studies"]] == ["already done", "already done", "failed"]
