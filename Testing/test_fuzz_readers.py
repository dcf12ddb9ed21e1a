"""A small seeded run of the reader fuzz (benchmarks/fuzz_readers.py, which runs a few hundred cases): damaged
copies of the real DICOM files in Testing/Data are refused with our own errors, naming the damaged file, or read
whole; never another exception type, a hang, a crash, or a series silently missing the damaged file."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fuzz_readers

CASES, SEED = 100, 0  # every target x mutation pair, four times
TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def baselines() -> dict:
    return fuzz_readers.baselines()


@pytest.mark.parametrize("case", fuzz_readers.make_cases(CASES, SEED),
                         ids=lambda case: f"{case.index:02d}-{case.target.name}-{case.mutation}")
def test_damaged_dicom_is_refused_naming_the_file_or_read_whole(case, baselines):
    report = fuzz_readers.run_one(case, baselines[case.baseline_key], TIMEOUT_S)
    assert report["outcome"] not in fuzz_readers.FAILURES, report
    if report["outcome"] == "refused":
        assert report["names_file"], f"the message does not name {report['file']}: {report['message']}"
