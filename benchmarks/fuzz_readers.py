"""Seeded fuzz of the DICOM readers (CMRSynthesisLib.io.read_volume, CMRSynthesisLib.io.t1_series.read_t1_series) on
the real files of Testing/Data: Philips JPEG Lossless LGE and MOLLI, Siemens uncompressed ShMOLLI.

Each case copies one target (a single file, or a folder of one series) into a temporary folder, damages one file
(bytes flipped in the header or in the pixel data, the file cut short in the header or in the pixel data, or one
element deleted with pydicom) and reads it in a forked child process with a time limit and a memory limit.

Outcomes: "refused" (one of our CMRSynthesisError subclasses; the report says whether the message names the damaged
file), "decoded_same" (the result equals the undamaged read: pixels, shape, geometry, times, files), and
"decoded_different" (a result that differs while pydicom, reading the damaged file on its own, does not complain:
undetectable damage such as flipped uncompressed pixels, or a deleted optional element). The failures:
"foreign_exception" (any other exception type), "hang" (over the time limit), "crash" (the child died),
"damaged_file_left_out" (the result lacks the damaged file: a series silently shrunk), "truncated_decoded" (a file
cut short still gave a different result), "decoded_despite_warning" (pydicom warned or failed on the damaged file,
yet a different result came back). Warnings that reach the console past the readers are counted too.

    python benchmarks/fuzz_readers.py [--cases 500] [--seed 0] [--timeout 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import logging
import multiprocessing
import re
import resource
import shutil
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from CMRSynthesisLib.errors import CMRSynthesisError
from CMRSynthesisLib.io import atomic_write_bytes, read_volume
from CMRSynthesisLib.io.t1_series import read_t1_series

DATA = Path(__file__).resolve().parents[1] / "Testing" / "Data"
LGE = sorted((DATA / "lge_patient_philips").glob("*.dcm"))
MOLLI_SLICE = [DATA / "molli_patient_philips" / "native" / f"IM_{number:04d}.dcm" for number in (*range(1, 11), 31, 32)]
SHMOLLI = DATA / "shmolli_phantom_siemens"
SHMOLLI_SERIES = sorted((SHMOLLI / "magnitude_series12").glob("*.dcm")) + sorted((SHMOLLI / "t1map_series14").glob("*"))
MUTATIONS = ("flip_header", "flip_pixels", "truncate_header", "truncate_pixels", "delete_tag")
FAILURES = ("foreign_exception", "hang", "crash", "damaged_file_left_out", "truncated_decoded", "decoded_despite_warning")
# Elements the readers depend on; a deletion picks one of these half of the time, else any top-level element.
KEY_TAGS = ("Rows", "Columns", "PixelData", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
            "SamplesPerPixel", "PhotometricInterpretation", "ImagePositionPatient", "ImageOrientationPatient",
            "PixelSpacing", "SliceThickness", "RescaleSlope", "RescaleIntercept", "InversionTime", "TriggerTime",
            "InstanceNumber", "SeriesInstanceUID", "ImageType", "SeriesDescription", "NumberOfFrames")
PHILIPS_TI = ("Philips MR Imaging DD 006", 0x72)  # the private per-image inversion time (2005,xx72)
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) as stored little endian
LEFT_OUT_REASONS = ("non-DICOM file", "not an image", "one image per slice position")  # as the readers list skips
MEMORY_LIMIT = 4 << 30  # bytes of address space for a case's child process


@dataclasses.dataclass(frozen=True)
class Target:
    """What a case reads: `files` copied into one folder, read as the folder (a series) or as the one damaged file."""

    name: str
    files: tuple[Path, ...]
    reader: str  # "volume" (read_volume) or "t1_series" (read_t1_series)
    whole_folder: bool


TARGETS = (
    Target("philips_lge_file", tuple(LGE), "volume", False),
    Target("philips_lge_folder", tuple(LGE), "volume", True),
    Target("philips_molli_folder", tuple(MOLLI_SLICE), "t1_series", True),
    Target("siemens_shmolli_file", tuple(SHMOLLI_SERIES[:7]), "volume", False),
    Target("siemens_shmolli_folder", tuple(SHMOLLI_SERIES), "t1_series", True),
)


@dataclasses.dataclass(frozen=True)
class Case:
    """One seeded case: the damaged file (index into target.files) and the mutation applied to it."""

    index: int
    seed: int
    target: Target
    file: int
    mutation: str

    @property
    def baseline_key(self) -> str:
        return baseline_key(self.target, self.target.files[self.file])

    def describe(self) -> dict[str, Any]:
        return {"case": self.index, "seed": self.seed, "target": self.target.name,
                "file": self.target.files[self.file].relative_to(DATA).as_posix(), "mutation": self.mutation}


def make_cases(count: int, seed: int) -> list[Case]:
    """`count` cases cycling through targets and mutations, each with its own seed derived from `seed`."""
    rng = np.random.default_rng(seed)
    cases = []
    for index in range(count):
        target = TARGETS[index % len(TARGETS)]
        mutation = MUTATIONS[(index // len(TARGETS)) % len(MUTATIONS)]
        cases.append(Case(index, int(rng.integers(2**31)), target, int(rng.integers(len(target.files))), mutation))
    return cases


def mutate(data: bytes, mutation: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """The damaged bytes and what was done (offsets, tag), for the report."""
    pixels = data.rfind(PIXEL_DATA_TAG)
    header, body = (128, pixels), (pixels + 12, len(data))  # the pixel region starts after tag, VR and length
    if mutation.startswith("flip"):
        start, stop = header if mutation == "flip_header" else body
        offsets = np.sort(rng.choice(np.arange(start, stop), size=int(rng.integers(1, 9)), replace=False))
        damaged = bytearray(data)
        for offset in offsets:
            damaged[offset] ^= int(rng.integers(1, 256))
        return bytes(damaged), f"xor at offsets {offsets.tolist()}"
    if mutation.startswith("truncate"):
        start, stop = header if mutation == "truncate_header" else body
        length = int(rng.integers(start, stop))
        return data[:length], f"cut to {length} of {len(data)} bytes"
    dataset = pydicom.dcmread(io.BytesIO(data))
    philips = _private_tag(dataset)
    choices = [tag for tag in (pydicom.datadict.tag_for_keyword(name) for name in KEY_TAGS) if tag in dataset]
    if rng.random() >= 0.5 or not choices:
        choices = [element.tag for element in dataset] + ([philips] if philips is not None else [])
    tag = choices[int(rng.integers(len(choices)))]
    name = dataset[tag].keyword or dataset[tag].name
    del dataset[tag]
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue(), f"deleted {pydicom.tag.Tag(tag)} {name}"


def _private_tag(dataset: pydicom.Dataset) -> Any:
    try:
        return dataset.private_block(0x2005, PHILIPS_TI[0]).get_tag(PHILIPS_TI[1])
    except KeyError:
        return None


def read_target(target: Target, folder: Path, damaged: Path) -> Any:
    """Read the copied target as the module under test would: the folder, or the damaged file alone."""
    path = folder if target.whole_folder else damaged
    return read_t1_series(path) if target.reader == "t1_series" else read_volume(path)


def fingerprint(result: Any) -> dict[str, Any]:
    """What must equal the undamaged read: pixels, shape and dtype, geometry, times and ordering, files used."""
    volume = _volume(result)
    found = {
        "pixels": hashlib.sha256(np.ascontiguousarray(volume.array).tobytes()).hexdigest(),
        "shape": list(volume.array.shape), "dtype": str(volume.array.dtype),
        "geometry": np.round(np.concatenate([volume.spacing, volume.origin, volume.direction]), 5).tolist(),
        "files": [Path(path).name for path in volume.metadata.get("source_files") or []],
    }
    if hasattr(result, "images"):
        found.update(inversion_times=result.inversion_times_ms.tolist(), rank=result.acquisition_rank.tolist(),
                     time_source=result.time_source)
    else:
        found.update(inversion_times=volume.metadata.get("inversion_times_ms"),
                     trigger_times=volume.metadata.get("trigger_times_ms"))
    return found


def _copy_target(target: Target, folder: Path) -> None:
    for file in target.files:
        shutil.copy(file, folder / file.name)


def baseline_key(target: Target, file: Path) -> str:
    """A folder target has one undamaged read; a single-file target one per file."""
    return target.name if target.whole_folder else f"{target.name}/{file.name}"


def baselines() -> dict[str, dict[str, Any]]:
    """The fingerprint of every target read undamaged, by baseline_key."""
    found = {}
    with tempfile.TemporaryDirectory() as temporary:
        for target in TARGETS:
            folder = Path(temporary) / target.name
            folder.mkdir()
            _copy_target(target, folder)
            for file in target.files[:1] if target.whole_folder else target.files:
                found[baseline_key(target, file)] = fingerprint(read_target(target, folder, folder / file.name))
    return found


def pydicom_complaints(path: Path) -> list[str]:
    """What pydicom and its decoders say when they read `path` and decode its pixels on their own: warnings, log
    messages of level WARNING and above, and the exception that stopped them, if any."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logging.getLogger("pydicom").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                pydicom.dcmread(path, force=True).pixel_array  # noqa: B018 (decoding is the point)
            except Exception as error:  # noqa: BLE001 (any failure is a complaint)
                messages.append(f"{type(error).__name__}: {error}")
        messages.extend(str(warning.message) for warning in caught)
    finally:
        logging.getLogger("pydicom").removeHandler(handler)
    return sorted({message[:200] for message in messages})


