"""process.py against a small fake command line that speaks the JSON progress protocol (not the real CLI)."""

import os
import sys
import time
from pathlib import Path

import pytest

from CMRSynthesisLib import process
from CMRSynthesisLib.process import CliProcess, State

FAKE_CLI = r'''
import json, os, subprocess, sys, time

def emit(kind, **fields):
    print(json.dumps({"type": kind, **fields}), flush=True)

mode, folder = sys.argv[1], sys.argv[2]
if mode == "ok":
    print("loading checkpoint", flush=True)
    print("a warning on stderr", file=sys.stderr, flush=True)
    for index in range(3):
        emit("progress", fraction=(index + 1) / 3, message=f"slice {index + 1}/3", eta_s=[None, 150.0, 0.0][index])
    path = os.path.join(folder, "enhanced.nrrd")
    open(path, "w").close()
    emit("result", outputs={"enhanced": path}, summary={"roi_voxels": 12})
elif mode == "error":
    emit("progress", fraction=0.1, message="reading")
    emit("error", message="LGE.nrrd: is a 2D image; expected 3D")
    sys.exit(1)
elif mode == "crash":
    raise ValueError("boom in the model")
elif mode == "silent":
    pass
elif mode == "missing":
    emit("result", outputs={"enhanced": os.path.join(folder, "never-written.nrrd")}, summary={})
elif mode == "hang":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    emit("progress", fraction=0.0, message=f"grandchild {child.pid}")
    time.sleep(60)
'''


@pytest.fixture
def fake_cli(tmp_path):
    script = tmp_path / "fake_cli.py"
    script.write_text(FAKE_CLI)
    return lambda mode: [sys.executable, str(script), mode, str(tmp_path)]


def test_cli_command_spells_options_as_flags_and_asks_for_json():
    command = process.cli_command("enhance", {"lge": Path("/in/lge.nrrd"), "roi": None, "roi_out": "/t/roi.nrrd",
                                              "steps": 25}, python="/slicer/PythonSlicer")
    assert command == ["/slicer/PythonSlicer", "-m", "CMRSynthesisLib.cli", "enhance", "--lge", "/in/lge.nrrd",
                       "--roi-out", "/t/roi.nrrd", "--steps", "25", "--progress", "json"]


def test_cli_command_spells_switches_and_negative_values_so_the_real_parser_reads_them(tmp_path):
    from CMRSynthesisLib.cli import build_parser

    options = {"native": "n.nrrd", "post": "p.nrrd", "haematocrit": 0.42, "blood": "b.nrrd", "out": "e.nrrd",
               "resample": True}
    command = process.cli_command("ecv", {**options, "myocardium": None}, python="py")
    assert command[command.index("--resample") - 2:command.index("--resample") + 1] == ["--out", "e.nrrd",
                                                                                        "--resample"]
    assert build_parser().parse_args(command[3:]).resample is True
    assert "--resample" not in process.cli_command("ecv", {**options, "resample": False}, python="py")
    points = "-12.5,40,3;-30,22.1,-5"
    command = process.cli_command("aha", {"myocardium": "m.nrrd", "map": "t1.nrrd", "insertion_points": points,
                                          "out_dir": str(tmp_path)}, python="py")
    assert f"--insertion-points={points}" in command
    assert build_parser().parse_args(command[3:]).insertion_points == points


def test_success_reports_progress_log_outputs_and_summary(fake_cli, tmp_path):
    progress, log = [], []
    run = CliProcess(fake_cli("ok"), on_progress=lambda f, m: progress.append((round(f, 3), m)), on_log=log.append)
    run.start()
    result = run.wait(timeout=30)
    assert result.state is State.SUCCEEDED and result.returncode == 0 and result.message == ""
    assert progress == [(0.333, "slice 1/3"), (0.667, "slice 2/3 (about 2 min left)"), (1.0, "slice 3/3")]
    assert sorted(log) == ["a warning on stderr", "loading checkpoint"]
    assert result.outputs == {"enhanced": tmp_path / "enhanced.nrrd"}
    assert result.summary == {"roi_voxels": 12}


