"""The module panel without Slicer: CMRSynthesis.py is parsed (it imports only inside Slicer) and the .ui is loaded
with PySide6 offscreen, Slicer's widget classes standing in as plain Qt widgets.

Checks that every `ui.<name>` the module uses exists in the .ui, that every parameter of the parameter-node class is
bound to exactly one widget that Slicer's parameterNodeWrapper can connect to its type, that defaults lie within
their ranges and choices, and renders the panel to a PNG.

Then CMRSynthesis.py is imported on slicer-core, the Slicer-only modules it imports (qt, the scripted-module base
classes, the parameter-node wrapper) standing in: the cine tasks show their widgets and enable Apply only with their
inputs, the Logic builds the command lines the real `cmrsynth` parser reads, brings the files the command writes back
as nodes, and a cancelled run ends as before.
"""

import ast
import contextlib
import enum
import io
import json
import os
import sys
import types
from importlib import util as importlib_util
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import slicer

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PySide6.QtCore import QFile
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from CMRSynthesisLib import mrml, mrml_checks
from CMRSynthesisLib.analysis.ecv import HAEMATOCRIT_RANGE
from CMRSynthesisLib.cli import build_parser, main
from CMRSynthesisLib.io import read_cine, read_volume, write_cine, write_volume
from CMRSynthesisLib.process import Result, State, cli_command
from CMRSynthesisLib.volume import Volume

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "CMRSynthesis" / "CMRSynthesis.py"
UI_FILE = ROOT / "Resources" / "UI" / "CMRSynthesis.ui"
PARAMETER_CLASS = "CMRSynthesisParameterNode"
STAND_INS = {"qMRMLNodeComboBox": QComboBox, "ctkCollapsibleButton": QGroupBox, "qMRMLWidget": QWidget,
             "qSlicerMarkupsPlaceWidget": QWidget}
# Widget classes Slicer's parameterNodeWrapper connects to each kind of parameter (slicer/parameterNodeWrapper).
BINDABLE = {"node": {"qMRMLNodeComboBox"}, "choice": {"QComboBox"}, "enum": {"QComboBox"},
            "int": {"QSpinBox", "QSlider"}, "str": {"QLineEdit", "QTextEdit"}, "float": {"QDoubleSpinBox"},
            "bool": {"QCheckBox"}}


def _module_tree() -> ast.Module:
    return ast.parse(MODULE.read_text())