def _volume(result: Any) -> Any:
    """The Volume of a read: a T1Series' images, or the Volume itself."""
    return result.images if hasattr(result, "images") else result


def classify(case: Case, result: Any, baseline: dict[str, Any], complaints: list[str]) -> dict[str, Any]:
    """The outcome of a read that returned a result (see the module docstring)."""
    found = fingerprint(result)
    differences = [key for key, value in found.items() if baseline.get(key) != value]
    report: dict[str, Any] = {"differences": differences, "pydicom_complaints": complaints}
    damaged = case.target.files[case.file].name
    if not differences:
        outcome = "decoded_same"
    elif damaged in baseline["files"] and damaged not in found["files"]:
        outcome = "damaged_file_left_out"
        notes = getattr(result, "skipped", None) or _volume(result).metadata.get("skipped") or []
        report["message"] = next((note for note in notes if damaged in note), "left out without a note")
    elif case.mutation.startswith("truncate"):
        outcome = "truncated_decoded"
    elif complaints:
        outcome = "decoded_despite_warning"
    else:
        outcome = "decoded_different"
    return {"outcome": outcome, **report}


def run_case(case: Case, baseline: dict[str, Any], connection: Any) -> None:
    """Child process: damage, read, classify, send the outcome through `connection`."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    damaged_file = case.target.files[case.file]
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        _copy_target(case.target, folder)
        damaged = folder / damaged_file.name
        data, detail = mutate(damaged.read_bytes(), case.mutation, np.random.default_rng(case.seed))
        damaged.write_bytes(data)
        report: dict[str, Any] = {"detail": detail}
        try:
            with warnings.catch_warnings(record=True) as leaked:  # what reached the console past the reader
                warnings.simplefilter("always")
                result = read_target(case.target, folder, damaged)
        except CMRSynthesisError as error:
            report.update(outcome="refused", error=type(error).__name__, message=str(error),
                          names_file=damaged.name in str(error))
        except BaseException as error:  # noqa: BLE001 (any other type is the finding)
            frames = traceback.extract_tb(error.__traceback__)
            ours = [frame for frame in frames if "CMRSynthesisLib" in frame.filename][-1:]
            report.update(outcome="foreign_exception", error=type(error).__name__, message=str(error)[:300],
                          where=[f"{Path(frame.filename).name}:{frame.lineno} {frame.name}" for frame in ours + frames[-1:]])
        else:
            report.update(classify(case, result, baseline, pydicom_complaints(damaged)))
        report["leaked_warnings"] = sorted({str(warning.message)[:200] for warning in leaked})
    connection.send(report)


def run_one(case: Case, baseline: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one case in a forked child; a child that overruns `timeout` seconds is killed ("hang")."""
    receiver, sender = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=run_case, args=(case, baseline, sender))
    child.start()
    sender.close()
    report = None
    if receiver.poll(timeout):
        try:
            report = receiver.recv()
        except EOFError:  # the child died before it could report
            pass
    else:
        child.kill()
        report = {"outcome": "hang"}
    child.join()
    if report is None:
        report = {"outcome": "crash", "exit_code": child.exitcode}
    return {**case.describe(), **report}