def test_polling_drains_lines_without_blocking(fake_cli):
    """The GUI's timer path: poll() returns RUNNING until the child has ended and every line was handled."""
    progress = []
    run = CliProcess(fake_cli("ok"), on_progress=lambda f, m: progress.append(m))
    assert run.poll() is State.NOT_STARTED
    run.start()
    states = []
    deadline = time.monotonic() + 30
    while run.poll() is State.RUNNING and time.monotonic() < deadline:
        states.append(State.RUNNING)
        time.sleep(0.01)
    assert states and run.state is State.SUCCEEDED
    assert progress == ["slice 1/3", "slice 2/3 (about 2 min left)", "slice 3/3"]


def test_handled_error_shows_the_tools_own_message(fake_cli):
    run = CliProcess(fake_cli("error"))
    run.start()
    result = run.wait(timeout=30)
    assert result.state is State.FAILED and result.returncode == 1
    assert result.message == "LGE.nrrd: is a 2D image; expected 3D"
    assert result.outputs == {}


def test_crash_reports_the_last_error_line_and_exit_code(fake_cli):
    run = CliProcess(fake_cli("crash"))
    run.start()
    result = run.wait(timeout=30)
    assert result.state is State.FAILED
    assert result.message == "ValueError: boom in the model (the command stopped with exit code 1)"
    assert any("Traceback" in line for line in result.log)


@pytest.mark.parametrize(("mode", "reason"), [("silent", "without reporting its outputs"),
                                              ("missing", "never-written.nrrd")])
def test_success_without_usable_outputs_is_a_failure(fake_cli, mode, reason):
    run = CliProcess(fake_cli(mode))
    run.start()
    result = run.wait(timeout=30)
    assert result.returncode == 0 and result.state is State.FAILED and reason in result.message


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a killed orphan may wait for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(os.name == "nt", reason="process-group kill is POSIX; Windows uses taskkill /T")
def test_cancel_kills_the_child_and_its_children(fake_cli):
    messages = []
    run = CliProcess(fake_cli("hang"), on_progress=lambda f, m: messages.append(m))
    run.start()
    deadline = time.monotonic() + 30
    while not messages and time.monotonic() < deadline:
        run.poll()
        time.sleep(0.01)
    grandchild = int(messages[0].split()[1])
    assert _alive(grandchild)
    with pytest.raises(TimeoutError):
        run.wait(timeout=0.2)
    run.cancel()
    result = run.wait(timeout=30)
    assert result.state is State.CANCELLED and result.message == "cancelled by the user"
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the grandchild survived the cancel"


def test_child_environment_makes_this_library_importable(tmp_path):
    """The child finds this copy of CMRSynthesisLib from any working folder, as PythonSlicer must inside Slicer.
    `python -S` skips site-packages (where the editable install lives), so only PYTHONPATH can provide it."""
    report = ("import json, CMRSynthesisLib; print(json.dumps({'type': 'result', 'outputs': {}, "
              "'summary': {'library': CMRSynthesisLib.__file__}}))")
    base = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(tmp_path)}
    environment = process.child_environment(base)
    assert environment["PYTHONPATH"].split(os.pathsep) == [str(process.LIBRARY_ROOT), str(tmp_path)]
    results = {}
    for name, env in (("without", base), ("with", environment)):
        run = CliProcess([sys.executable, "-S", "-c", report], env=env, cwd=tmp_path)
        run.start()
        results[name] = run.wait(timeout=30)
    assert results["without"].state is State.FAILED and "ModuleNotFoundError" in results["without"].message
    assert results["with"].state is State.SUCCEEDED
    assert Path(results["with"].summary["library"]).parent == process.LIBRARY_ROOT / "CMRSynthesisLib"


def test_remarks_give_notes_then_what_was_left_out():
    from CMRSynthesisLib.process import remarks

    assert remarks({}) == ""
    summary = {"notes": ["the slices are unevenly spaced"], "skipped": ["2 phase image(s): a, b", "1 non-DICOM file"]}
    assert remarks(summary) == ("the slices are unevenly spaced. Left out: 2 phase image(s): a, b; 1 non-DICOM "
                                "file.")
