"""The module panel without Slicer: CMRSynthesis.py is parsed (it imports only inside Slicer) and the .ui is loaded
with PySide6 offscreen, Slicer's widget classes standing in as plain Qt widgets.

Checks that every `ui.<name>` the module uses exists in the .ui, that every parameter of the parameter-node class is
bound to exactly one widget that Slicer's parameterNodeWrapper can connect to its type, that defaults lie within
their ranges and choices, and renders the panel to a PNG.
"""

import ast
import os
from pathlib import Path
from xml.etree import ElementTree

import pytest

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

from CMRSynthesisLib.analysis.ecv import HAEMATOCRIT_RANGE

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
                                             "AHA 16 segments"]
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