def _ui_names_used(tree: ast.Module) -> set[str]:
    """Attribute names read from `self.ui` or `ui` anywhere in the module."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Attribute, ast.Name)):
            owner = node.value
            if (isinstance(owner, ast.Attribute) and owner.attr == "ui" and isinstance(owner.value, ast.Name)
                    and owner.value.id == "self") or (isinstance(owner, ast.Name) and owner.id == "ui"):
                names.add(node.attr)
    return names


def _enum_labels(tree: ast.Module) -> dict[str, list[str]]:
    """Enum classes of the module and the string values (labels) of their members."""
    enums = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(ast.unparse(base) == "enum.Enum" for base in node.bases):
            enums[node.name] = [statement.value.value for statement in node.body
                                if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)]
    return enums


def _parameters(tree: ast.Module) -> dict[str, dict]:
    """Fields of the parameter-node class: kind (node, enum, choice, int, str, float, bool), choices, range,
    default."""
    enums = _enum_labels(tree)
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == PARAMETER_CLASS)
    fields = {}
    for statement in cls.body:
        if not isinstance(statement, ast.AnnAssign):
            continue
        annotation, extras = statement.annotation, []
        if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) == "Annotated":
            annotation, *extras = annotation.slice.elts
        text = ast.unparse(annotation)
        field = {"default": ast.literal_eval(statement.value) if statement.value is not None else None}
        for extra in extras:
            arguments = [ast.literal_eval(argument) for argument in extra.args]
            if extra.func.id == "Choice":
                field["choices"] = arguments[0]
            elif extra.func.id == "WithinRange":
                field["range"] = tuple(arguments)
        if text.startswith(("vtkMRML", "Union[vtkMRML")):
            field["kind"] = "node"
        elif text in enums:
            field["kind"], field["choices"] = "enum", enums[text]
        elif "choices" in field:
            field["kind"] = "choice"
        else:
            field["kind"] = text
        fields[statement.target.id] = field
    return fields


def _ui_classes() -> dict[str, str]:
    """Widget name -> class name as written in the .ui (Slicer's classes, not the stand-ins)."""
    return {widget.get("name"): widget.get("class") for widget in ElementTree.parse(UI_FILE).iter("widget")}


def _bindings() -> dict[str, str]:
    """SlicerParameterName -> widget name, as declared in the .ui."""
    bindings = {}
    for widget in ElementTree.parse(UI_FILE).iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                name = prop.findtext("string")
                assert name not in bindings, f"parameter {name} is bound to two widgets"
                bindings[name] = widget.get("name")
    return bindings


class _SlicerStandInLoader(QUiLoader):
    def createWidget(self, class_name, parent=None, name=""):
        if class_name in STAND_INS:
            widget = STAND_INS[class_name](parent)
            widget.setObjectName(name)
            return widget
        return super().createWidget(class_name, parent, name)


@pytest.fixture(scope="module")
def panel():
    application = QApplication.instance() or QApplication([])
    ui_file = QFile(str(UI_FILE))
    assert ui_file.open(QFile.ReadOnly)
    widget = _SlicerStandInLoader().load(ui_file)
    ui_file.close()
    assert widget is not None, f"{UI_FILE} did not load"
    yield widget
    widget.deleteLater()
    application.processEvents()


def test_every_ui_name_the_module_uses_is_a_widget(panel):
    used = _ui_names_used(_module_tree())
    assert {"applyButton", "progressBar", "statusLabel", "checkpointBrowseButton", "segmenterBrowseButton",
            "ddimStepsSpinBox"} <= used
    missing = sorted(name for name in used if panel.findChild(QWidget, name) is None)
    assert not missing, f"CMRSynthesis.py uses ui names that {UI_FILE.name} lacks: {missing}"


def test_every_parameter_is_bound_to_a_widget_of_a_connectable_class():
    parameters, bindings, classes = _parameters(_module_tree()), _bindings(), _ui_classes()
    assert set(bindings) == set(parameters), (f"bound in the .ui only: {set(bindings) - set(parameters)}; "
                                              f"parameters without a widget: {set(parameters) - set(bindings)}")
    for name, field in parameters.items():
        widget_class = classes[bindings[name]]
        assert widget_class in BINDABLE[field["kind"]], f"{name} ({field['kind']}) cannot bind to a {widget_class}"


def test_defaults_lie_within_ranges_and_choices():
    parameters = _parameters(_module_tree())
    assert parameters["steps"] == {"kind": "int", "default": 250, "range": (1, 999)}  # the library's t0 range
    assert parameters["ddimSteps"] == {"kind": "int", "default": 20, "range": (1, 250)}
    assert parameters["segmenterPath"] == parameters["checkpointPath"] == {"kind": "str", "default": ""}
    assert parameters["samples"] == {"kind": "int", "default": 5, "range": (1, 20)}
    assert parameters["task"]["choices"] == ["Scar enhancement (LGE)", "T1 map (MOLLI / ShMOLLI)", "ECV",
                                             "AHA 16 segments", "Cine strain", "Cine segmentation"]
    assert parameters["edFrame"] == parameters["esFrame"] == {"kind": "int", "default": 0, "range": (0, 9999)}
    assert parameters["haematocrit"] == {"kind": "float", "default": 0.42, "range": HAEMATOCRIT_RANGE}
    for name, field in parameters.items():
        if "range" in field:
            low, high = field["range"]
            assert low <= field["default"] <= high <= 2**31 - 1, f"{name}: default or range unusable"
        if field["kind"] == "choice":
            assert field["default"] in field["choices"], f"{name}: default {field['default']} is not a choice"


def test_panel_renders(panel, tmp_path):
    """Fill the widgets as the parameter node would and render the panel (look at the PNG when changing the .ui)."""
    parameters, bindings = _parameters(_module_tree()), _bindings()
    for name, field in parameters.items():
        widget = panel.findChild(QWidget, bindings[name])
        if isinstance(widget, QComboBox):
            widget.addItems([str(choice) for choice in field.get("choices", [widget.property("noneDisplay") or ""])])
            if field.get("default") is not None:
                widget.setCurrentText(str(field["default"]))
        elif isinstance(widget, (QSpinBox, QDoubleSpinBox)):
            widget.setRange(*field["range"])
            widget.setValue(field["default"])
        elif isinstance(widget, QCheckBox):
            widget.setChecked(field["default"])
        elif isinstance(widget, QLineEdit):
            widget.setText(field["default"])
    for section in panel.findChildren(QGroupBox):
        section.setTitle(section.property("text"))
    panel.resize(360, 600)
    path = tmp_path / "panel.png"
    image = panel.grab().toImage()
    assert image.save(str(path)) and path.stat().st_size > 0
    corner = image.pixelColor(2, 2)
    assert image.width() == 360 and any(image.pixelColor(x, y) != corner for x in range(0, 360, 7)
                                        for y in range(0, 600, 7)), "the panel rendered blank"


# ---- the module on slicer-core ---------------------------------------------------------------------------------


class _Timer:
    """qt.QTimer as the Logic uses it; the tests run it with wait=True or end it with cancel(wait=True)."""

    def setInterval(self, milliseconds: int) -> None:
        self.interval = milliseconds

    def connect(self, signal: str, slot) -> None:
        self.slot = slot

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False


class _ScriptedLoadable:
    """Slicer's scripted-module base classes: nothing the tests reach needs them."""

    def __init__(self, *args) -> None:
        self.args = args


def _parameter_node_wrapper(cls: type) -> type:
    """Slicer's parameterNodeWrapper for tests: a field without a default gets the wrapper's (an enum's first member,
    else None); instances are plain objects."""
    for name, annotation in cls.__annotations__.items():
        if not hasattr(cls, name):
            setattr(cls, name, next(iter(annotation)) if isinstance(annotation, enum.EnumMeta) else None)
    return cls


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    """CMRSynthesis.py imported on slicer-core, with slicer.app's temporary and scene folders in a temporary folder."""
    folder = tmp_path_factory.mktemp("slicer")
    stand_ins = {
        "qt": {"QTimer": _Timer},
        "slicer.ScriptedLoadableModule": {name: type(name, (_ScriptedLoadable,), {}) for name in (
            "ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest",
            "ScriptedLoadableModuleWidget")},
        "slicer.parameterNodeWrapper": {"parameterNodeWrapper": _parameter_node_wrapper,
                                        "Choice": lambda *args: args, "WithinRange": lambda *args: args},
        "vtkSlicerSegmentationsModuleMRMLPython": {"vtkMRMLSegmentationNode": slicer.vtkMRMLSegmentationNode},
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, attributes in stand_ins.items():
            patch.setitem(sys.modules, name, types.SimpleNamespace(**attributes))
        patch.setattr(slicer, "app", types.SimpleNamespace(temporaryPath=str(folder / "temporary"),
                                                           defaultScenePath=str(folder / "scenes")), raising=False)
        (folder / "temporary").mkdir()
        spec = importlib_util.spec_from_file_location("CMRSynthesis", MODULE)
        loaded = importlib_util.module_from_spec(spec)
        patch.setitem(sys.modules, "CMRSynthesis", loaded)
        spec.loader.exec_module(loaded)
        yield loaded


@pytest.fixture
def scene(module, monkeypatch):
    """A new slicer-core scene as slicer.mrmlScene, with two slice views."""
    scene = slicer.vtkMRMLScene()
    for layout in ("Red", "Green"):
        scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode").SetLayoutName(layout)
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    return scene


class _StandInWidget:
    """A widget as the module's code sees it through PythonQt: properties are attributes."""

    def setCurrentNode(self, node) -> None:
        self.currentNode = node


@pytest.fixture
def widget(module, scene):
    """The module widget on stand-ins of the .ui's widgets, with its Logic and a parameter node."""
    widget = module.CMRSynthesisWidget.__new__(module.CMRSynthesisWidget)
    widget.ui = types.SimpleNamespace(**{name: _StandInWidget() for name in _ui_classes()})
    widget.logic = module.CMRSynthesisLogic()
    widget._parameterNode = module.CMRSynthesisParameterNode()
    widget._taskWidgets = module.taskWidgets(widget.ui)
    return widget


def _shown(widget, task) -> set[str]:
    """The widgets the panel shows for `task`."""
    widget._parameterNode.task = task
    widget.updateWidgets()
    return {name for name, item in vars(widget.ui).items() if getattr(item, "visible", False)}


def _apply(widget) -> tuple[bool, str]:
    """(Apply enabled, its tooltip) once the widgets are updated from the parameters."""
    widget.updateWidgets()
    return widget.ui.applyButton.enabled, widget.ui.applyButton.toolTip


def _cine(scene, frames: int = 3, reference=None):
    """A small cine sequence (with its browser and proxy) on the oblique test grid of mrml_checks."""
    return mrml.add_cine_sequence_node(scene, mrml_checks.oblique_cine(frames), "Cine", reference_node=reference)


def _labelmap(scene, name: str):
    """A labelmap of mrml_checks.two_labels on the cine's grid."""
    return mrml_checks.add_test_volume(scene, name, mrml_checks.two_labels(), labelmap=True)


def _points(scene, *points):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "RV insertion points")
    for point in points:
        node.AddControlPoint(*point)
    return node


def test_cine_tasks_show_their_widgets(module, widget):
    strain = _shown(widget, module.Task.CINE_STRAIN)
    assert {"cineSequenceSelector", "frameIntervalSpinBox", "myocardiumSelector", "bloodSelector", "rvSelector",
            "insertionPointsSelector", "insertionPointsPlaceWidget", "edFrameSpinBox", "esFrameSpinBox"} <= strain
    segmentation = _shown(widget, module.Task.CINE_SEGMENTATION)
    assert {"cineSequenceSelector", "frameIntervalSpinBox", "edEsOnlyCheckBox"} <= segmentation
    for shown in (strain, segmentation):
        assert not {"inputVolumeSelector", "roiSelector", "molliSequenceSelector", "quantityComboBox",
                    "advancedCollapsibleButton", "outputsCollapsibleButton"} & shown
    assert not {"myocardiumSelector", "rvSelector", "edFrameSpinBox"} & segmentation
    assert "edEsOnlyCheckBox" not in strain
    aha = _shown(widget, module.Task.AHA)
    assert {"inputVolumeSelector", "myocardiumSelector", "rvSelector", "quantityComboBox"} <= aha
    assert not {"cineSequenceSelector", "edFrameSpinBox", "edEsOnlyCheckBox"} & aha
    assert widget.ui.inputVolumeLabel.text == "Map:"


def test_cine_strain_applies_only_with_its_inputs(module, widget, scene):
    parameters = widget._parameterNode
    parameters.task = module.Task.CINE_STRAIN
    enabled, why = _apply(widget)
    assert not enabled and "cine" in why
    parameters.cineSequence = _cine(scene, 3)
    assert _apply(widget) == (True, "Run the task")  # the masks are optional: the cine segmenter finds them
    parameters.rvNode, parameters.insertionPoints = _labelmap(scene, "RV"), _points(scene, (0, 0, 0), (1, 1, 1))
    assert _apply(widget) == (False, module.TWO_ANCHORS)
    parameters.rvNode = None
    parameters.edFrame, parameters.esFrame = 3, 4
    assert _apply(widget) == (False, "The ES frame 4 is past the cine's last frame (3).")
    parameters.esFrame = 2
    assert _apply(widget)[0]
    parameters.cineSequence = _cine(scene, 1)
    enabled, why = _apply(widget)
    assert not enabled and "1 frame" in why


def test_cine_segmentation_applies_with_a_cine(module, widget, scene):
    parameters = widget._parameterNode
    parameters.task = module.Task.CINE_SEGMENTATION
    assert not _apply(widget)[0]
    parameters.cineSequence = _cine(scene, 1)  # a single frame is segmented as one frame
    parameters.rvNode, parameters.insertionPoints = _labelmap(scene, "RV"), _points(scene, (0, 0, 0), (1, 1, 1))
    assert _apply(widget) == (True, "Run the task")


def _command(module, parameters, folder: Path):
    """The command the Logic builds, parsed by the real `cmrsynth` parser (skipped while it lacks the command)."""
    subcommand, options = module.CMRSynthesisLogic()._commandOptions(parameters, folder)
    command = cli_command(subcommand, options, python="PythonSlicer")
    parser = build_parser()
    commands = next(action for action in parser._actions if action.dest == "command").choices
    if subcommand not in commands:
        pytest.skip(f"`cmrsynth {subcommand}` is not in cli.py yet; the options were {options}")
    return parser.parse_args(command[3:])


def test_strain_command_line(module, scene, tmp_path):
    """The cine and its trigger times as a 4D file, the masks on its grid, the frames counted from 0; the insertion
    points in RAS in the frame of the cine's proxy (here under a transform), so that the command finds them."""
    parameters = module.CMRSynthesisParameterNode()
    parameters.task, parameters.cineSequence = module.Task.CINE_STRAIN, _cine(scene, 3)
    parameters.myocardiumNode, parameters.rvNode = _labelmap(scene, "Myocardium"), _labelmap(scene, "RV")
    parameters.edFrame, parameters.esFrame = 1, 3
    args = _command(module, parameters, tmp_path)
    assert (args.command, args.ed, args.es, args.out_dir, args.insertion_points) == ("strain", 0, 2,
                                                                                     tmp_path / "strain", None)
    cine, sent = mrml_checks.oblique_cine(3), read_cine(args.cine)
    np.testing.assert_array_equal(sent.array, cine.array)
    assert sent.same_geometry(cine) and sent.metadata["trigger_times_ms"] == cine.metadata["trigger_times_ms"]
    for path in (args.myocardium, args.rv):
        mask = read_volume(path)
        np.testing.assert_array_equal(mask.array, mrml_checks.two_labels() > 0)
        assert mask.same_geometry(cine)
    assert args.blood is None

    shift = np.eye(4)
    shift[:3, 3] = (5.0, -7.0, 2.0)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "Registration")
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    reference = mrml_checks.add_test_volume(scene, "Reference")
    reference.SetAndObserveTransformNodeID(transform.GetID())
    placed = np.array([[10.0, -20.0, 30.0], [-12.5, 40.0, 3.0]])
    parameters.cineSequence = _cine(scene, 3, reference=reference)
    parameters.rvNode, parameters.insertionPoints = None, _points(scene, *placed)
    parameters.edFrame = parameters.esFrame = 0
    args = _command(module, parameters, tmp_path / "points")
    assert (args.rv, args.ed, args.es, args.points_space) == (None, None, None, "ras")
    sent = [[float(value) for value in point.split(",")] for point in args.insertion_points.split(";")]
    np.testing.assert_allclose(sent, placed - shift[:3, 3], atol=1e-3)


