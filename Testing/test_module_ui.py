"""The module panel without Slicer: CMRSynthesis.py is parsed (it imports only inside Slicer) and the .ui is loaded
with PySide6 offscreen, Slicer's widget classes standing in as plain Qt widgets.

Checks that every `ui.<name>` the module uses exists in the .ui, that every parameter of the parameter-node class is
bound to exactly one widget that Slicer's parameterNodeWrapper can connect to its type, that defaults lie within
their ranges and choices, and renders the panel to a PNG.

Then CMRSynthesis.py is imported on slicer-core, the Slicer-only modules it imports (qt and Slicer's widgets, the
scripted-module base classes, the parameter-node wrapper) standing in: the task table lists the registry's methods
(a toy method registered here appears with a generated panel and command line) and the analysis tasks; tasks show
their widgets and enable Apply only with their inputs, the Logic builds the command lines the real `cmrsynth` parser
reads, brings the files the command writes back as nodes, and a cancelled run ends as before.
"""

import ast
import contextlib
import enum
import io
import json
import os
import re
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
from CMRSynthesisLib.analysis_tasks import GLOBAL_STRAIN_CURVES, TWO_ANCHORS
from CMRSynthesisLib.cli import build_parser, main
from CMRSynthesisLib.io import read_cine, read_volume, write_cine, write_volume
from CMRSynthesisLib.method_tasks import CHOOSE_CINE
from CMRSynthesisLib.methods import registry
from CMRSynthesisLib.methods.registry import (
    CheckpointRole,
    InputRole,
    MethodSpec,
    Option,
    OutputRole,
    Sampling,
    method_specs,
)
from CMRSynthesisLib.process import Result, State, cli_command
from CMRSynthesisLib.volume import Volume

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "CMRSynthesis" / "CMRSynthesis.py"
UI_FILE = ROOT / "Resources" / "UI" / "CMRSynthesis.ui"
PARAMETER_CLASS = "CMRSynthesisParameterNode"
STAND_INS = {"qMRMLNodeComboBox": QComboBox, "ctkCollapsibleButton": QGroupBox, "qMRMLWidget": QWidget,
             "qSlicerMarkupsPlaceWidget": QWidget}
LABELS_FILE = "labels.nii.gz"  # where the panel asks `cmrsynth segment` for its output "labels" (cine-shaped)
# `cmrsynth segment`'s summary names its label values; the panel names the segments after them
LABEL_VALUES = {"background": 0, "lv_blood": 1, "lv_myocardium": 2, "rv_blood": 3}
CINE_LABEL_NAMES = ("LV blood", "LV myocardium", "RV blood")
ANALYSIS_TASKS = ["T1 map (MOLLI / ShMOLLI)", "ECV", "AHA 16 segments", "Cine strain"]  # after the methods' tasks
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


def test_every_ui_name_the_module_uses_is_a_widget(panel, module):
    """Names read from `ui` in the code, and the names of the fixed widgets the task table's rows show."""
    used = _ui_names_used(_module_tree())
    assert {"applyButton", "progressBar", "statusLabel", "taskComboBox", "methodInputsFrame",
            "methodAdvancedFrame"} <= used
    shown = {name for row in module.taskTable() for name in row.widgets}
    assert {"methodInputsFrame", "methodAdvancedFrame", "deviceComboBox", "cineSequenceSelector",
            "molliFolderLineEdit", "t1SchemeComboBox"} <= shown
    missing = sorted(name for name in used | shown if panel.findChild(QWidget, name) is None)
    assert not missing, f"CMRSynthesis.py uses ui names that {UI_FILE.name} lacks: {missing}"
    for frame in ("methodInputsFrame", "methodAdvancedFrame"):  # the method panels are added to their layouts
        assert panel.findChild(QWidget, frame).layout() is not None, frame


def test_every_parameter_is_bound_to_a_widget_of_a_connectable_class():
    parameters, bindings, classes = _parameters(_module_tree()), _bindings(), _ui_classes()
    assert set(bindings) == set(parameters), (f"bound in the .ui only: {set(bindings) - set(parameters)}; "
                                              f"parameters without a widget: {set(parameters) - set(bindings)}")
    for name, field in parameters.items():
        widget_class = classes[bindings[name]]
        assert widget_class in BINDABLE[field["kind"]], f"{name} ({field['kind']}) cannot bind to a {widget_class}"


def test_defaults_lie_within_ranges_and_choices():
    """The fixed parameters; the methods' settings come from their declarations (see test_scar_enhancement_panel)."""
    parameters = _parameters(_module_tree())
    assert "task" not in parameters, "the task list is built from the registry at run time: not a Choice field"
    assert parameters["device"] == {"kind": "choice", "default": "auto", "choices": ["auto", "cpu", "cuda"]}
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


class _QtStandIn:
    """A Qt widget or layout as the module's code sees it through PythonQt: properties are attributes; connect(signal,
    slot) keeps the slot, so that `_user_edits` can do what a user's edit does; a layout made with a widget as parent
    becomes its layout() and keeps the rows and widgets added."""

    def __init__(self, *args) -> None:
        self.args, self.slots, self.rows, self.items = args, {}, [], []
        self.visible = self.enabled = True
        self.text, self.toolTip, self.checked, self.value, self.currentIndex = "", "", False, 0, 0
        self._node, self._layout = None, None
        if args and isinstance(args[0], _QtStandIn):
            args[0]._layout = self

    def connect(self, signal: str, slot) -> None:
        self.slots.setdefault(signal, []).append(slot)

    def layout(self):
        if self._layout is None:
            self._layout = _QtStandIn()
        return self._layout

    def addRow(self, *cells) -> None:
        self.rows.append(cells)

    def addWidget(self, widget, *args) -> None:
        self.rows.append((widget,))

    def addItem(self, text: str) -> None:
        self.items.append(text)

    def clear(self) -> None:
        self.items, self.currentIndex = [], -1

    def setRange(self, low, high) -> None:
        self.minimum, self.maximum = low, high

    def setMRMLScene(self, scene) -> None:
        self.scene = scene

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node) -> None:
        self._node = node

    def setContentsMargins(self, *margins) -> None:
        pass


