"""A method over many studies: `cmrsynth batch METHOD --studies LIST.csv --out-dir DIR [the method's settings]`.

LIST is a CSV with a header: an optional `study` column (the study's name, also its output folder; default: the
first input file's name) and one column per input role of the method (file or folder paths, relative to the CSV's
folder; an empty cell leaves an optional input out). The model is loaded once. Each study's outputs go to
DIR/<study>/<output>.nii.gz, then DIR/<study>/done.json (written last) records them with the run's summary, so a
rerun skips what is done and does only what is missing. A study that fails (unreadable input, bad geometry, ...)
is recorded with its error and the others go on; DIR/batch_status.csv and .json list every study's status
("done", "already done" or "failed"), message and seconds.

Under torchrun (`torchrun --nproc_per_node N -m CMRSynthesisLib.cli batch ...`) rank r takes studies r, r + N,
r + 2N, ... of the list on its own device (`distributed.setup`), and rank 0 writes the status table once all are
finished.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import time
from pathlib import Path
from typing import Any

from .distributed import Context, barrier
from .errors import Cancelled, CMRSynthesisError, InputError
from .io.writing import atomic_write_bytes
from .method_commands import (
    check_outputs,
    cine_shaped,
    method_options,
    read_inputs,
    summarise,
    write_outputs,
)
from .methods.registry import MethodSpec
from .progress import Progress, report

STUDY_COLUMN = "study"
DONE_FILE = "done.json"
STATUS_NAME = "batch_status"
STATUS_FIELDS = ("study", "status", "message", "seconds", "rank")


def read_study_list(path: str | Path, spec: MethodSpec) -> list[tuple[str, dict[str, Path | None]]]:
    """The studies of a CSV list as (name, {input role: path or None}), in list order.

    InputError naming the file and row for: an unreadable file, a missing column of a required role, an unknown
    column, an empty required cell, or two studies of one name. Names are made safe as folder names (characters
    other than letters, digits, '.', '_' and '-' become '_'; a name of dots only becomes underscores).
    """
    path = Path(path)
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path}: cannot read the study list: {error}") from error
    roles = {role.name: role for role in spec.inputs}
    columns = set(rows[0]) if rows else set()
    unknown = sorted(columns - set(roles) - {STUDY_COLUMN})
    missing = [name for name, role in roles.items() if role.required and name not in columns]
    if not rows or unknown or missing:
        expected = ", ".join([STUDY_COLUMN, *roles])
        problem = "no studies" if not rows else f"unknown columns {unknown}" if unknown else f"no column {missing}"
        raise InputError(f"{path}: {problem}; {spec.command} takes the columns {expected}")
    studies, seen = [], {}
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        paths: dict[str, Path | None] = {}
        for name, role in roles.items():
            cell = (row.get(name) or "").strip()
            if not cell and role.required:
                raise InputError(f"{path}, line {number}: no {name} given ({role.help})")
            paths[name] = (path.parent / cell) if cell else None
        first = next(value for value in paths.values() if value is not None)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", (row.get(STUDY_COLUMN) or "").strip() or first.name)
        name = "_" * len(name) if set(name) <= {"."} else name  # never "." or ".."
        if name in seen:
            raise InputError(f"{path}, lines {seen[name]} and {number}: two studies named {name!r}")
        seen[name] = number
        studies.append((name, paths))
    return studies


def run_batch(spec: MethodSpec, method: Any, studies: list[tuple[str, dict[str, Path | None]]], out_dir: Path,
              args: argparse.Namespace, context: Context, progress: Progress | None = None) -> dict[str, Any]:
    """Run `method` (loaded from `spec`) over this process's share of `studies`, writing into `out_dir`.

    args: the parsed command line (method options, sampling settings, reading options). Returns, on rank 0, the
    counts of each status and every study's row (all ranks'); on other ranks, their own rows. Cancelled stops the
    batch (studies done so far stay done).
    """
    share = studies[context.rank::context.world_size]
    rows = []
    for index, (name, paths) in enumerate(share):
        report(progress, index / max(len(share), 1), f"study {index + 1}/{len(share)}: {name}")
        started = time.perf_counter()
        folder = out_dir / name
        try:
            status, message = _run_study(spec, method, paths, folder, args,
                                         _part(progress, index, len(share), name))
        except Cancelled:
            raise
        except (CMRSynthesisError, OSError, ValueError, RuntimeError) as error:
            status, message = "failed", f"{type(error).__name__}: {error}"
        rows.append({"study": name, "status": status, "message": message,
                     "seconds": round(time.perf_counter() - started, 3), "rank": context.rank})
    report(progress, 1.0, f"{len(share)} studies")
    return _status_table(rows, [name for name, _ in studies], out_dir, context)


def _run_study(spec: MethodSpec, method: Any, paths: dict[str, Path | None], folder: Path,
               args: argparse.Namespace, progress: Progress) -> tuple[str, str]:
    """One study: skipped when its done.json names outputs that all exist; else read, run, write, then done.json."""
    done = folder / DONE_FILE
    settings = batch_settings(spec, args)
    if done.is_file():
        try:
            record = json.loads(done.read_text(encoding="utf-8"))
            complete = all(Path(path).is_file() for path in record["outputs"].values())
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            complete = False  # an unreadable record: run the study again
        if complete:
            _check_same_settings(record, settings, folder)
            return "already done", "" if "settings" in record else "done by an earlier version (settings not recorded)"
    inputs, protected = read_inputs(spec, paths, args)
    outputs_paths = {role.name: folder / f"{role.name}.nii.gz" for role in spec.outputs}
    framed = cine_shaped(spec, inputs, outputs_paths)
    check_outputs(outputs_paths, framed, protected)
    outputs = method.run(inputs, progress=progress, **method_options(spec, args))
    written = write_outputs(outputs, outputs_paths, framed, protected)
    record = {"method": spec.name, "inputs": {name: str(path) for name, path in paths.items() if path is not None},
              "settings": settings, "outputs": written, "summary": summarise(spec, method, inputs, outputs)}
    atomic_write_bytes(done, (json.dumps(record, indent=2, default=str) + "\n").encode("utf-8"))
    notes = record["summary"].get("notes") or []
    return "done", "; ".join(str(note) for note in notes)


def _check_same_settings(record: dict[str, Any], settings: dict[str, Any], folder: Path) -> None:
    """InputError when a study's done.json records other settings than this run's (its result would not be this
    run's): the rerun must not count it as done, nor overwrite it."""
    recorded = record.get("settings")
    if recorded is None:
        return
    changed = [f"{key}: {recorded.get(key)} -> {value}" for key, value in settings.items()
               if recorded.get(key) != value]
    if changed:
        raise InputError(f"{folder} was done with other settings ({'; '.join(changed)}): give another --out-dir, or "
                         "remove that folder to run the study again with these")


def batch_settings(spec: MethodSpec, args: argparse.Namespace) -> dict[str, Any]:
    """What makes a study's result: the `run` options and sampling settings, the checkpoints and the reading options
    (as JSON values; recorded in done.json, and a rerun with others refuses to count the study as done)."""
    keys = [*method_options(spec, args), *(role.name for role in spec.checkpoints), "frame_interval_ms", "ti"]
    return {key: json.loads(json.dumps(getattr(args, key), default=str)) for key in keys if hasattr(args, key)}


def _part(progress: Progress | None, index: int, count: int, name: str) -> Progress:
    """Progress of study `index` of `count` as its share of the whole batch."""
    def step(fraction: float, message: str) -> bool | None:
        if progress is None:
            return None
        return progress((index + fraction) / count, f"{name}: {message}")
    return step


def _status_table(rows: list[dict[str, Any]], order: list[str], out_dir: Path, context: Context) -> dict[str, Any]:
    """Every rank's rows gathered on rank 0 (through files in out_dir, after a barrier), written as
    batch_status.csv / .json in list order; returns the counts and rows (rank 0) or this rank's rows."""
    if context.world_size > 1:
        atomic_write_bytes(out_dir / f".{STATUS_NAME}.rank{context.rank}.json", json.dumps(rows).encode("utf-8"))
        barrier(context)
        if not context.is_main:
            return {"studies": rows}
        parts = [out_dir / f".{STATUS_NAME}.rank{rank}.json" for rank in range(context.world_size)]
        rows = [row for part in parts for row in json.loads(part.read_text(encoding="utf-8"))]
        for part in parts:
            part.unlink()
    rows.sort(key=lambda row: order.index(row["study"]))
    counts = {status: sum(row["status"] == status for row in rows) for status in ("done", "already done", "failed")}
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=STATUS_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out_dir / f"{STATUS_NAME}.csv", table.getvalue().encode("utf-8"))
    result = {"counts": counts, "studies": rows}
    atomic_write_bytes(out_dir / f"{STATUS_NAME}.json", (json.dumps(result, indent=2) + "\n").encode("utf-8"))
    return result