def test_cine_segmentation_command_line(module, scene, tmp_path):
    parameters = module.CMRSynthesisParameterNode()
    parameters.task, parameters.cineSequence = module.Task.CINE_SEGMENTATION, _cine(scene, 3)
    subcommand, options = module.CMRSynthesisLogic()._commandOptions(parameters, tmp_path)
    assert (subcommand, options["out"], options["frames"]) == ("segment", tmp_path / module.CINE_LABELS_FILE, None)
    np.testing.assert_array_equal(read_cine(options["cine"]).array, mrml_checks.oblique_cine(3).array)
    parameters.edEsOnly = True
    args = _command(module, parameters, tmp_path / "ed es")
    assert (args.cine, args.out, args.frames) == (tmp_path / "ed es" / "cine.nii",
                                                  tmp_path / "ed es" / module.CINE_LABELS_FILE, "ed,es")


def _ring_cine(frames: int = 3, size: int = 32, slices: int = 3) -> tuple[Volume, Volume, Volume]:
    """A small textured LV ring cine (the texture shifts by a pixel a frame), its myocardium and an RV beside it."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    radius = np.hypot(x, y)
    myocardium, rv = (radius >= 5) & (radius <= 10), (radius > 10) & (radius <= 15) & (x < -3)
    texture = np.random.default_rng(0).normal(0.0, 15.0, (size + frames, size))
    base = np.where(radius < 5, 300.0, np.where(myocardium, 120.0, 40.0))
    array = np.stack([np.repeat((base + texture[t:t + size])[None], slices, axis=0) for t in range(frames)])
    cine = Volume(array.astype(np.float32), (1.5, 1.5, 8.0), (10.0, -20.0, 30.0),
                  metadata={"trigger_times_ms": [40.0 * t for t in range(frames)]})

    def mask(region: np.ndarray) -> Volume:
        return Volume(np.repeat(region[None], slices, axis=0).astype(np.uint8), cine.spacing, cine.origin)

    return cine, mask(myocardium), mask(rv)


def _run_cli(arguments: list[str]) -> dict:
    """`cmrsynth ARGUMENTS --progress json` in this process: its result line."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert main([*arguments, "--progress", "json"]) == 0
    lines = [json.loads(line) for line in output.getvalue().splitlines() if line.startswith("{")]
    return next(line for line in lines if line["type"] == "result")