def _user_edits(widget: _QtStandIn, value) -> None:
    """What a user's edit does in Qt: the widget takes `value`, then emits its change signal."""
    (signal, slots), = widget.slots.items()
    if signal.startswith("currentNodeChanged"):
        widget.setCurrentNode(value)
    else:
        attribute = {"currentIndexChanged": "currentIndex", "toggled": "checked", "valueChanged": "value"}
        setattr(widget, attribute.get(signal.split("(")[0], "text"), value)
    for slot in slots:
        slot(value)


def _parameter_node_wrapper(cls: type) -> type:
    """Slicer's parameterNodeWrapper for tests: a field without a default gets the wrapper's (an enum's first member,
    else None); other fields are plain attributes; `parameterNode` is a real scripted-module node in the scene, as
    the panel keeps its task and the methods' settings there."""
    for name, annotation in cls.__annotations__.items():
        if not hasattr(cls, name):
            setattr(cls, name, next(iter(annotation)) if isinstance(annotation, enum.EnumMeta) else None)

    def init(self, parameterNode=None) -> None:
        self.parameterNode = parameterNode or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")

    cls.__init__ = init
    return cls


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    """CMRSynthesis.py imported on slicer-core, with slicer.app's temporary and scene folders in a temporary folder."""
    folder = tmp_path_factory.mktemp("slicer")
    stand_ins = {
        "qt": {"QTimer": _Timer, **{name: _QtStandIn for name in (
            "QWidget", "QFormLayout", "QHBoxLayout", "QCheckBox", "QComboBox", "QSpinBox", "QDoubleSpinBox",
            "QLineEdit", "QToolButton")}},
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
        patch.setattr(slicer, "qMRMLNodeComboBox", _QtStandIn, raising=False)
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


@pytest.fixture
def widget(module, scene):
    """The module widget on stand-ins of the .ui's widgets, with its Logic, its tasks set up (the Task box filled,
    the methods' panels made) and a parameter node."""
    widget = module.CMRSynthesisWidget()
    widget.ui = types.SimpleNamespace(**{name: _QtStandIn() for name in _ui_classes()})
    widget.logic = module.CMRSynthesisLogic()
    widget.ui.taskComboBox.connect("currentIndexChanged(int)", widget.onTaskChosen)  # as setup() connects it
    widget.setupTasks()
    widget._parameterNode = module.CMRSynthesisParameterNode()
    return widget


def _shown(widget, task: str) -> set[str]:
    """The fixed widgets the panel shows for the task of key `task`, and "<method>.<name>" for each widget of the
    method panels it shows."""
    widget._parameterNode.task = task
    widget.updateWidgets()
    shown = {name for name, item in vars(widget.ui).items() if getattr(item, "visible", False)}
    for key, panel in widget._methodPanels.items():
        if all(page.visible for page in panel.pages):
            shown |= {f"{key}.{name}" for name in panel.widgets}
    return shown


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
    """Cine strain shows its fixed widgets; Cine segmentation, a method task, the cine widgets (its input is a cine)
    and its generated panel: the frames option as a line edit, its checkpoint folder and the device under Advanced,
    no sampling settings (it declares none)."""
    strain = _shown(widget, "strain")
    assert {"cineSequenceSelector", "frameIntervalSpinBox", "myocardiumSelector", "bloodSelector", "rvSelector",
            "insertionPointsSelector", "insertionPointsPlaceWidget", "edFrameSpinBox", "esFrameSpinBox"} <= strain
    segmentation = _shown(widget, "cine_segmentation")
    assert {"cineSequenceSelector", "frameIntervalSpinBox", "methodInputsFrame", "cine_segmentation.frames",
            "advancedCollapsibleButton", "methodAdvancedFrame", "deviceComboBox",
            "cine_segmentation.checkpoint"} <= segmentation
    assert not {f"cine_segmentation.{name}" for name in ("steps", "samples", "sampler", "seed")} & segmentation
    frames = widget._methodPanels["cine_segmentation"].widgets["frames"]
    assert frames.slots.keys() == {"textChanged(QString)"} and frames.placeholderText == "default"
    for shown in (strain, segmentation):
        assert not {"inputVolumeSelector", "molliSequenceSelector", "quantityComboBox",
                    "outputsCollapsibleButton"} & shown
        assert not {name for name in shown if name.startswith("scar_enhancement.")}
    assert not {"myocardiumSelector", "rvSelector", "edFrameSpinBox"} & segmentation
    assert not {"advancedCollapsibleButton", "methodInputsFrame", "cine_segmentation.frames"} & strain
    aha = _shown(widget, "aha")
    assert {"inputVolumeSelector", "myocardiumSelector", "rvSelector", "quantityComboBox"} <= aha
    assert not {"cineSequenceSelector", "edFrameSpinBox", "methodInputsFrame"} & aha
    assert widget.ui.inputVolumeLabel.text == "Map:"


def test_cine_strain_applies_only_with_its_inputs(module, widget, scene):
    parameters = widget._parameterNode
    parameters.task = "strain"
    enabled, why = _apply(widget)
    assert not enabled and "cine" in why
    parameters.cineSequence = _cine(scene, 3)
    assert _apply(widget) == (True, "Run the task")  # the masks are optional: the cine segmenter finds them
    parameters.rvNode, parameters.insertionPoints = _labelmap(scene, "RV"), _points(scene, (0, 0, 0), (1, 1, 1))
    assert _apply(widget) == (False, TWO_ANCHORS)
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
    parameters.task = "cine_segmentation"
    enabled, why = _apply(widget)
    assert not enabled and why == CHOOSE_CINE
    parameters.cineSequence = _cine(scene, 1)  # a single frame is segmented as one frame
    parameters.rvNode, parameters.insertionPoints = _labelmap(scene, "RV"), _points(scene, (0, 0, 0), (1, 1, 1))
    assert _apply(widget) == (True, "Run the task")


def _command(module, parameters, folder: Path):
    """The command the Logic builds for the chosen task, parsed by the real `cmrsynth` parser (skipped while it lacks
    the command)."""
    logic = module.CMRSynthesisLogic()
    assert logic.missingInput(parameters) == ""
    subcommand, options = logic.findTask(parameters.task).command(parameters, folder)
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
    parameters.task, parameters.cineSequence = "strain", _cine(scene, 3)
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


def test_cine_segmentation_command_line(module, widget, scene, tmp_path):
    """The cine and its trigger times as a 4D file, the labels asked for as a 4D NIfTI, every frame by default; ED and
    ES only when the user types 'ed,es' into the generated frames field; the shipped checkpoint unless a folder is
    given."""
    parameters = widget._parameterNode
    parameters.task, parameters.cineSequence = "cine_segmentation", _cine(scene, 3)
    subcommand, options = widget.logic.findTask("cine_segmentation").command(parameters, tmp_path)
    assert (subcommand, options["out"], options["frames"]) == ("segment", tmp_path / "results" / LABELS_FILE, None)
    assert (options["checkpoint"], options["device"]) == (None, "auto")
    sent = read_cine(options["cine"])
    np.testing.assert_array_equal(sent.array, mrml_checks.oblique_cine(3).array)
    assert sent.metadata["trigger_times_ms"] == mrml_checks.oblique_cine(3).metadata["trigger_times_ms"]
    widget.updateWidgets()
    panel = widget._methodPanels["cine_segmentation"]
    _user_edits(panel.widgets["frames"], "ed,es")
    _user_edits(panel.widgets["checkpoint"], str(tmp_path / "my segmenter"))
    assert parameters.parameterNode.GetParameter("cine_segmentation.frames") == "ed,es"
    args = _command(module, parameters, tmp_path / "ed es")
    assert (args.cine, args.out, args.frames) == (tmp_path / "ed es" / "cine.nii",
                                                  tmp_path / "ed es" / "results" / LABELS_FILE, "ed,es")
    assert (args.checkpoint, args.device, args.frame_interval_ms) == (tmp_path / "my segmenter", "auto", None)


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


def _finish(module, task: str, cine, workdir: Path, outputs: dict, summary: dict, parameters=None):
    """Complete a run of task `task` (on the cine sequence, or on `parameters`) whose command reported `outputs` and
    `summary`, as the Logic does when its command ends."""
    if parameters is None:
        parameters = module.CMRSynthesisParameterNode()
        parameters.cineSequence = cine
    parameters.task = task
    logic, outcomes = module.CMRSynthesisLogic(), []
    row = logic.findTask(task)
    logic._run = module._Run(row, None, workdir, parameters, row.reference(parameters), row.sourceName(parameters),
                             outcomes.append, row.inputs(parameters))
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
    outcome = _finish(module, "strain", sequence, workdir,
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
    global_circumferential = curves.GetTable().GetColumnByName(GLOBAL_STRAIN_CURVES[0])
    assert global_circumferential.GetValue(1) == pytest.approx(100.0 * summary["curves"]["global_circumferential"][1])
    chart = nodes["chart"]
    series = [chart.GetNthPlotSeriesNode(index).GetName() for index in range(chart.GetNumberOfPlotSeriesNodes())]
    present = [row for row in summary["segments"] if not row["missing"]]
    assert series[:2] == list(GLOBAL_STRAIN_CURVES) and len(series) == 2 + len(present) > 2
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
    outcome = _finish(module, "strain",
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
    write_cine(labels, tmp_path / LABELS_FILE)
    outcome = _finish(module, "cine_segmentation", sequence, tmp_path,
                      {"labels": tmp_path / LABELS_FILE}, {"frames": [0, 1, 2], "label_values": LABEL_VALUES})
    assert outcome.state is State.SUCCEEDED, outcome.message
    result = outcome.nodes["labels"]
    assert result.GetName() == "Cine labels" and result.GetNumberOfDataNodes() == 3
    browser = mrml.sequence_browser(scene, sequence, create=False)
    shown = browser.GetProxyNode(result)
    assert shown.IsA("vtkMRMLLabelMapVolumeNode")
    colours = shown.GetDisplayNode().GetColorNode()
    assert [colours.GetColorName(value) for value in (1, 2, 3)] == list(CINE_LABEL_NAMES)
    for composite in mrml._nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
        assert composite.GetLabelVolumeID() == shown.GetID()
        assert composite.GetBackgroundVolumeID() == browser.GetProxyNode(sequence).GetID()


def test_virtual_lge_comes_back_over_the_cine_with_strain_and_a_transmurality_bullseye(module, scene, tmp_path):
    """What `cmrsynth virtual-lge` writes: the virtual LGE over the cine's ED frame, the virtual scar in the label
    layer, the strain maps at ES in their colour map, and from the summary the transmurality table (16 segments,
    graded as readers grade LGE) laid out with its bullseye picture."""
    sequence = _cine(scene, 3)
    grid = mrml_checks.oblique_cine(3)
    ed = grid.with_array(grid.array[0].astype(np.float32))
    outputs = {"lge": ed.with_array(np.clip(ed.array / ed.array.max(), 0, 1)),
               "scar": ed.with_array((_labels(1).array[0] == 2).astype(np.uint8)),
               "radial_strain": ed.with_array(np.full(ed.array.shape, 0.3, np.float32)),
               "circumferential_strain": ed.with_array(np.full(ed.array.shape, -0.2, np.float32))}
    paths = {name: write_volume(volume, tmp_path / f"{name}.nrrd") for name, volume in outputs.items()}
    rows = [{"segment": segment, "name": f"segment {segment}", "extent_percent": 10.0 * (segment % 5),
             "grade": (segment % 5 + 1) // 2, "grade_label": "x"} for segment in range(1, 17)]
    rows[15].update(extent_percent=None, grade=None, grade_label=None)  # no apical lateral slice
    outcome = _finish(module, "virtual_lge", sequence, tmp_path, paths,
                      {"ed_frame": 0, "es_frame": 1, "transmurality_by_segment": rows})
    assert outcome.state is State.SUCCEEDED, outcome.message
    nodes = outcome.nodes
    assert nodes["scar"].IsA("vtkMRMLLabelMapVolumeNode") and not nodes["lge"].IsA("vtkMRMLLabelMapVolumeNode")
    np.testing.assert_allclose(slicer.util.arrayFromVolume(nodes["lge"]), outputs["lge"].array)
    assert nodes["radial_strain"].GetDisplayNode().GetColorNode().GetName() == "CMRSynthesis vik (radial_strain)"
    table = nodes["table"]
    assert table.GetNumberOfRows() == 16 and table.GetTable().GetColumnByName("transmurality").GetValue(15) == "n/a"
    picture = nodes["transmurality bullseye"]
    assert picture.GetImageData().GetNumberOfScalarComponents() == 3
    assert outcome.views == (table, picture)


def test_cine_labels_of_ed_and_es_become_segmentations(module, scene, tmp_path):
    """Two of three frames, as `cmrsynth segment --frames ed,es` reports them: one segmentation per frame, named
    after it (from 1) and its phase, with the three named segments on the cine's grid; labels of fewer frames than
    the cine's, without the frames they are, are refused."""
    sequence = _cine(scene, 3)
    labels = _labels(2)
    for run in ("reported", "unsaid"):
        write_cine(labels, tmp_path / run / LABELS_FILE)
    outcome = _finish(module, "cine_segmentation", sequence,
                      tmp_path / "reported", {"labels": tmp_path / "reported" / LABELS_FILE},
                      {"frames": [0, 2], "ed_frame": 0, "es_frame": 2, "label_values": LABEL_VALUES})
    assert outcome.state is State.SUCCEEDED, outcome.message
    assert not (tmp_path / "reported").exists()
    assert list(outcome.nodes) == ["labels frame 1", "labels frame 3"]
    shown = mrml.sequence_browser(scene, sequence, create=False).GetProxyNode(sequence)
    for node in outcome.nodes.values():
        segmentation = node.GetSegmentation()
        names = [segmentation.GetNthSegment(index).GetName() for index in range(segmentation.GetNumberOfSegments())]
        assert names == list(CINE_LABEL_NAMES)
        mask = mrml.volume_from_segmentation(node, shown, [segmentation.GetNthSegmentID(1)])
        np.testing.assert_array_equal(mask.array, labels.array[0] == 2)
    assert [node.GetName() for node in outcome.nodes.values()] == ["Cine labels, frame 1 (ED)",
                                                                    "Cine labels, frame 3 (ES)"]
    bad = _finish(module, "cine_segmentation", sequence, tmp_path / "unsaid",
                  {"labels": tmp_path / "unsaid" / LABELS_FILE}, {})  # 2 frames of 3, which: unsaid
    assert bad.state is State.FAILED and "2 frame(s)" in bad.message


def test_cancelled_strain_leaves_nothing(module, scene, monkeypatch):
    """A strain run cancelled right after it started ends CANCELLED, through onFinished, with no new node and its
    temporary folder removed; the Logic is free again."""
    monkeypatch.setattr(module, "_pythonExecutable", lambda: sys.executable)
    cine, myocardium, _ = _ring_cine(frames=8, size=64, slices=6)
    sequence = mrml.add_cine_sequence_node(scene, cine, "Ring")
    logic = module.CMRSynthesisLogic()
    parameters = module.CMRSynthesisParameterNode()
    parameters.task, parameters.cineSequence = "strain", sequence
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


# ---- the task table: method tasks made from the registry ---------------------------------------------------------


def test_task_table_lists_the_registry_methods_then_the_analysis_tasks(module, widget):
    """One task per registered method, titled as it declares, then the hand-written analysis tasks; the Task box
    holds their labels and the chosen key goes to the parameter node."""
    specs = method_specs()
    assert {"scar_enhancement", "cine_segmentation"} <= set(specs)
    tasks = widget.logic.tasks
    assert [row.label for row in tasks] == [spec.title for spec in specs.values()] + ANALYSIS_TASKS
    assert [row.method for row in tasks[:len(specs)]] == list(specs.values())
    assert all(row.method is None for row in tasks[len(specs):])
    assert widget.ui.taskComboBox.items == [row.label for row in tasks]
    _user_edits(widget.ui.taskComboBox, ANALYSIS_TASKS.index("ECV") + len(specs))
    assert widget._parameterNode.task == "ecv"
    widget._parameterNode.task = "no such task"  # e.g. a scene saved with a method this install lacks
    widget.updateWidgets()
    assert widget._parameterNode.task == tasks[0].key and widget.ui.taskComboBox.currentIndex == 0


def test_scar_enhancement_panel(module, widget, scene):
    """Scar enhancement's panel, from its declaration: the LGE (a volume, no labelmaps) and the optional heart ROI
    (segmentation or labelmap) selectors, the ROI label, the sampling settings with the method's defaults under
    Advanced (DDIM steps editable with the ddim sampler only) and a folder field per checkpoint; the latest-result
    selector is shown. Apply waits for the LGE only."""
    shown = _shown(widget, "scar_enhancement")
    assert {"methodInputsFrame", "advancedCollapsibleButton", "methodAdvancedFrame", "deviceComboBox",
            "outputsCollapsibleButton"} <= shown
    assert not {"cineSequenceSelector", "molliFolderLineEdit", "inputVolumeSelector", "t1SchemeComboBox"} & shown
    assert widget.ui.outputVolumeLabel.text == "Enhanced volume:"
    panel = widget._methodPanels["scar_enhancement"]
    lge, roi = panel.widgets["lge"], panel.widgets["roi"]
    assert (lge.nodeTypes, lge.showChildNodeTypes, lge.noneEnabled) == (["vtkMRMLScalarVolumeNode"], False, False)
    assert (roi.nodeTypes, roi.noneEnabled) == (["vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode"], True)
    inputs, advanced = (page.layout().rows for page in panel.pages)
    assert [label for label, _ in inputs] == ["LGE:", "ROI:", "ROI label:"]
    assert [label for label, _ in advanced] == ["Steps:", "Samples:", "Sampler:", "DDIM steps:", "DDIM eta:",
                                                "Seed:", "Checkpoint:", "Segmenter:"]
    widgets = panel.widgets
    assert widgets["roi_label"].slots.keys() == {"textChanged(QString)"}  # an int without a default: a line edit
    assert (widgets["steps"].value, widgets["samples"].value, widgets["ddim_steps"].value, widgets["seed"].value) == (
        250, 5, 20, 0)
    assert (widgets["steps"].minimum, widgets["seed"].maximum) == (1, 2**31 - 1)
    assert widgets["sampler"].items == ["ddpm", "ddim"] and widgets["sampler"].currentIndex == 0
    assert not widgets["ddim_steps"].enabled and not widgets["ddim_eta"].enabled
    assert (widgets["ddim_eta"].value, widgets["ddim_eta"].minimum, widgets["ddim_eta"].maximum) == (0.0, 0.0, 1.0)
    assert widgets["segmenter"].placeholderText.startswith("shipped demo model")
    assert widgets["steps"].toolTip.startswith("partial-diffusion start step t0")
    enabled, why = _apply(widget)
    assert not enabled and why == "Choose the LGE: late gadolinium enhancement (LGE) image stack."
    _user_edits(lge, mrml_checks.add_test_volume(scene, "LGE"))
    _user_edits(widgets["sampler"], 1)
    assert _apply(widget) == (True, "Run the task") and widgets["ddim_steps"].enabled and widgets["ddim_eta"].enabled
    _user_edits(widgets["roi_label"], "two")
    assert _apply(widget) == (False, "ROI label 'two': it is not a whole number.")
    _user_edits(widgets["roi_label"], "")
    assert _apply(widget)[0]


def test_scar_enhancement_command_line(module, widget, scene, tmp_path):
    """What the user chose in the generated panel reaches the real `cmrsynth enhance` parser: the LGE as it is, the
    ROI segmentation as a mask on the LGE's grid, every output asked for, the sampling settings, the checkpoints."""
    lge_node = mrml_checks.add_test_volume(scene, "LGE")
    roi_node = mrml_checks.add_segmentation(scene, lge_node, mrml_checks.two_labels())
    parameters = widget._parameterNode
    parameters.task = "scar_enhancement"
    widget.updateWidgets()
    widgets = widget._methodPanels["scar_enhancement"].widgets
    for name, value in (("lge", lge_node), ("roi", roi_node), ("steps", 50), ("samples", 2), ("sampler", 1),
                        ("ddim_steps", 10), ("seed", 7), ("segmenter", str(tmp_path / "my segmenter"))):
        _user_edits(widgets[name], value)
    parameters.device = "cpu"
    stored = parameters.parameterNode
    assert stored.GetNodeReferenceID("scar_enhancement.roi") == roi_node.GetID()
    assert (stored.GetParameter("scar_enhancement.steps"), stored.GetParameter("scar_enhancement.sampler")) == (
        "50", "ddim")
    args = _command(module, parameters, tmp_path)
    assert args.command == "enhance"
    sent = read_volume(args.lge)
    np.testing.assert_array_equal(sent.array, slicer.util.arrayFromVolume(lge_node))
    roi = read_volume(args.roi)
    np.testing.assert_array_equal(roi.array, mrml_checks.two_labels() > 0)
    assert roi.same_geometry(sent)
    results = tmp_path / "results"
    assert (args.out, args.roi_out, args.spread_out) == (results / "enhanced.nrrd", results / "roi.nrrd",
                                                         results / "spread.nrrd")
    assert (args.steps, args.samples, args.sampler, args.ddim_steps, args.seed, args.roi_label) == (
        50, 2, "ddim", 10, 7, None)
    assert (args.checkpoint, args.segmenter, args.device) == (None, tmp_path / "my segmenter", "cpu")


def test_scar_enhancement_results_come_back_over_the_lge(module, scene, tmp_path):
    """What `cmrsynth enhance` writes: "LGE enhanced" over the LGE, the ROI used in the label layer, the SD of the
    samples as a volume; the enhanced volume is the latest result. A result off the LGE's grid is refused."""
    lge_node = mrml_checks.add_test_volume(scene, "LGE")
    lge = mrml.volume_from_node(lge_node)
    outputs = {"enhanced": lge.with_array(lge.array + 1.0), "roi": lge.with_array(mrml_checks.two_labels() > 0),
               "spread": lge.with_array(np.full(lge.array.shape, 0.5, np.float32))}
    paths = {name: write_volume(volume.with_array(volume.array.astype(np.float32) if name != "roi"
                                                  else volume.array.astype(np.uint8)),
                                tmp_path / "run" / "results" / f"{name}.nrrd") for name, volume in outputs.items()}
    parameters = module.CMRSynthesisParameterNode()
    parameters.setMethodInput("scar_enhancement", "lge", lge_node)
    outcome = _finish(module, "scar_enhancement", None, tmp_path / "run", paths, {}, parameters=parameters)
    assert outcome.state is State.SUCCEEDED, outcome.message
    assert not (tmp_path / "run").exists()
    nodes = outcome.nodes
    assert {name: node.GetName() for name, node in nodes.items()} == {
        "enhanced": "LGE enhanced", "roi": "LGE roi", "spread": "LGE spread"}
    assert nodes["roi"].IsA("vtkMRMLLabelMapVolumeNode") and not nodes["enhanced"].IsA("vtkMRMLLabelMapVolumeNode")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(nodes["enhanced"]), lge.array + 1.0)
    assert mrml.volume_from_node(nodes["spread"]).same_geometry(lge)
    assert parameters.outputVolume is nodes["enhanced"]
    for composite in mrml._nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
        assert (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID(),
                composite.GetLabelVolumeID()) == (lge_node.GetID(), nodes["enhanced"].GetID(), nodes["roi"].GetID())
        assert composite.GetForegroundOpacity() == module.OVERLAY_OPACITY
    shifted = Volume(lge.array + 1.0, lge.spacing, tuple(np.add(lge.origin, 5.0)), lge.direction)
    write_volume(shifted, tmp_path / "off" / "enhanced.nrrd")
    bad = _finish(module, "scar_enhancement", None, tmp_path / "off", {"enhanced": tmp_path / "off" / "enhanced.nrrd"},
                  {}, parameters=parameters)
    assert bad.state is State.FAILED and "the result 'enhanced' and the input 'LGE'" in bad.message


class _ToyModel:
    """The toy method's model: the T2w stack scaled and shifted, no network; its region is the mask or the brighter
    half."""

    device = "cpu"

    @classmethod
    def load(cls, checkpoint=None, device: str = "auto", **checkpoints):
        return cls()

    def run(self, inputs: dict, *, progress, radius: int, mode: str, strict: bool, scale, **sampling) -> dict:
        t2w = inputs["t2w"]
        progress(0.5, f"{mode} smoothing")
        mask = inputs["mask"]
        region = mask.array > 0 if mask is not None else t2w.array > t2w.array.mean()
        return {"smoothed": t2w.with_array(t2w.array.astype(np.float32) * (scale or 1.0) + radius),
                "spread": t2w.with_array(np.full(t2w.array.shape, float(sampling["samples"]), np.float32)),
                "region": t2w.with_array(region.astype(np.uint8))}


TOY = MethodSpec(
    name="toy_smoothing", command="toy-smooth", title="Toy smoothing (test)", help="a method registered by a test",
    paper="none", factory=_ToyModel.load,
    inputs=(InputRole("t2w", "t2w", "T2-weighted stack to smooth"),
            InputRole("mask", "mask", "where to look", required=False)),
    outputs=(OutputRole("smoothed", "map", "the smoothed map", grid="t2w", quantity="t1_native"),
             OutputRole("spread", "sd", "SD of the samples", grid="t2w"),
             OutputRole("region", "mask", "the region used", grid="t2w")),
    checkpoints=(CheckpointRole("checkpoint", "toy checkpoint folder", "toy_demo"),),
    options=(Option("radius", int, 2, "kernel radius (voxels)"),
             Option("mode", str, "gauss", "kernel", choices=("gauss", "box")),
             Option("strict", bool, False, "refuse odd inputs"),
             Option("scale", float, None, "intensity scale")),
    sampling=Sampling(steps=10, samples=2),
)


@pytest.fixture
def toy(module):
    """The toy method, registered through the registry alone for one test."""
    registry.register(TOY)
    yield TOY
    registry.unregister(TOY.name)


def test_a_method_registered_at_run_time_gets_a_task_panel_and_command(module, toy, widget, scene, tmp_path, capsys):
    """Issue 13: a method added through the registry alone appears in the Task box; choosing it shows the widgets
    generated from its declaration (its input selectors, a widget per option by type, the sampling settings, its
    checkpoint folder), Apply waits for its required input and a readable value of every option, the user's choices
    are kept in the parameter node, saved with the scene and shown again from it, the Logic's command line is one the
    real `cmrsynth` parser reads, and what that command writes comes back as nodes by output kind."""
    labels = [row.label for row in widget.logic.tasks]
    assert toy.title in labels and widget.ui.taskComboBox.items == labels
    _user_edits(widget.ui.taskComboBox, labels.index(toy.title))
    parameters = widget._parameterNode
    assert parameters.task == toy.name
    shown = _shown(widget, toy.name)
    assert {f"{toy.name}.{name}" for name in ("t2w", "mask", "radius", "mode", "strict", "scale", "steps", "samples",
                                              "sampler", "ddim_steps", "ddim_eta", "seed", "checkpoint")} <= shown
    assert {"methodInputsFrame", "methodAdvancedFrame", "deviceComboBox", "outputsCollapsibleButton"} <= shown
    assert not {"cineSequenceSelector", "molliFolderLineEdit", "inputVolumeSelector"} & shown
    assert not {name for name in shown if name.startswith(("scar_enhancement.", "cine_segmentation."))}
    widgets = widget._methodPanels[toy.name].widgets
    signals = {name: next(iter(item.slots)) for name, item in widgets.items()}
    assert signals == {"t2w": "currentNodeChanged(vtkMRMLNode*)", "mask": "currentNodeChanged(vtkMRMLNode*)",
                       "radius": "valueChanged(int)", "mode": "currentIndexChanged(int)", "strict": "toggled(bool)",
                       "scale": "textChanged(QString)", "steps": "valueChanged(int)", "samples": "valueChanged(int)",
                       "sampler": "currentIndexChanged(int)", "ddim_steps": "valueChanged(int)",
                       "ddim_eta": "valueChanged(double)", "seed": "valueChanged(int)", "checkpoint": "textChanged(QString)"}
    assert (widgets["radius"].value, widgets["mode"].items, widgets["strict"].checked, widgets["scale"].text) == (
        2, ["gauss", "box"], False, "")
    assert (widgets["steps"].value, widgets["samples"].value, widgets["strict"].args) == (10, 2, ("Strict",))
    assert widgets["checkpoint"].placeholderText == "shipped demo model (toy_demo)"
    assert widgets["t2w"].toolTip == "T2-weighted stack to smooth" and widgets["radius"].toolTip.startswith("kernel")
    enabled, why = _apply(widget)
    assert not enabled and why == "Choose the T2w: T2-weighted image stack."

    t2 = mrml_checks.add_test_volume(scene, "T2")
    for name, value in (("t2w", t2), ("radius", 5), ("mode", 1), ("strict", True), ("scale", "half"),
                        ("sampler", 1), ("ddim_steps", 7), ("seed", 3), ("checkpoint", str(tmp_path / "toy model"))):
        _user_edits(widgets[name], value)
    assert _apply(widget) == (False, "Scale 'half': it is not a number.")
    _user_edits(widgets["scale"], "0.5")
    assert _apply(widget) == (True, "Run the task")
    stored = parameters.parameterNode
    assert {name: stored.GetParameter(f"{toy.name}.{name}") for name in ("radius", "mode", "strict", "scale",
                                                                         "sampler")} == {
        "radius": "5", "mode": "box", "strict": "true", "scale": "0.5", "sampler": "ddim"}
    assert stored.GetNodeReferenceID(f"{toy.name}.t2w") == t2.GetID()

    scene.SetURL(str(tmp_path / "saved.mrml"))  # saved with the scene, read back, shown by a new panel
    assert scene.Commit()
    reloaded = slicer.vtkMRMLScene()
    reloaded.SetURL(str(tmp_path / "saved.mrml"))
    assert reloaded.Connect()
    again = module.CMRSynthesisParameterNode(reloaded.GetNodeByID(stored.GetID()))
    assert again.task == toy.name and again.methodInput(toy.name, "t2w").GetName() == "T2"
    fresh = module.MethodPanel(toy, _QtStandIn(), _QtStandIn(), lambda: again, None, None)
    fresh.updateFromParameters(again)
    assert (fresh.widgets["radius"].value, fresh.widgets["mode"].currentIndex, fresh.widgets["strict"].checked,
            fresh.widgets["scale"].text, fresh.widgets["sampler"].currentIndex, fresh.widgets["ddim_steps"].value,
            fresh.widgets["checkpoint"].text) == (5, 1, True, "0.5", 1, 7, str(tmp_path / "toy model"))
    assert fresh.widgets["t2w"].currentNode().GetName() == "T2" and fresh.widgets["ddim_steps"].enabled

    workdir = tmp_path / "run"
    subcommand, options = widget.logic.findTask(toy.name).command(parameters, workdir)
    command = cli_command(subcommand, options, python="PythonSlicer")
    args = build_parser().parse_args(command[3:])
    assert (args.command, args.method, args.mask, args.radius, args.mode, args.strict, args.scale) == (
        "toy-smooth", toy.name, None, 5, "box", True, 0.5)
    assert (args.steps, args.samples, args.sampler, args.ddim_steps, args.seed, args.checkpoint) == (
        10, 2, "ddim", 7, 3, tmp_path / "toy model")
    np.testing.assert_array_equal(read_volume(args.t2w).array, slicer.util.arrayFromVolume(t2))
    assert (args.out, args.spread_out, args.region_out) == tuple(workdir / "results" / name for name in (
        "smoothed.nrrd", "spread.nrrd", "region.nrrd"))

    capsys.readouterr()
    assert main(command[3:]) == 0  # the command the panel runs, in this process
    result = next(json.loads(line) for line in capsys.readouterr().out.splitlines() if '"result"' in line)
    outcome = _finish(module, toy.name, None, workdir, result["outputs"], result["summary"], parameters=parameters)
    assert outcome.state is State.SUCCEEDED, outcome.message
    assert not workdir.exists()
    nodes = outcome.nodes
    assert {name: node.GetName() for name, node in nodes.items()} == {
        "smoothed": "T2 smoothed", "spread": "T2 spread", "region": "T2 region"}
    np.testing.assert_allclose(slicer.util.arrayFromVolume(nodes["smoothed"]),
                               slicer.util.arrayFromVolume(t2) * 0.5 + 5)
    assert "t1_native" in nodes["smoothed"].GetDisplayNode().GetColorNode().GetName()  # the map's colour map
    assert nodes["region"].IsA("vtkMRMLLabelMapVolumeNode") and parameters.outputVolume is nodes["smoothed"]
    for composite in mrml._nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
        assert (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID(),
                composite.GetLabelVolumeID()) == (t2.GetID(), nodes["smoothed"].GetID(), nodes["region"].GetID())


EVERY_KIND = MethodSpec(
    name="toy_every_kind", command="toy-every-kind", title="Every kind (test)", help="inputs of every panel kind",
    paper="none", factory=_ToyModel.load,
    inputs=(InputRole("cine", "cine", "cine"), InputRole("molli", "molli", "MOLLI images", required=False),
            InputRole("bssfp", "bssfp", "bSSFP stack", required=False),
            InputRole("profile", "phenotype", "phenotype JSON", required=False)),
    outputs=(OutputRole("frames", "image", "synthetic frames", grid="cine", frames=True),
             OutputRole("t1", "map", "T1 map at ED", grid="cine", quantity="t1_native")),
    checkpoints=(CheckpointRole("checkpoint", "its model", "toy_demo"),
                 CheckpointRole("encoder", "its encoder", "toy_encoder")),
)


def test_every_input_kind_gets_its_widget_and_flag(module, widget, scene, tmp_path):
    """A cine role uses the cine selector, a MOLLI role the MOLLI widgets (with their inversion times), an image role
    a generated volume selector, a phenotype role a file field; without options or sampling no such widgets; one
    folder field per checkpoint role; a cine-shaped output is asked for as 4D NIfTI."""
    registry.register(EVERY_KIND)
    try:
        widget.logic.refreshTasks()
        widget.setupTasks()
        shown = _shown(widget, EVERY_KIND.name)
        key = EVERY_KIND.name
        assert {"cineSequenceSelector", "frameIntervalSpinBox", "molliFolderLineEdit", "molliSequenceSelector",
                "inversionTimesLineEdit", f"{key}.bssfp", f"{key}.profile", f"{key}.checkpoint",
                f"{key}.encoder"} <= shown
        assert not {f"{key}.cine", f"{key}.molli", f"{key}.steps"} & shown
        assert "outputsCollapsibleButton" not in shown  # the main result is cine-shaped
        parameters = widget._parameterNode
        assert _apply(widget) == (False, CHOOSE_CINE)
        parameters.cineSequence = _cine(scene, 3)
        assert _apply(widget) == (True, "Run the task")
        parameters.molliSequence = mrml_checks.add_test_sequence(scene)
        parameters.molliFolder = str(tmp_path)
        assert _apply(widget) == (False, "Choose either a DICOM folder or a sequence, not both.")
        parameters.molliFolder = ""
        widgets = widget._methodPanels[key].widgets
        _user_edits(widgets["profile"], str(tmp_path / "absent.json"))
        assert not _apply(widget)[0] and "absent.json does not exist" in _apply(widget)[1]
        (tmp_path / "profile.json").write_text('{"age": 60}')
        _user_edits(widgets["profile"], str(tmp_path / "profile.json"))
        _user_edits(widgets["bssfp"], mrml_checks.add_test_volume(scene, "bSSFP"))
        args = _command(module, parameters, tmp_path / "run")
        assert (args.command, args.profile, args.ti, args.encoder) == ("toy-every-kind", tmp_path / "profile.json",
                                                                       "100,200,300", None)
        assert read_volume(args.molli).array.shape[0] == 3 and read_cine(args.cine).array.shape[0] == 3
        assert read_volume(args.bssfp).same_geometry(read_cine(args.cine))
        assert (args.out, args.t1_out) == (tmp_path / "run" / "results" / "frames.nii.gz",
                                           tmp_path / "run" / "results" / "t1.nrrd")
    finally:
        registry.unregister(EVERY_KIND.name)


def test_a_method_module_not_importable_yet_offers_the_installation(module, widget, monkeypatch):
    """Before PyTorch is installed a method module cannot be imported: its task is listed by the module's name, Apply
    is enabled to install the packages, and the Logic refuses to run it."""
    monkeypatch.setattr(module, "unavailable_methods", lambda: {"t1_later": "needs the Python package 'torch'"})
    widget.logic.refreshTasks()
    widget.setupTasks()
    assert "T1 later (not installed)" in widget.ui.taskComboBox.items
    widget._parameterNode.task = "t1_later"
    enabled, why = _apply(widget)
    assert enabled and why == "This method needs the Python package 'torch': Apply installs the Python packages."
    with pytest.raises(module.InputError, match="needs the Python package 'torch'"):
        widget.logic.process(widget._parameterNode)


def test_self_test_names_tasks_and_settings_of_the_table(module):
    """The Slicer self-test chooses tasks and method settings by key: each is one the task table and the registry
    know (a typo would only show inside Slicer)."""
    test = next(node for node in _module_tree().body if isinstance(node, ast.ClassDef)
                and node.name == "CMRSynthesisTest")
    source = ast.unparse(test)
    chosen = set(re.findall(r"parameters\.task(?:, parameters\.\w+)* = \(?'(\w+)'", source))
    method = re.findall(r"method = '(\w+)'", source)
    assert chosen == {"t1map", "aha", "strain"} and method == ["scar_enhancement"]
    assert chosen | set(method) <= {row.key for row in module.taskTable()}
    spec = method_specs()[method[0]]
    inputs = set(re.findall(r"setMethodInput\(method, '(\w+)'", source))
    loop = re.search(r"for name, value in \((.*?)\):\s*parameters\.setMethodValue\(method, name, value\)", source,
                     re.DOTALL)
    settings = set(re.findall(r"\('(\w+)', ", loop.group(1)))
    assert inputs == {"lge", "roi"} <= {role.name for role in spec.inputs}
    assert settings == {"steps", "samples", "sampler", "ddim_steps"} <= set(spec.option_defaults())
