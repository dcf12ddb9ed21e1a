"""Run the `cmrsynth` command line in a child process and follow its progress, without Qt.

With `--progress json` the command prints one JSON object per line on stdout: {"type": "progress", "fraction",
"message"} updates, then {"type": "result", "outputs", "summary"} (exit code 0) or {"type": "error", "message"}
(exit code 1). Any other line, and all of stderr, is log text. Both streams are read on background threads into a
queue; the owner drains it with `poll()` (from a GUI timer, so the GUI stays live) or blocks in `wait()`.
`cancel()` kills the child and every process it started.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .progress import describe_time_left

CLI_MODULE = "CMRSynthesisLib.cli"
LIBRARY_ROOT = Path(__file__).resolve().parents[1]  # the folder holding the CMRSynthesisLib package
LOG_LINES_KEPT = 500


class State(enum.Enum):
    NOT_STARTED = "not started"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclasses.dataclass
class Result:
    """How a run ended. outputs: name -> file the command wrote (only on success). message: the command's own
    error message, or why the run failed or stopped; empty on success. log: the last LOG_LINES_KEPT log lines."""

    state: State
    outputs: dict[str, Path]
    summary: dict[str, Any]
    message: str
    returncode: int | None
    log: list[str]


def cli_command(subcommand: str, options: Mapping[str, Any], *, python: str = sys.executable,
                module: str = CLI_MODULE) -> list[str]:
    """[python, -m, module, subcommand, --option value, ..., --progress, json].

    Option names become flags with "_" written "-" (roi_out -> --roi-out); options whose value is None or False are
    left out, True is a bare flag (--resample), and a value starting with a minus sign is written --name=value so
    that argparse does not read it as an option (--insertion-points=-12.5,40,3;...).
    """
    command = [python, "-m", module, subcommand]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value is not None and value is not False:
            command += [f"{flag}={value}"] if str(value).startswith("-") else [flag, str(value)]
    return command + ["--progress", "json"]


def child_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with the library's folder first on PYTHONPATH, so that
    `python -m CMRSynthesisLib.cli` finds this copy, and with unbuffered UTF-8 output, so progress arrives live."""
    environment = dict(os.environ if base is None else base)
    paths = [str(LIBRARY_ROOT)] + ([environment["PYTHONPATH"]] if environment.get("PYTHONPATH") else [])
    environment.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    return environment


class CliProcess:
    """One run of a command that speaks the JSON progress protocol.

    on_progress(fraction, message) and on_log(line) are called from `poll()` / `wait()`, in the caller's thread.
    """

    def __init__(self, command: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                 on_progress: Callable[[float, str], Any] | None = None,
                 on_log: Callable[[str], Any] | None = None) -> None:
        self.command = [str(part) for part in command]
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.on_progress = on_progress
        self.on_log = on_log
        self.state = State.NOT_STARTED
        self.result: Result | None = None
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._log: deque[str] = deque(maxlen=LOG_LINES_KEPT)
        self._outputs: dict[str, Path] | None = None
        self._summary: dict[str, Any] = {}
        self._error = ""
        self._cancelled = False

    def start(self) -> None:
        """Start the child (in its own process group / session, so cancel can end all it starts)."""
        if self.state is not State.NOT_STARTED:
            raise RuntimeError("this command was already started")
        if os.name == "nt":
            platform_options = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
        else:
            platform_options = {"start_new_session": True}
        self._process = subprocess.Popen(
            self.command, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", bufsize=1, **platform_options)
        self.state = State.RUNNING
        stderr_reader = threading.Thread(target=self._read, args=(self._process.stderr, "stderr"), daemon=True)
        stderr_reader.start()
        threading.Thread(target=self._read_until_exit, args=(stderr_reader,), daemon=True).start()

    def poll(self) -> State:
        """Handle every line that arrived, without blocking; returns the state (RUNNING until the child has ended
        and all its output has been handled)."""
        while self.state is State.RUNNING:
            try:
                self._handle(*self._lines.get_nowait())
            except queue.Empty:
                break
        return self.state

    def wait(self, timeout: float | None = None) -> Result:
        """Block until the run ends, handling lines as they come; TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.state is State.RUNNING:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"the command is still running after {timeout} s: {' '.join(self.command)}")
            try:
                self._handle(*self._lines.get(timeout=remaining))
            except queue.Empty:
                continue
        if self.result is None:
            raise RuntimeError("this command was never started")
        return self.result

    def cancel(self) -> None:
        """Kill the child and all its descendants; the run then ends in State.CANCELLED."""
        if self.state is not State.RUNNING or self._cancelled:
            return
        self._cancelled = True
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._process.pid)], check=False,  # may be gone
                           capture_output=True, creationflags=subprocess.CREATE_NO_WINDOW)
        else:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:  # already gone
                pass

    def _read(self, stream, source: str) -> None:
        for line in stream:
            self._lines.put((source, line.rstrip("\r\n")))
        stream.close()

    def _read_until_exit(self, stderr_reader: threading.Thread) -> None:
        self._read(self._process.stdout, "stdout")
        stderr_reader.join()
        self._lines.put(("exit", self._process.wait()))

    def _handle(self, source: str, payload: Any) -> None:
        if source == "exit":
            self._finish(payload)
            return
        message = _json_object(payload) if source == "stdout" else None
        kind = message.get("type") if message else None
        if kind == "progress":
            if self.on_progress is not None:
                fraction = min(max(float(message.get("fraction", 0.0)), 0.0), 1.0)
                left = describe_time_left(_number(message.get("eta_s")))
                text = str(message.get("message", ""))
                self.on_progress(fraction, f"{text} ({left})" if left and fraction < 1.0 else text)
        elif kind == "result":
            self._outputs = {name: Path(path) for name, path in message.get("outputs", {}).items()}
            self._summary = dict(message.get("summary", {}))
        elif kind == "error":
            self._error = str(message.get("message", ""))
        else:
            self._log.append(payload)
            if self.on_log is not None:
                self.on_log(payload)

    def _finish(self, returncode: int) -> None:
        outputs, message = {}, ""
        if self._cancelled:
            state, message = State.CANCELLED, "cancelled by the user"
        elif returncode != 0:
            state = State.FAILED
            message = self._error or f"{self._last_log_line()} (the command stopped with exit code {returncode})"
        elif self._outputs is None:
            state, message = State.FAILED, "the command finished without reporting its outputs"
        else:
            missing = [str(path) for path in self._outputs.values() if not path.is_file()]
            state = State.FAILED if missing else State.SUCCEEDED
            message = f"the command reported outputs that do not exist: {', '.join(missing)}" if missing else ""
            outputs = {} if missing else self._outputs
        self.result = Result(state, outputs, self._summary, message, returncode, list(self._log))
        self.state = state

    def _last_log_line(self) -> str:
        return next((line.strip() for line in reversed(self._log) if line.strip()), "no output")


def _number(value: Any) -> float | None:
    """A JSON number as a float; None for null or anything else."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _json_object(line: str) -> dict[str, Any] | None:
    """The line as a JSON object, or None when it is plain text."""
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def remarks(summary: Mapping[str, Any]) -> str:
    """What a command passed over or assumed, for the panel's status line: the summary's "notes", then its
    "skipped" lines (files and images left out); empty when it has neither."""
    parts = [str(note) for note in summary.get("notes") or []]
    skipped = [str(line) for line in summary.get("skipped") or []]
    if skipped:
        parts.append("Left out: " + "; ".join(skipped))
    return " ".join(part if part.endswith(".") else part + "." for part in parts)
