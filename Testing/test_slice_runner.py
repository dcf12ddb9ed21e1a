"""The shared slice runner (per-slice generators, progress over slices x steps) and the progress reporter's time
estimate."""

import io
import json

import pytest
import torch

from CMRSynthesisLib.errors import Cancelled
from CMRSynthesisLib.progress import Reporter, describe_time_left, time_left
from CMRSynthesisLib.slice_runner import run_slices

STEPS = 4


def noisy_work(calls: list[int]):
    """One slice's job: STEPS reported steps, then a draw from the slice's generator."""
    def work(index: int, generator: torch.Generator, progress) -> float:
        calls.append(index)
        for step in range(STEPS):
            progress(step / STEPS, f"step {step + 1}/{STEPS}")
        return float(torch.rand(1, generator=generator))
    return work


def test_progress_counts_slice_step_units_in_order():
    updates = []
    run_slices([10, 20, 30], noisy_work([]), seed=0, device=torch.device("cpu"),
               progress=lambda f, m: updates.append((f, m)), start=0.1, end=1.0)
    fractions = [f for f, _ in updates]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # the step s of slice i is reported at 0.1 + 0.9 (i + s / STEPS) / 3
    step_updates = [(f, m) for f, m in updates if "step" in m]
    expected = [0.1 + 0.9 * (i + s / STEPS) / 3 for i in range(3) for s in range(STEPS)]
    assert [f for f, _ in step_updates] == pytest.approx(expected)
    assert step_updates[5][1] == "slice 2/3: step 2/4"


def test_a_slice_draws_the_same_alone_or_in_any_stack():
    device = torch.device("cpu")
    stack = run_slices([7, -3, 12], noisy_work([]), seed=5, device=device)
    alone = run_slices([-3], noisy_work([]), seed=5, device=device)
    reordered = run_slices([12, 7, -3], noisy_work([]), seed=5, device=device)
    assert alone[0] == stack[1] == reordered[2]
    assert stack[0] == reordered[1] and len(set(stack)) == 3
    assert run_slices([-3], noisy_work([]), seed=6, device=device)[0] != alone[0]


def test_cancelling_stops_before_the_next_slice():
    calls = []

    def progress(fraction, message):
        return not message.startswith("slice 2/")  # the user cancels as slice 2 starts

    with pytest.raises(Cancelled):
        run_slices([1, 2, 3], noisy_work(calls), seed=0, device=torch.device("cpu"), progress=progress)
    assert calls == [0]


def test_time_left_from_the_fraction_done():
    assert time_left(0.005, 10.0) is None  # too early to say
    assert time_left(0.25, 30.0) == 90.0 and time_left(1.0, 30.0) == 0.0
    assert describe_time_left(None) == "" and describe_time_left(40.4) == "about 40 s left"
    assert describe_time_left(600.0) == "about 10 min left"


def test_json_reporter_carries_elapsed_and_time_left():
    stream = io.StringIO()
    reporter = Reporter("json", stream)
    reporter(0.0, "starting")
    reporter(0.5, "slice 1/2: step 3/3")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["fraction"] for line in lines] == [0.0, 0.5]
    assert lines[0]["eta_s"] is None and lines[1]["eta_s"] == pytest.approx(lines[1]["elapsed_s"], abs=0.15)
    assert all(line["type"] == "progress" and line["elapsed_s"] >= 0 for line in lines)


@pytest.mark.parametrize("mode", ["json", "none"])
def test_only_the_bar_mode_draws_a_bar(mode, capsys):
    stream = io.StringIO()
    reporter = Reporter(mode, stream)
    reporter(0.5, "halfway")
    reporter.close()
    assert reporter.bar is None and capsys.readouterr().err == ""
    assert (stream.getvalue() != "") == (mode == "json")