def _finish(module, logic, task, cine, workdir: Path, outputs: dict, summary: dict):
    """Complete a run of `task` on the cine sequence whose command reported `outputs` and `summary`."""
    parameters = module.CMRSynthesisParameterNode()
    parameters.task, parameters.cineSequence = task, cine
    outcomes = []
    logic._run = module._Run(task, None, workdir, parameters, cine, cine.GetName(), outcomes.append)
    logic._complete(Result(State.SUCCEEDED, {key: Path(path) for key, path in outputs.items()}, summary, "", 0, []))
    return outcomes[0]


def test_strain_results_come_back_as_nodes(module, scene, tmp_path):
    """What `cmrsynth strain` writes for a small ring: the circumferential strain (%) plays with the cine in its
    browser and lies over it with no colour outside the myocardium, the curves come back as a table and a plot, the
    peaks as a table of the global value and the 16 segments, the bullseye as a picture; strain.json and the PNGs
    are kept and the temporary folder goes."""
    cine, myocardium, rv = _ring_cine()
    workdir = tmp_path / "run"
    write_cine(cine, workdir / "cine.nii")
    write_volume(myocardium, workdir / "myocardium.nrrd")
    write_volume(rv, workdir / "rv.nrrd")
    reported = _run_cli(["strain", "--cine", str(workdir / "cine.nii"), "--myocardium",
                         str(workdir / "myocardium.nrrd"), "--rv", str(workdir / "rv.nrrd"),
                         "--out-dir", str(workdir / "strain")])
    strain = read_volume(reported["outputs"]["circumferential"])
    sequence = mrml.add_cine_sequence_node(scene, cine, "Ring")
    outcome = _finish(module, module.CMRSynthesisLogic(), module.Task.CINE_STRAIN, sequence, workdir,
                      reported["outputs"], reported["summary"])
    assert outcome.state is State.SUCCEEDED, outcome.message
    assert not workdir.exists()
    nodes = outcome.nodes
    assert set(nodes) == {"circumferential", "curves", "chart", "peaks", "bullseye"}
    result = nodes["circumferential"]
    browser = mrml.sequence_browser(scene, sequence, create=False)
    assert browser.IsSynchronizedSequenceNode(result.GetID())
    assert result.GetName() == "Ring circumferential strain (%)"
    for frame in range(3):
        np.testing.assert_allclose(slicer.util.arrayFromVolume(result.GetNthDataNode(frame)),
                                   100.0 * strain.array[frame], rtol=1e-6)
    shown, cine_shown = browser.GetProxyNode(result), browser.GetProxyNode(sequence)
    for composite in mrml._nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
        assert (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()) == (cine_shown.GetID(),
                                                                                          shown.GetID())
    assert shown.GetDisplayNode().GetApplyThreshold(), "no value (NaN) outside the myocardium is drawn"
    summary = reported["summary"]
    curves = nodes["curves"]
    assert curves.GetNumberOfRows() == 3 and curves.GetColumnName(0) == "frame"
    assert curves.GetCellText(2, 0) == "3" and float(curves.GetCellText(2, 1)) == 80.0
    global_circumferential = curves.GetTable().GetColumnByName(module.GLOBAL_STRAIN_CURVES[0])
    assert global_circumferential.GetValue(1) == pytest.approx(100.0 * summary["curves"]["global_circumferential"][1])
    chart = nodes["chart"]
    series = [chart.GetNthPlotSeriesNode(index).GetName() for index in range(chart.GetNumberOfPlotSeriesNodes())]
    present = [row for row in summary["segments"] if not row["missing"]]
    assert series[:2] == list(module.GLOBAL_STRAIN_CURVES) and len(series) == 2 + len(present) > 2
    assert chart.GetNthPlotSeriesNode(0).GetXColumnName() == "time (ms)"
    peaks = nodes["peaks"]
    assert peaks.GetNumberOfRows() == 17 and peaks.GetCellText(0, 0) == "global"
    assert peaks.GetTable().GetColumnByName("peak circumferential (%)").GetValue(0) == pytest.approx(
        100.0 * summary["global_peak_circumferential_strain"])
    first = present[0]
    row = first["segment"]
    assert peaks.GetCellText(row, 0) == f"{row} {first['name']}"
    assert float(peaks.GetCellText(row, peaks.GetColumnIndex("peak radial frame"))) == first["peak_radial_frame"] + 1
    assert nodes["bullseye"].GetImageData().GetNumberOfScalarComponents() == 3
    assert sorted(path.name for path in outcome.folder.iterdir()) == ["strain.json", "strain_bullseye.png",
                                                                      "strain_curves.png"]
    assert outcome.message.startswith("Global peak circumferential strain ") and str(outcome.folder) in outcome.message


