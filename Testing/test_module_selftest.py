"""The module's Slicer self-test (CMRSynthesisTest) without Slicer: it may read only what the built extension
packages (CMRSynthesis/CMakeLists.txt), the phantom MOLLI DICOM series it writes gives the phantom's T1 through the
same `cmrsynth t1map` command the module runs, and its phantom cine gives shortening and thickening through
`cmrsynth strain`.

CMRSynthesis.py imports Slicer at the top, so its data-building functions are taken from the parsed source and run
alone.
"""

import ast
import json
import re
from pathlib import Path

import numpy as np

from CMRSynthesisLib.cli import main
from CMRSynthesisLib.io import read_volume, write_cine, write_volume
from CMRSynthesisLib.io.t1_series import read_t1_series

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "CMRSynthesis" / "CMRSynthesis.py"
CMAKE = ROOT / "CMRSynthesis" / "CMakeLists.txt"
TEST_CLASS = "CMRSynthesisTest"
DATA_BUILDERS = ("writePhantomMolliDicom", "phantomCineStrainInputs")
# Names that reach the source tree beside the module (the installed extension has only what CMake copies there).
SOURCE_TREE_NAMES = {"SOURCE_ROOT", "MODULE_DIR", "__file__"}


def _module_tree() -> ast.Module:
    return ast.parse(MODULE.read_text())


def _self_test_code(tree: ast.Module) -> list[ast.AST]:
    """The test class and every module-level function it calls by name."""
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    test = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == TEST_CLASS)
    called = {node.func.id for node in ast.walk(test) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    return [test] + [functions[name] for name in sorted(called & set(functions))]


def _packaged_resources() -> set[str]:
    """Resources/... paths the module's CMakeLists copies into the extension (globs as written)."""
    return set(re.findall(r"Resources/[\w/*.${}-]+", CMAKE.read_text()))


def test_self_test_reads_only_packaged_files():
    code = _self_test_code(_module_tree())
    assert set(DATA_BUILDERS) <= {node.name for node in code}, "the self-test no longer builds its phantom data"
    nodes = [child for part in code for child in ast.walk(part)]
    docstrings = {id(node.body[0].value) for node in nodes if isinstance(node, (ast.ClassDef, ast.FunctionDef))
                  and ast.get_docstring(node) is not None}
    for node in nodes:
        where = f"{MODULE.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Name):
            assert node.id not in SOURCE_TREE_NAMES, f"{where}: the self-test reaches the source tree via {node.id}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            assert "Testing" not in node.value, f"{where}: the self-test reads {node.value!r}, which is not packaged"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "resourcePath":
            resource = f"Resources/{ast.literal_eval(node.args[0])}"
            assert any(Path(resource).match(pattern) for pattern in _packaged_resources()), \
                f"{where}: {resource} is not listed in {CMAKE}"


def _data_builder(name: str):
    """One of the self-test's data-building functions, compiled from the module's source on its own."""
    tree = _module_tree()
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name)
    namespace = {"Path": Path}
    exec(compile(ast.Module(body=[function], type_ignores=[]), str(MODULE), "exec"), namespace)  # noqa: S102 (our source)
    return namespace[name]


def test_self_test_phantom_molli_series_gives_the_phantom_t1(tmp_path, capsys):
    """What the self-test asserts, through the command its Logic runs: the median T1 in each tissue within 2 %."""
    from CMRSynthesisLib import phantom

    folder = tmp_path / "MOLLI native"
    truth = _data_builder("writePhantomMolliDicom")(folder, phantom.subject_ids("test", 1)[0])
    series = read_t1_series(folder)
    assert series.images.array.shape[:2] == (8, 3) and series.time_source.startswith("InversionTime")
    reference = series.reference()
    tissues = truth["masks"]["blood"] | truth["masks"]["myocardium"]
    mask = write_volume(reference.with_array(tissues.astype(np.uint8)), tmp_path / "mask.nrrd")
    out = tmp_path / "T1.nrrd"
    assert main(["t1map", "--molli", str(folder), "--mask", str(mask), "--out", str(out), "--progress", "none"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert [row["scheme"] for row in summary["slices"]] == ["molli"] * 3
    t1 = read_volume(out)
    assert t1.same_geometry(reference)
    for tissue, voxels in truth["masks"].items():
        assert voxels.sum() > 100, tissue
        median = float(np.median(t1.array[voxels]))
        assert abs(median - truth["t1_ms"][tissue]) / truth["t1_ms"][tissue] < 0.02, (tissue, median, truth["t1_ms"])


def test_self_test_phantom_cine_gives_shortening_and_thickening(tmp_path, capsys):
    """What the cine strain self-test asserts, through the command its Logic runs: the cine and masks on one grid,
    the global peak circumferential strain negative and the radial one positive, all 16 segment rows, the
    bullseye."""
    from CMRSynthesisLib import phantom

    inputs = _data_builder("phantomCineStrainInputs")(phantom.subject_ids("test", 1)[0])
    cine = inputs["cine"]
    assert cine.array.ndim == 4 and cine.array.shape[1] == 2 and len(cine.metadata["trigger_times_ms"]) > 2
    for name in ("myocardium", "rv"):
        assert inputs[name].same_geometry(cine) and inputs[name].array.any(), name
    paths = {"cine": write_cine(cine, tmp_path / "cine.nii"),
             **{name: write_volume(inputs[name], tmp_path / f"{name}.nrrd") for name in ("myocardium", "rv")}}
    assert main(["strain", *(item for name, path in paths.items() for item in (f"--{name}", str(path))),
                 "--out-dir", str(tmp_path / "strain"), "--progress", "none"]) == 0
    result = json.loads(capsys.readouterr().out)
    summary = result["summary"]
    assert summary["ed_frame"] == 0
    assert summary["global_peak_circumferential_strain"] < 0 < summary["global_peak_radial_strain"], summary
    assert len(summary["segments"]) == 16 and "bullseye" in result["outputs"]