def message_pattern(message: str) -> str:
    """A message with paths, numbers and quoted values generalised, to group failures of one kind."""
    message = re.sub(r"(/[^\s:,;()'\"]+)+", "<path>", message)
    message = re.sub(r"'[^']*'|\"[^\"]*\"", "<value>", message)
    return re.sub(r"\d+(\.\d+)?", "<n>", message)[:200]


def failure_kind(report: dict[str, Any]) -> str:
    """What a failure says, generalised: for a file left out, the reason it was skipped under."""
    message = report.get("message", "")
    if report["outcome"] == "damaged_file_left_out":
        reason = next((reason for reason in LEFT_OUT_REASONS if reason in message), None)
        if reason is not None:
            return f"skipped as {reason}"
    return message_pattern(message)


def run_fuzz(count: int, seed: int, timeout: float = 20.0) -> dict[str, Any]:
    """Run `count` cases; the report holds counts per outcome, failure classes and every failure and difference."""
    started = time.perf_counter()
    reference = baselines()
    reports = []
    for case in make_cases(count, seed):
        reports.append(run_one(case, reference[case.baseline_key], timeout))
    failures = [report for report in reports if report["outcome"] in FAILURES]
    classes: dict[tuple, dict[str, Any]] = {}
    for report in failures:
        key = (report["outcome"], report.get("error"), failure_kind(report))
        group = classes.setdefault(key, {"outcome": key[0], "error": key[1], "message_pattern": key[2], "count": 0,
                                         "mutations": Counter(), "targets": Counter(), "cases": []})
        group["count"] += 1
        group["mutations"][report["mutation"]] += 1
        group["targets"][report["target"]] += 1
        group["cases"].append(report["case"])
    refused = [report for report in reports if report["outcome"] == "refused"]
    return {
        "seed": seed, "cases": count, "timeout_s": timeout, "seconds": round(time.perf_counter() - started, 1),
        "outcomes": dict(Counter(report["outcome"] for report in reports)),
        "outcomes_by_mutation": {mutation: dict(Counter(report["outcome"] for report in reports
                                                        if report["mutation"] == mutation)) for mutation in MUTATIONS},
        "refusals_not_naming_the_damaged_file": sum(not report["names_file"] for report in refused),
        "cases_with_warnings_leaked_past_the_reader": sum(bool(report.get("leaked_warnings")) for report in reports),
        "failure_classes": sorted(classes.values(), key=lambda group: -group["count"]),
        "failures": failures,
        "decoded_different": [report for report in reports if report["outcome"] == "decoded_different"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds a case may take before it counts as a hang")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fuzz_readers.json")
    args = parser.parse_args()
    report = run_fuzz(args.cases, args.seed, args.timeout)
    atomic_write_bytes(args.out, json.dumps(report, indent=2).encode())
    print(f"{args.cases} cases in {report['seconds']} s: {report['outcomes']}")
    for group in report["failure_classes"]:
        print(f"  {group['count']:3d} {group['outcome']} {group['error'] or ''}: {group['message_pattern']} "
              f"(mutations {dict(group['mutations'])}, targets {dict(group['targets'])})")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