def test_strain_without_segments_reports_the_global_peaks(module, scene, tmp_path):
    """Without an RV mask or insertion points the command draws no bullseye and reports no segments: the panel shows
    the map and the global curves, and a peak table of the global row alone."""
    cine, myocardium, _ = _ring_cine()
    write_cine(cine, tmp_path / "cine.nii")
    write_volume(myocardium, tmp_path / "myocardium.nrrd")
    reported = _run_cli(["strain", "--cine", str(tmp_path / "cine.nii"), "--myocardium",
                         str(tmp_path / "myocardium.nrrd"), "--out-dir", str(tmp_path / "strain")])
    outcome = _finish(module, module.CMRSynthesisLogic(), module.Task.CINE_STRAIN,
                      mrml.add_cine_sequence_node(scene, cine, "Ring"), tmp_path, reported["outputs"],
                      reported["summary"])
    assert outcome.state is State.SUCCEEDED, outcome.message
    assert set(outcome.nodes) == {"circumferential", "curves", "chart", "peaks"}
    assert outcome.nodes["peaks"].GetNumberOfRows() == 1 and outcome.nodes["chart"].GetNumberOfPlotSeriesNodes() == 2
    assert sorted(path.name for path in outcome.folder.iterdir()) == ["strain.json", "strain_curves.png"]


def _labels(frames: int) -> Volume:
    """Labels 1-3 of `frames` frames on the oblique test grid, frame t with LV blood, then all three labels."""
    cine = mrml_checks.oblique_cine(frames)
    array = np.zeros(cine.array.shape, np.uint8)
    array[:, 1, 1:3, 1:3] = 1
    array[:, 2, 1:4, 1:4] = 2
    array[:, 3, 0:2, 0:2] = 3
    return cine.with_array(array)


def test_cine_labels_of_every_frame_play_with_the_cine(module, scene, tmp_path):
    sequence = _cine(scene, 3)
    labels = _labels(3)
    write_cine(labels, tmp_path / module.CINE_LABELS_FILE)
    outcome = _finish(module, module.CMRSynthesisLogic(), module.Task.CINE_SEGMENTATION, sequence, tmp_path,
                      {"labels": tmp_path / module.CINE_LABELS_FILE}, {"frames": [0, 1, 2]})
    assert outcome.state is State.SUCCEEDED, outcome.message
    result = outcome.nodes["labels"]
    assert result.GetName() == "Cine labels" and result.GetNumberOfDataNodes() == 3
    browser = mrml.sequence_browser(scene, sequence, create=False)
    shown = browser.GetProxyNode(result)
    assert shown.IsA("vtkMRMLLabelMapVolumeNode")
    colours = shown.GetDisplayNode().GetColorNode()
    assert [colours.GetColorName(value) for value in (1, 2, 3)] == list(module.CINE_LABEL_NAMES)
    for composite in mrml._nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
        assert composite.GetLabelVolumeID() == shown.GetID()
        assert composite.GetBackgroundVolumeID() == browser.GetProxyNode(sequence).GetID()


def test_cine_labels_of_ed_and_es_become_segmentations(module, scene, tmp_path):
    """Two of three frames, as `cmrsynth segment --frames ed,es` reports them: one segmentation per frame, named
    after it (from 1) and its phase, with the three named segments on the cine's grid; labels of fewer frames than
    the cine's, without the frames they are, are refused."""
    sequence = _cine(scene, 3)
    labels = _labels(2)
    for run in ("reported", "unsaid"):
        write_cine(labels, tmp_path / run / module.CINE_LABELS_FILE)
    outcome = _finish(module, module.CMRSynthesisLogic(), module.Task.CINE_SEGMENTATION, sequence,
                      tmp_path / "reported", {"labels": tmp_path / "reported" / module.CINE_LABELS_FILE},
                      {"frames": [0, 2], "ed_frame": 0, "es_frame": 2})
    assert outcome.state is State.SUCCEEDED, outcome.message
    assert not (tmp_path / "reported").exists()
    assert list(outcome.nodes) == ["frame 1", "frame 3"]
    shown = mrml.sequence_browser(scene, sequence, create=False).GetProxyNode(sequence)
    for node in outcome.nodes.values():
        segmentation = node.GetSegmentation()
        names = [segmentation.GetNthSegment(index).GetName() for index in range(segmentation.GetNumberOfSegments())]
        assert names == list(module.CINE_LABEL_NAMES)
        mask = mrml.volume_from_segmentation(node, shown, [segmentation.GetNthSegmentID(1)])
        np.testing.assert_array_equal(mask.array, labels.array[0] == 2)
    assert [node.GetName() for node in outcome.nodes.values()] == ["Cine segments, frame 1 (ED)",
                                                                    "Cine segments, frame 3 (ES)"]
    bad = _finish(module, module.CMRSynthesisLogic(), module.Task.CINE_SEGMENTATION, sequence, tmp_path / "unsaid",
                  {"labels": tmp_path / "unsaid" / module.CINE_LABELS_FILE}, {})  # 2 frames of 3, which: unsaid
    assert bad.state is State.FAILED and "2 frame(s)" in bad.message


def test_cancelled_strain_leaves_nothing(module, scene, monkeypatch):
    """A strain run cancelled right after it started ends CANCELLED, through onFinished, with no new node and its
    temporary folder removed; the Logic is free again."""
    monkeypatch.setattr(module, "_pythonExecutable", lambda: sys.executable)
    cine, myocardium, _ = _ring_cine(frames=8, size=64, slices=6)
    sequence = mrml.add_cine_sequence_node(scene, cine, "Ring")
    logic = module.CMRSynthesisLogic()
    parameters = module.CMRSynthesisParameterNode()
    parameters.task, parameters.cineSequence = module.Task.CINE_STRAIN, sequence
    parameters.myocardiumNode = mrml.add_volume_node(scene, myocardium, "Myocardium", labelmap=True)
    nodes_before, outcomes = scene.GetNumberOfNodes(), []
    assert logic.process(parameters, onFinished=outcomes.append) is None
    assert logic.isRunning()
    workdir = logic._run.workdir
    logic.cancel(wait=True)
    assert [outcome.state for outcome in outcomes] == [State.CANCELLED] and not outcomes[0].nodes
    assert not logic.isRunning() and not workdir.exists() and scene.GetNumberOfNodes() == nodes_before


def test_kept_files_of_runs_in_one_second_stay_apart(module, tmp_path):
    """Two runs of one input within a second keep their files in two folders, not mixed in one."""
    first, second = tmp_path / "strain.json", tmp_path / "strain_bullseye.png"
    first.write_text("{}")
    second.write_bytes(b"png")
    kept = [module._keepFiles(files, "Ring strain", "strain.json and the figures") for files in ([first, second],
                                                                                                  [first])]
    (one, said), (other, _) = kept
    assert one != other and said == f"strain.json and the figures saved in {one}."
    assert [sorted(path.name for path in folder.iterdir()) for folder in (one, other)] == [
        ["strain.json", "strain_bullseye.png"], ["strain.json"]]
