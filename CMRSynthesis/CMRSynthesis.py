"""CMR Synthesis: diffusion-model synthesis and enhancement, T1 mapping, ECV, AHA segments, cine segmentation and
myocardial strain of cardiac MR in 3D Slicer.

A thin shell over CMRSynthesisLib, driven by one task table (`taskTable`): one row per method of the library's method
registry, made from its declaration alone (the way Slicer's CLI modules build their panels from an XML description),
and one hand-written row per analysis task. A row names the panel widgets it shows, what Apply waits for, the
`cmrsynth` command line it runs and how its results come back. The panel binds its widgets to a parameter node. The
Logic writes the input nodes to a temporary folder, runs the same `cmrsynth` command line that CLI users run (with
Slicer's Python, out of process, so the GUI stays live and Cancel can kill it), polls its JSON progress with a QTimer,
and brings the results back as new nodes over the input.

Only widget and scene glue lives here. What needs no Qt or Slicer is in the library, tested without Slicer:
CMRSynthesisLib.method_tasks (a method task's settings, their values, what Apply waits for, its command line),
analysis_tasks (the same for the analysis tasks, their result tables, the kept files), dependencies (what must be
installed), mrml (scene <-> files and result nodes).
"""

# ruff: noqa: UP045
# Annotations here are evaluated on import (the parameter-node wrapper needs real ones), so they are written
# Optional[...], not X | None: Slicer before 5.10 (Python 3.9) then still loads the module and says what it lacks.

import dataclasses
import enum
import importlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, Union

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSequenceNode,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from vtkSlicerSegmentationsModuleMRMLPython import vtkMRMLSegmentationNode

MODULE_DIR = Path(__file__).resolve().parent
# An installed extension has CMRSynthesisLib and Resources beside this file; the source tree has them one folder up.
SOURCE_ROOT = MODULE_DIR if (MODULE_DIR / "CMRSynthesisLib").is_dir() else MODULE_DIR.parent
if str(SOURCE_ROOT) not in sys.path:
    sys.path.insert(0, str(SOURCE_ROOT))

# These need only numpy, vtk, slicer and packaging, which Slicer has (and read on Python 3.9).
from CMRSynthesisLib import analysis_tasks, dependencies, method_tasks, mrml
from CMRSynthesisLib.errors import Cancelled, CMRSynthesisError, InputError
from CMRSynthesisLib.method_tasks import NODE_CLASSES, MolliChoice
from CMRSynthesisLib.methods.registry import MethodSpec, method_specs, unavailable_methods
from CMRSynthesisLib.process import CliProcess, Result, State, child_environment, cli_command, remarks

logger = logging.getLogger(__name__)


def resourcePath(relativePath: str) -> str:
    """Absolute path of a file under Resources/."""
    return str(SOURCE_ROOT / "Resources" / relativePath)


class CMRSynthesis(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CMR Synthesis"
        self.parent.categories = ["Cardiac"]
        self.parent.dependencies = []  # PyTorch (through PyTorchUtils) is checked on Apply, so the module always loads
        self.parent.contributors = ["CMRSynthesis team"]
        self.parent.helpText = f"""
Diffusion-model synthesis and enhancement of cardiac MR, T1 mapping, ECV, AHA 16-segment reports, cine segmentation
and myocardial strain.
<br><b>Methods</b> (scar enhancement of LGE, cine segmentation and every other method of the library): each has a
task whose panel shows the inputs, options, sampling settings (Advanced) and checkpoint folders (Advanced; empty: the
shipped demo model) the method declares; the task box's tooltip says what it does. Results come back over their
input: images and maps as volumes (maps in their colour map), the per-voxel SD of the samples (uncertainty) as a
volume, masks in the label layer, labels as segmentations, and results of every cine frame as a sequence that plays
with the cine. Scar enhancement changes only voxels inside the heart region of interest. The shipped demo models are
trained on synthetic phantoms only: point to your own checkpoints for real studies.
<br><b>T1 map (MOLLI / ShMOLLI)</b>: fits every voxel of the source images, given as a DICOM folder (read with the
vendor tags that hold the inversion times) or as a loaded volume sequence with its inversion times, and adds the T1
map in the lipari colour map (0-2000 ms) with the fit parameters A, B, T1*, R2 and a failed-fit mask.
<br><b>ECV</b>: extracellular volume (%) from native and post-contrast T1 maps, the haematocrit and an LV blood-pool
mask.
<br><b>AHA 16 segments</b>: divides the LV myocardium into the 16 AHA segments, anchored at the RV insertion points
(found from an RV mask, or two placed points), and adds a segmentation, a table of per-segment values and the
bullseye picture. Copies of the table (CSV, JSON) and of the bullseye (PNG) are saved in a new folder under
Slicer's default scene folder, in {KEPT_FOLDER}/; the status line names it.
<br><b>Cine strain</b>: tracks the LV myocardium of a cine (a loaded sequence, one item per frame) from end-diastole
through the heartbeat and shows the circumferential strain map over the cine as it plays, the global and per-segment
strain curves as a plot, the peak strains per AHA segment as a table and the strain bullseye (Green-Lagrange strain
in %, negative for shortening). The myocardium (and an RV mask or the two RV insertion points, for the segments) are
given at the ED frame; without a myocardium mask the cine segmenter finds it. strain.json and the figures are kept
beside the AHA files.
<br>The ED and ES frames of Cine strain are numbered from 1, as the sequence browser counts them; a method's frame
option is passed to its command as written (see its tooltip).
<br>Inputs are never modified; results are new nodes over the input.
<br>Needs Slicer 5.10 or later (Python 3.11 or newer) and the PyTorch extension; the other Python packages are
offered for installation on the first Apply.
"""
        self.parent.acknowledgementText = """
Scar enhancement follows M. Hasny, O. B. Demirel, A. Amyar, S. Faghihroohi, R. Nezafat, "Myocardial Scar
Enhancement in LGE Cardiac MRI using Localized Diffusion", MICCAI. AHA segments follow Cerqueira et al.,
Circulation 2002; T1 maps are shown in lipari (F. Crameri's scientific colour maps) as Fuderer et al. recommend
(MRM 2025). Built on MONAI, PyTorch and 3D Slicer.
"""
        self.parent.icon = qt.QIcon(resourcePath("Icons/CMRSynthesis.png"))


class Quantity(enum.Enum):
    """What the map of an AHA report holds; the value is the library's quantity name."""

    T1_NATIVE = "t1_native"
    T1_POST = "t1_post"
    ECV = "ecv"

    def label(self) -> str:
        return {"t1_native": "native T1 (ms)", "t1_post": "post-contrast T1 (ms)", "ecv": "ECV (%)"}[self.value]


TASK_PARAMETER = "task"  # the parameter node's string parameter holding the chosen task's key
STRAIN_DISPLAY = "peak_circumferential_strain"  # display.py quantity: vik, -30 to 30 %
T1_RESULT_NAMES = {"t1": "T1", "a": "T1 A", "b": "T1 B", "t1_star": "T1*", "r2": "T1 R2", "failed": "T1 failed fits"}
OVERLAY_OPACITY = 0.5
KEPT_FOLDER = "CMRSynthesis"  # under Slicer's default scene folder: copies of the AHA table and bullseye files
# The panel's fixed widgets (Resources/UI/CMRSynthesis.ui) that only some tasks show, in groups.
INPUT_VOLUME = ("inputVolumeLabel", "inputVolumeSelector")
CINE = ("cineSequenceLabel", "cineSequenceSelector", "frameIntervalLabel", "frameIntervalSpinBox")
MOLLI = ("molliFolderLabel", "molliFolderLineEdit", "molliFolderBrowseButton", "molliSequenceLabel",
         "molliSequenceSelector", "inversionTimesLabel", "inversionTimesLineEdit")
MASKS = ("bloodLabel", "bloodSelector", "myocardiumLabel", "myocardiumSelector")
ANCHORS = ("rvLabel", "rvSelector", "insertionPointsLabel", "insertionPointsSelector", "insertionPointsPlaceWidget")
OUTPUTS = ("outputsCollapsibleButton",)
METHOD = ("methodInputsFrame", "advancedCollapsibleButton", "methodAdvancedFrame", "deviceLabel", "deviceComboBox")


@parameterNodeWrapper
class CMRSynthesisParameterNode:
    """The panel's state, saved with the scene. inputVolume is the analysis task's input (native T1 map, map to
    report) or, for T1 maps, the volume to show the map over. T1 maps and MOLLI inputs read molliFolder or
    molliSequence (one of them); cine inputs read cineSequence (frameInterval in ms, 0: the times from its index).
    edFrame / esFrame count from 1 as the sequence browser does; 0 is "auto". device is every method's.

    The chosen task (`task`) and the settings of each method task are plain parameters of the underlying node, not
    fields, because the task table is built at run time from the method registry: `task` holds the row's key, a
    method's inputs are node references and its options, sampling settings and checkpoint folders are string
    parameters, named "<method>.<role or option>" (`methodInput`, `methodText`, `setMethodInput`, `setMethodValue`).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    molliFolder: str = ""
    molliSequence: vtkMRMLSequenceNode
    inversionTimes: str = ""  # ms, comma-separated
    fitMaskNode: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]  # noqa: UP007 (wrapper needs Union)
    t1Scheme: Annotated[str, Choice(["auto", "molli", "shmolli"])] = "auto"
    postVolume: vtkMRMLScalarVolumeNode
    haematocrit: Annotated[float, WithinRange(0.1, 0.7)] = 0.42
    resamplePost: bool = False
    bloodNode: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]  # noqa: UP007
    myocardiumNode: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]  # noqa: UP007
    rvNode: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]  # noqa: UP007
    insertionPoints: vtkMRMLMarkupsFiducialNode
    quantity: Quantity
    allowMissing: bool = False
    cineSequence: vtkMRMLSequenceNode
    frameInterval: Annotated[float, WithinRange(0.0, 2000.0)] = 0.0
    edFrame: Annotated[int, WithinRange(0, 9999)] = 0
    esFrame: Annotated[int, WithinRange(0, 9999)] = 0
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    outputVolume: vtkMRMLScalarVolumeNode

    @property
    def task(self) -> str:
        """The key of the chosen task in the task table (empty before one is chosen)."""
        return self.parameterNode.GetParameter(TASK_PARAMETER)

    @task.setter
    def task(self, key: str) -> None:
        self.parameterNode.SetParameter(TASK_PARAMETER, key)

    def methodInput(self, method: str, role: str):
        """The node chosen for input `role` of method `method` (a volume, labelmap or segmentation), or None."""
        return self.parameterNode.GetNodeReference(f"{method}.{role}")

    def setMethodInput(self, method: str, role: str, node) -> None:
        self.parameterNode.SetNodeReferenceID(f"{method}.{role}", node.GetID() if node is not None else None)

    def methodText(self, method: str, name: str) -> Optional[str]:
        """The text kept for option, sampling setting, checkpoint or phenotype file `name` of method `method`; None
        when never set (the declaration's default then holds)."""
        key = f"{method}.{name}"
        return self.parameterNode.GetParameter(key) if self.parameterNode.HasParameter(key) else None

    def methodTexts(self, spec: MethodSpec) -> dict:
        """The text kept for each of method_tasks.stored_names(spec) (see methodText)."""
        return {name: self.methodText(spec.name, name) for name in method_tasks.stored_names(spec)}

    def setMethodValue(self, method: str, name: str, value: Any) -> None:
        """Keep a value of method `method` (see methodText): None is kept as empty text (not given)."""
        self.parameterNode.SetParameter(f"{method}.{name}", method_tasks.value_text(value))

    def molliChoice(self) -> MolliChoice:
        """The MOLLI source images as chosen: the folder, whether a sequence is chosen, and the inversion times (as
        typed, else from the sequence's index)."""
        sequence = self.molliSequence
        times = self.inversionTimes.strip() or (mrml.inversion_times_from_index(sequence) if sequence is not None else "")
        return MolliChoice(self.molliFolder.strip(), sequence is not None, times)


@dataclasses.dataclass
class Outcome:
    """How a run ended, as the Logic reports it: task is the task's label; nodes are the new result nodes by output
    name; on success, message is a note for the status line (where files were kept), folder the folder of those files,
    if any, and views the (table, picture, chart) nodes to lay out in views, if any."""

    task: str
    state: State
    message: str
    nodes: dict
    log: list
    folder: Optional[Path] = None
    views: tuple = ()


class CMRSynthesisWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._methodPanels = {}
        self._taskWidgetNames = []
        self._fillingTasks = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(resourcePath("UI/CMRSynthesis.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CMRSynthesisLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.taskComboBox.connect("currentIndexChanged(int)", self.onTaskChosen)
        self.ui.molliFolderBrowseButton.connect(
            "clicked()", lambda: self.onBrowseFolder("molliFolder", "Folder of the MOLLI / ShMOLLI source images"))
        placeWidget = self.ui.insertionPointsPlaceWidget
        placeWidget.buttonsVisible = False  # hides the place button too: it alone is shown again
        placeWidget.placeButton().show()
        placeWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
        self.setupTasks()
        if dependencies.python_too_old():
            self.ui.statusLabel.text = f"CMR Synthesis needs {dependencies.python_too_old()}."
        self.initializeParameterNode()

    def setupTasks(self) -> None:
        """Fill the Task box from the Logic's task table and make the panel of each method task not made yet."""
        tasks = self.logic.tasks
        self._taskWidgetNames = sorted({name for row in tasks for name in row.widgets})
        self._fillingTasks = True
        try:
            self.ui.taskComboBox.clear()
            for row in tasks:
                self.ui.taskComboBox.addItem(row.label)
        finally:
            self._fillingTasks = False
        for row in tasks:
            if row.method is not None and row.key not in self._methodPanels:
                self._methodPanels[row.key] = MethodPanel(row.method, self.ui.methodInputsFrame,
                                                          self.ui.methodAdvancedFrame, lambda: self._parameterNode,
                                                          self.chooseFolder, self.chooseFile)

    def cleanup(self) -> None:
        self.logic.cancel(wait=True)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Select the parameter node; its input volume and the volume inputs of the method tasks start as the
        scene's first scalar volume."""
        self.setParameterNode(self.logic.getParameterNode())
        parameters = self._parameterNode
        volumes = [node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                   if not node.IsA("vtkMRMLLabelMapVolumeNode")]
        if not volumes:
            return
        if not parameters.inputVolume:
            parameters.inputVolume = volumes[0]
        for row in self.logic.tasks:
            for role in row.method.inputs if row.method is not None else ():
                if role.kind in NODE_CLASSES and role.kind != "mask" and role.required and parameters.methodInput(
                        row.key, role.name) is None:
                    parameters.setMethodInput(row.key, role.name, volumes[0])

    def setParameterNode(self, parameterNode: Optional[CMRSynthesisParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateWidgets)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateWidgets)
        self.updateWidgets()

    def updateWidgets(self, caller=None, event=None) -> None:
        """Show the chosen task's widgets (its row's fixed widgets, and a method's generated panel with the values of
        the parameter node) and name its input; Apply is enabled when the task's inputs are set, its tooltip says
        what is missing. While a task runs Apply is the Cancel button and the inputs are locked."""
        parameters = self._parameterNode
        row = self.logic.findTask(parameters.task) if parameters else None
        if row is None:
            row = self.logic.tasks[0]
            if parameters:
                parameters.task = row.key
        for name in self._taskWidgetNames:
            getattr(self.ui, name).visible = name in row.widgets
        for key, panel in self._methodPanels.items():
            panel.setVisible(key == row.key)
            if key == row.key and parameters:
                panel.updateFromParameters(parameters)
        self.ui.taskComboBox.currentIndex = self.logic.tasks.index(row)
        self.ui.taskComboBox.toolTip = row.help
        if row.inputLabel:
            self.ui.inputVolumeLabel.text, self.ui.inputVolumeSelector.toolTip = row.inputLabel
        if row.outputLabel:
            self.ui.outputVolumeLabel.text = row.outputLabel
        self.ui.insertionPointsPlaceWidget.setCurrentNode(parameters.insertionPoints if parameters else None)
        running = self.logic.isRunning()
        missing = self.logic.missingInput(parameters) if parameters else "No parameter node yet."
        self.ui.applyButton.text = "Cancel" if running else "Apply"
        self.ui.applyButton.enabled = running or not missing or bool(row.unavailable)
        self.ui.applyButton.toolTip = ("Stop the running task" if running else row.unavailable or missing
                                       or "Run the task")
        for section in (self.ui.inputsCollapsibleButton, self.ui.advancedCollapsibleButton):
            section.enabled = not running

    def onTaskChosen(self, index: int) -> None:
        if self._parameterNode and not self._fillingTasks and 0 <= index < len(self.logic.tasks):
            self._parameterNode.task = self.logic.tasks[index].key

    def chooseFolder(self, caption: str, current: str) -> str:
        """A folder the user picks (empty when cancelled)."""
        return qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), caption, current)

    def chooseFile(self, caption: str, current: str) -> str:
        """A JSON file the user picks (empty when cancelled)."""
        return qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), caption, current,
                                              "JSON files (*.json);;All files (*)")

    def onBrowseFolder(self, parameter: str, caption: str) -> None:
        """Let the user pick the folder held by the parameter named `parameter` (molliFolder)."""
        folder = self.chooseFolder(caption, getattr(self._parameterNode, parameter))
        if folder:
            setattr(self._parameterNode, parameter, folder)

    def onApplyButton(self) -> None:
        if self.logic.isRunning():
            self.logic.cancel()
            self.ui.statusLabel.text = "Cancelling..."
            return
        if not self.ensureDependencies():
            return
        row = self.logic.findTask(self._parameterNode.task)
        if row is not None and row.unavailable:  # installed now: the method's own task replaces this one
            self.logic.refreshTasks()
            self.setupTasks()
            self.updateWidgets()
            still = self.logic.findTask(row.key)
            self.ui.statusLabel.text = (still.unavailable if still is not None and still.unavailable
                                        else "Installed: choose the task's inputs, then Apply.")
            return
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "Starting..."
        try:
            self.logic.process(self._parameterNode, onProgress=self.onProgress, onFinished=self.onFinished)
        except (CMRSynthesisError, OSError) as error:
            self.ui.statusLabel.text = "Could not start."
            label = row.label if row is not None else "The task"
            slicer.util.errorDisplay(f"{label} could not start:\n\n{error}")
        self.updateWidgets()

    def ensureDependencies(self) -> bool:
        """True when the Python packages are there, after offering to install what is missing."""
        missing = self.logic.missingDependencies()
        if not missing:
            return True
        try:
            self.logic.installDependencies()
        except (CMRSynthesisError, RuntimeError, OSError, subprocess.SubprocessError) as error:  # declined, offline
            slicer.util.errorDisplay("CMR Synthesis needs:\n\n" + "\n".join(missing),
                                     detailedText=str(error))
            return False
        stillMissing = self.logic.missingDependencies()
        if stillMissing:
            slicer.util.errorDisplay("Still missing (restart Slicer if they were just installed):\n\n"
                                     + "\n".join(stillMissing))
        return not stillMissing

    def onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = round(100 * fraction)
        self.ui.statusLabel.text = message

    def onFinished(self, outcome: Outcome) -> None:
        self.updateWidgets()
        if outcome.state is State.SUCCEEDED:
            self.ui.progressBar.value = 100
            names = ", ".join(node.GetName() for node in outcome.nodes.values())
            self.ui.statusLabel.text = f"Done: {names}." + (f" {outcome.message}" if outcome.message else "")
            slicer.util.resetSliceViews()
            if outcome.views:
                self.showResultViews(*outcome.views)
            self.showSequenceToolbar(outcome.nodes)
        elif outcome.state is State.CANCELLED:
            self.ui.statusLabel.text = "Cancelled."
        else:
            self.ui.statusLabel.text = "Failed."
            slicer.util.errorDisplay(f"{outcome.task} failed:\n\n{outcome.message}",
                                     detailedText="\n".join(outcome.log))

    @staticmethod
    def showResultViews(table, picture=None, chart=None) -> None:
        """Switch to a layout with a table view (and a plot view for a chart): the table and the chart there, the
        picture, if any, alone in the yellow view (axial)."""
        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView if chart is None
                                else slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
        applicationLogic = slicer.app.applicationLogic()
        selection = applicationLogic.GetSelectionNode()
        selection.SetActiveTableID(table.GetID())
        applicationLogic.PropagateTableSelection()
        if chart is not None:
            selection.SetActivePlotChartID(chart.GetID())
            applicationLogic.PropagatePlotChartSelection()
        if picture is None:
            return
        sliceWidget = layoutManager.sliceWidget("Yellow")
        sliceWidget.mrmlSliceNode().SetOrientation("Axial")
        composite = sliceWidget.mrmlSliceCompositeNode()
        composite.SetBackgroundVolumeID(picture.GetID())
        composite.SetForegroundVolumeID(None)
        composite.SetLabelVolumeID(None)
        sliceWidget.sliceLogic().FitSliceToAll()

    @staticmethod
    def showSequenceToolbar(nodes: dict) -> None:
        """Show the sequence browser toolbar on the browser that plays the result sequence among `nodes`, if any."""
        sequence = next((node for node in nodes.values() if node.IsA("vtkMRMLSequenceNode")), None)
        browser = None if sequence is None else mrml.sequence_browser(slicer.mrmlScene, sequence, create=False)
        if browser is not None:
            slicer.modules.sequences.setToolBarActiveBrowserNode(browser)
            slicer.modules.sequences.setToolBarVisible(True)


class MethodPanel:
    """The widgets of one method task, made from its declaration (methods.registry.MethodSpec) the way Slicer's CLI
    modules make theirs from an XML description, in the containers the .ui provides.

    Inputs: a node selector for each volume or mask role (method_tasks.NODE_CLASSES; a cine role uses the panel's cine
    selector, a MOLLI role its MOLLI widgets), a JSON file field for a phenotype role; then one editor per option
    (method_tasks.Setting.editor: a check box, a combo box, a spin box or a line edit whose empty text means "not
    given"). Advanced: the sampling settings of a diffusion method and one folder field per checkpoint role (empty:
    the shipped demo model). Every widget keeps its value in the parameter node as the user changes it and shows the
    node's value on `updateFromParameters`, so scenes save and restore them. `widgets` holds the editing widget of
    each role, option and setting by name.
    """

    def __init__(self, spec: MethodSpec, inputsFrame, advancedFrame, parameterNode: Callable,
                 chooseFolder: Callable, chooseFile: Callable) -> None:
        self.spec, self.widgets, self.pages = spec, {}, []
        self._parameterNode, self._updaters, self._updating = parameterNode, [], False
        inputs, advanced = (self._addPage(frame) for frame in (inputsFrame, advancedFrame))
        method = spec.name
        for role in spec.inputs:
            if role.kind in NODE_CLASSES:
                self._add(inputs, role.name, role.help, self._nodeSelector(role),
                          lambda parameters, name=role.name: parameters.methodInput(method, name),
                          lambda parameters, node, name=role.name: parameters.setMethodInput(method, name, node))
            elif role.kind == "phenotype":
                self._addPath(inputs, role.name, role.help, "" if role.required else "optional", chooseFile)
        for setting in method_tasks.settings(spec):
            self._add(advanced if setting.sampling else inputs, setting.name, setting.help, self._editor(setting),
                      lambda parameters, setting=setting: method_tasks.shown_value(
                          setting, parameters.methodText(method, setting.name)),
                      lambda parameters, value, name=setting.name: parameters.setMethodValue(method, name, value),
                      ownLabel=setting.editor == "check")
        for role in spec.checkpoints:
            self._addPath(advanced, role.name, role.help, f"shipped demo model ({role.shipped})", chooseFolder)

    def setVisible(self, visible: bool) -> None:
        for page in self.pages:
            page.visible = visible

    def updateFromParameters(self, parameters: CMRSynthesisParameterNode) -> None:
        """Show the parameter node's values; DDIM steps and eta are editable with the ddim sampler only."""
        self._updating = True
        try:
            for update in self._updaters:
                update(parameters)
        finally:
            self._updating = False
        sampler = next((setting for setting in method_tasks.settings(self.spec) if setting.name == "sampler"), None)
        if sampler is not None:
            text = parameters.methodText(self.spec.name, "sampler")
            ddim = method_tasks.setting_value(sampler, text, strict=False) == "ddim"
            for name in ("ddim_steps", "ddim_eta"):
                if name in self.widgets:
                    self.widgets[name].enabled = ddim

    def _addPage(self, frame):
        page = qt.QWidget()
        form = qt.QFormLayout(page)
        form.setContentsMargins(0, 0, 0, 0)
        frame.layout().addWidget(page)
        self.pages.append(page)
        return form

    def _add(self, form, name: str, help: str, editor: tuple, load: Callable, store: Callable, row=None,
             ownLabel: bool = False) -> None:
        """Add an editor (widget, its change signal, read(), show(value)) as the row `name` of `form` (`row`: a widget
        holding it; ownLabel: a check box, labelled by itself): the user's edits go to the parameter node with
        store(parameters, value), and updateFromParameters shows load(parameters)."""
        widget, signal, read, show = editor
        widget.toolTip = help

        def keep(*args) -> None:
            parameters = self._parameterNode()
            if parameters is not None and not self._updating:
                store(parameters, read())

        widget.connect(signal, keep)
        if ownLabel:
            form.addRow(row or widget)
        else:
            form.addRow(f"{method_tasks.display_name(name)}:", row or widget)
        self.widgets[name] = widget

        def update(parameters) -> None:
            value = load(parameters)
            if read() != value:
                show(value)

        self._updaters.append(update)

    @staticmethod
    def _nodeSelector(role) -> tuple:
        selector = slicer.qMRMLNodeComboBox()
        selector.nodeTypes = list(NODE_CLASSES[role.kind])
        selector.showChildNodeTypes = role.kind == "mask"  # an image role takes no labelmap
        selector.noneEnabled = not role.required
        selector.noneDisplay = "(none)"
        selector.addEnabled = selector.removeEnabled = False
        selector.setMRMLScene(slicer.mrmlScene)
        return selector, "currentNodeChanged(vtkMRMLNode*)", selector.currentNode, selector.setCurrentNode

    @staticmethod
    def _editor(setting: method_tasks.Setting) -> tuple:
        """The editor of a setting, of the kind method_tasks chose: (widget, change signal, read(), show(value))."""
        if setting.editor == "check":
            widget = qt.QCheckBox(method_tasks.display_name(setting.name))
            return widget, "toggled(bool)", lambda: widget.checked, lambda value: setattr(widget, "checked", value)
        if setting.editor == "choice":
            items = setting.items
            widget = qt.QComboBox()
            for item in items:
                widget.addItem("(default)" if item is None else str(item))
            return (widget, "currentIndexChanged(int)", lambda: items[widget.currentIndex],
                    lambda value: setattr(widget, "currentIndex", items.index(value) if value in items else 0))
        if setting.editor == "number":
            widget = qt.QSpinBox() if setting.type is int else qt.QDoubleSpinBox()
            widget.setRange(*setting.spin_range)
            if setting.type is float:
                widget.decimals = 3
                low, high = setting.spin_range
                widget.singleStep = min(1.0, (high - low) / 10)
            signal = "valueChanged(int)" if setting.type is int else "valueChanged(double)"
            return widget, signal, lambda: widget.value, lambda value: setattr(widget, "value", value)
        widget = qt.QLineEdit()
        widget.placeholderText = "default" if setting.default is None else method_tasks.value_text(setting.default)
        return widget, "textChanged(QString)", lambda: widget.text, lambda value: setattr(widget, "text", value)

    def _addPath(self, form, name: str, help: str, placeholder: str, choose: Callable) -> None:
        """A line edit with a browse button for a file or folder of method setting `name`."""
        method = self.spec.name
        edit, button, row = qt.QLineEdit(), qt.QToolButton(), qt.QWidget()
        edit.placeholderText = placeholder
        button.text, button.toolTip = "...", f"Choose the {help}."
        box = qt.QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(edit)
        box.addWidget(button)

        def browse() -> None:
            chosen, parameters = choose(help[:1].upper() + help[1:], edit.text), self._parameterNode()
            if chosen and parameters is not None:
                parameters.setMethodValue(method, name, chosen)

        button.connect("clicked()", browse)
        self._add(form, name, help, (edit, "textChanged(QString)", lambda: edit.text,
                                     lambda value: setattr(edit, "text", value)),
                  lambda parameters: parameters.methodText(method, name) or "",
                  lambda parameters, value: parameters.setMethodValue(method, name, value), row=row)


# ---- the task table ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaskRow:
    """One task of the Task box.

    key: kept in the parameter node (`task`); label: shown in the Task box; help: its tooltip; widgets: the names of
    the panel's fixed widgets it shows (every other one that some task shows is hidden); missing(parameters): what
    Apply still waits for, as a sentence, empty when it can run; command(parameters, workdir): (sub-command, options)
    of its `cmrsynth` command line, its inputs written into workdir; importer(run, result, outcome): brings the
    results in as nodes; reference(parameters): the node the results lie over or play with (None: shown alone);
    sourceName(parameters): what the result nodes are named after; inputs(parameters): the input nodes by role,
    kept for the importer; inputLabel: (label, tooltip) of the shared input-volume selector; outputLabel: the label
    of the latest-result selector. method: the declaration a method task is made from; unavailable: why a method
    module cannot be imported yet (its task then only offers to install the Python packages).
    """

    key: str
    label: str
    widgets: tuple
    missing: Callable
    command: Optional[Callable] = None
    importer: Optional[Callable] = None
    reference: Callable = lambda parameters: None
    sourceName: Callable = lambda parameters: ""
    inputs: Callable = lambda parameters: {}
    help: str = ""
    inputLabel: Optional[tuple] = None
    outputLabel: str = ""
    method: Optional[MethodSpec] = None
    unavailable: str = ""


def taskTable() -> list:
    """The Task box: a task per method of the registry (in its order), one per method module that cannot be imported
    yet (PyTorch missing: Apply offers the installation), then the analysis tasks. A Slicer too old for the library
    lists no methods (their modules need a newer Python; the panel says so)."""
    tooOld = bool(dependencies.python_too_old())
    specs = {} if tooOld else method_specs(strict=False)
    rows = [methodTask(spec) for spec in specs.values()]
    for module, reason in ({} if tooOld else unavailable_methods()).items():
        if module not in specs:
            label = f"{module.replace('_', ' ').capitalize()} (not installed)"
            rows.append(TaskRow(module, label, (), lambda parameters: "", help=f"{label}: it {reason}.",
                                unavailable=f"This method {reason}: Apply installs the Python packages."))
    rows += analysisTasks()
    keys = [row.key for row in rows]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"two tasks are named {', '.join(repeated)}")
    return rows


def analysisTasks() -> list:
    """The hand-written tasks: they run the library's analysis commands (t1map, ecv, aha, strain)."""
    return [
        TaskRow("t1map", "T1 map (MOLLI / ShMOLLI)",
                INPUT_VOLUME + MOLLI + ("fitMaskLabel", "fitMaskSelector", "advancedCollapsibleButton",
                                        "t1SchemeLabel", "t1SchemeComboBox") + OUTPUTS,
                lambda parameters: analysis_tasks.t1map_missing(
                    parameters.molliChoice(), fit_mask=parameters.fitMaskNode, show_over=parameters.inputVolume),
                _t1MapCommand, _importT1Maps, reference=lambda parameters: parameters.inputVolume,
                sourceName=_molliName, help="T1 map fitted voxel by voxel from MOLLI / ShMOLLI source images",
                inputLabel=("Show over:", ("Optional: a volume on the source images' grid (e.g. the loaded series) to "
                                           "show the T1 map over; with none, or on another grid, the T1 map is shown "
                                           "alone. With a DICOM folder, a fit mask is taken on this volume's grid.")),
                outputLabel="T1 map:"),
        TaskRow("ecv", "ECV", INPUT_VOLUME + ("postVolumeLabel", "postVolumeSelector", "haematocritLabel",
                                              "haematocritSpinBox", "resamplePostCheckBox") + MASKS + OUTPUTS,
                lambda parameters: analysis_tasks.ecv_missing(
                    native=parameters.inputVolume, post=parameters.postVolume, blood=parameters.bloodNode),
                _ecvCommand, _importEcv, reference=lambda parameters: parameters.inputVolume,
                sourceName=_inputVolumeName, help="Extracellular volume (%) from native and post-contrast T1 maps",
                inputLabel=("Native T1 map:", ("Native (pre-contrast) T1 map in ms: the ECV map is made on its grid "
                                               "and shown over it. It is read, never modified.")),
                outputLabel="ECV map:"),
        TaskRow("aha", "AHA 16 segments", INPUT_VOLUME + MASKS + ANCHORS + ("quantityLabel", "quantityComboBox",
                                                                           "allowMissingCheckBox"),
                lambda parameters: analysis_tasks.aha_missing(
                    values=parameters.inputVolume, myocardium=parameters.myocardiumNode, rv=parameters.rvNode,
                    points=parameters.insertionPoints),
                _ahaCommand, _importAha, reference=lambda parameters: parameters.inputVolume,
                sourceName=_inputVolumeName, help="The LV myocardium in the 16 AHA segments: table and bullseye",
                inputLabel=("Map:", ("Map to report per segment (T1 in ms or ECV in %), e.g. a result of the T1 map "
                                     "or ECV task; the masks are taken on its grid. It is read, never modified."))),
        TaskRow("strain", "Cine strain", CINE + MASKS + ANCHORS + ("edFrameLabel", "edFrameSpinBox", "esFrameLabel",
                                                                   "esFrameSpinBox"),
                _strainMissing, _strainCommand, _importStrain, reference=lambda parameters: parameters.cineSequence,
                sourceName=lambda parameters: parameters.cineSequence.GetName(),
                help="Myocardial strain of a cine: maps, curves, peaks per AHA segment and bullseye"),
    ]


def methodTask(spec: MethodSpec) -> TaskRow:
    """The task of a method, from its declaration alone: its panel (MethodPanel, the cine or MOLLI widgets for such
    inputs, the latest-result selector when its main result is a volume), what Apply waits for, its generated
    `cmrsynth` command line and the import of its outputs by kind (see method_tasks)."""
    kinds = {role.kind for role in spec.inputs}
    resultLabel = method_tasks.latest_result_label(spec)
    widgets = METHOD + (CINE if "cine" in kinds else ()) + (MOLLI if "molli" in kinds else ()) + (
        OUTPUTS if resultLabel else ())
    return TaskRow(
        spec.name, spec.title, widgets,
        missing=lambda parameters: method_tasks.missing_input(
            spec, _methodInputs(spec, parameters), parameters.methodTexts(spec), parameters.molliChoice()),
        command=lambda parameters, workdir: _methodCommand(spec, parameters, workdir),
        importer=lambda run, result, outcome: _importMethodResults(spec, run, result, outcome),
        reference=lambda parameters: _gridInput(spec, _methodInputs(spec, parameters)),
        sourceName=lambda parameters: _inputName(spec, parameters, spec.main_output.grid_input(
            _methodInputs(spec, parameters))),
        inputs=lambda parameters: _methodInputs(spec, parameters),
        help=f"{spec.help}. Method: {spec.paper}.", method=spec, outputLabel=resultLabel)


@dataclasses.dataclass
class _Run:
    """A task in progress: its row, command, temporary folder and where its results go. referenceNode: the volume the
    results lie over (none for a T1 map shown alone), or the cine sequence they play with; sourceName: what the result
    nodes are named after; inputs: a method's input nodes by role, as they were sent."""

    row: TaskRow
    cli: CliProcess
    workdir: Path
    parameters: CMRSynthesisParameterNode
    referenceNode: Union[vtkMRMLScalarVolumeNode, vtkMRMLSequenceNode, None]  # noqa: UP007 (read on Python 3.9)
    sourceName: str
    onFinished: Optional[Callable[[Outcome], None]]
    inputs: dict = dataclasses.field(default_factory=dict)


class CMRSynthesisLogic(ScriptedLoadableModuleLogic):
    """Runs one task at a time through the `cmrsynth` command line; reports through callbacks, never widgets.
    `tasks` is the task table (see taskTable)."""

    POLL_INTERVAL_MS = 200

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.tasks = taskTable()
        self._run: Optional[_Run] = None
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)

    def getParameterNode(self) -> CMRSynthesisParameterNode:
        return CMRSynthesisParameterNode(super().getParameterNode())

    def refreshTasks(self) -> None:
        """Build the task table again (after the Python packages a method needs were installed)."""
        importlib.invalidate_caches()
        self.tasks = taskTable()

    def findTask(self, key: str) -> Optional[TaskRow]:
        return next((row for row in self.tasks if row.key == key), None)

    # Dependencies

    def missingDependencies(self) -> list:
        """What this Slicer lacks, as text to show: a new enough Python (Slicer), else every requirement (torch
        and Resources/requirements.txt) that no installed version satisfies."""
        return dependencies.missing(resourcePath("requirements.txt"))

    def installDependencies(self) -> None:
        """torch (missing or too old) through the PyTorch extension's PyTorchUtils, then Resources/requirements.txt
        with pip, under constraints that hold every package Slicer owns at its installed version. Asks the user
        first; raises when declined or failed, and at once when Slicer itself is too old."""
        tooOld = dependencies.python_too_old()
        if tooOld:
            raise CMRSynthesisError(f"CMR Synthesis needs {tooOld}. Install a newer Slicer.")
        torchRequirement = f"torch{dependencies.TORCH_REQUIREMENT}"
        if dependencies.unmet_requirement(torchRequirement):
            try:
                import PyTorchUtils
            except ModuleNotFoundError as error:
                raise CMRSynthesisError("Install the 'PyTorch' extension from the Extensions Manager, restart "
                                        "Slicer, then press Apply again.") from error
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=True, torchVersionRequirement=dependencies.TORCH_REQUIREMENT)
            stillUnmet = dependencies.unmet_requirement(torchRequirement)
            if torch is None or stillUnmet:
                raise CMRSynthesisError(f"PyTorch was not installed: {stillUnmet or torchRequirement} is needed.")
        with tempfile.TemporaryDirectory() as folder:
            constraints = Path(folder) / "constraints.txt"
            constraints.write_text(dependencies.constraints())
            try:
                from slicer import packaging as slicerPackaging  # Slicer >= 5.12
            except ImportError:
                slicerPackaging = None
            if slicerPackaging is not None:
                slicerPackaging.pip_ensure(slicerPackaging.load_requirements(resourcePath("requirements.txt")),
                                           constraints=str(constraints), requester="CMR Synthesis")
            elif slicer.util.confirmOkCancelDisplay("CMR Synthesis will install these Python packages:\n\n" + "\n".join(
                    dependencies.requirement_lines(resourcePath("requirements.txt")))):
                slicer.util.pip_install(["-r", resourcePath("requirements.txt"), "-c", str(constraints)])
            else:
                raise CMRSynthesisError("Installation of the Python packages was declined.")

    # Running

    def isRunning(self) -> bool:
        return self._run is not None

    def missingInput(self, parameters: CMRSynthesisParameterNode) -> str:
        """What the chosen task still needs, as a sentence for the user; empty when it can run."""
        row = self.findTask(parameters.task)
        if row is None:
            return f"Choose a task ('{parameters.task}' is not one here)." if parameters.task else "Choose a task."
        return row.unavailable or row.missing(parameters)

    def process(self, parameters: CMRSynthesisParameterNode, *,
                onProgress: Optional[Callable[[float, str], None]] = None,
                onFinished: Optional[Callable[[Outcome], None]] = None, wait: bool = False) -> Optional[Outcome]:
        """Start the chosen task on the parameters' nodes (never modifying them).

        Without `wait` it returns at once; `onProgress(fraction, message)` and `onFinished(outcome)` are called from
        the GUI event loop. With `wait` (scripts, tests) it blocks and returns the successful Outcome, raising
        CMRSynthesisError with the command's own message on failure and Cancelled when cancelled.
        """
        if self.isRunning():
            raise CMRSynthesisError("A task is already running; cancel it or wait for it to finish.")
        missing = self.missingInput(parameters)
        if missing:
            raise InputError(missing)
        row = self.findTask(parameters.task)
        workdir = Path(tempfile.mkdtemp(prefix="CMRSynthesis-", dir=slicer.app.temporaryPath))
        try:
            subcommand, options = row.command(parameters, workdir)
            command = cli_command(subcommand, options, python=_pythonExecutable())
            cli = CliProcess(command, env=child_environment(), cwd=workdir,
                             on_progress=onProgress, on_log=lambda line: logger.info("cmrsynth: %s", line))
            cli.start()
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        self._run = _Run(row, cli, workdir, parameters, row.reference(parameters), row.sourceName(parameters),
                         onFinished, row.inputs(parameters))
        if not wait:
            self._timer.start()
            return None
        outcome = self._complete(cli.wait())
        if outcome.state is State.CANCELLED:
            raise Cancelled(outcome.message)
        if outcome.state is not State.SUCCEEDED:
            raise CMRSynthesisError(outcome.message)
        return outcome

    def cancel(self, wait: bool = False) -> None:
        """Kill the running command (and all it started); with `wait`, return only once the run has ended."""
        if self._run is None:
            return
        self._run.cli.cancel()
        if wait:
            self._complete(self._run.cli.wait())

    def _poll(self) -> None:
        if self._run is not None and self._run.cli.poll() is not State.RUNNING:
            self._complete(self._run.cli.result)

    def _complete(self, result: Result) -> Outcome:
        """Bring the results in as nodes, remove the temporary folder, report the outcome."""
        run, self._run = self._run, None
        self._timer.stop()
        outcome = Outcome(run.row.label, result.state, result.message, {}, result.log)
        try:
            if result.state is State.SUCCEEDED:
                for node in (run.referenceNode, *run.inputs.values()):
                    if node is not None and node.GetScene() is None:
                        raise InputError(f"The input '{node.GetName()}' was removed while the task ran.")
                run.row.importer(run, result, outcome)
                outcome.message = " ".join(part for part in (outcome.message, remarks(result.summary)) if part)
        except (CMRSynthesisError, OSError, ValueError) as error:  # ValueError: an unreadable JSON table
            outcome.state, outcome.message = State.FAILED, str(error)
        finally:
            shutil.rmtree(run.workdir, ignore_errors=True)
        if run.onFinished is not None:
            run.onFinished(outcome)
        return outcome


# ---- method tasks: made from the declaration (method_tasks) ------------------------------------------------------


def _gridInput(spec: MethodSpec, nodes: dict):
    """The input node the method's main result lies on (the first of its declared grids that is set)."""
    return nodes.get(spec.main_output.grid_input(nodes))


def _methodInputs(spec: MethodSpec, parameters: CMRSynthesisParameterNode) -> dict:
    """The node of each input role as the panel holds it: a volume, labelmap or segmentation node, the cine
    sequence, the MOLLI sequence (None with a DICOM folder); None for a phenotype file or a role not set."""
    nodes = {}
    for role in spec.inputs:
        if role.kind == "cine":
            nodes[role.name] = parameters.cineSequence
        elif role.kind == "molli":
            nodes[role.name] = parameters.molliSequence
        elif role.kind in NODE_CLASSES:
            nodes[role.name] = parameters.methodInput(spec.name, role.name)
        else:
            nodes[role.name] = None
    return nodes


def _inputName(spec: MethodSpec, parameters: CMRSynthesisParameterNode, roleName: str) -> str:
    """What results on the grid of input `roleName` are named after: its node, or the MOLLI folder's name."""
    node = _methodInputs(spec, parameters).get(roleName)
    if node is not None:
        return node.GetName()
    return Path(parameters.molliFolder.strip()).name if parameters.molliFolder.strip() else spec.title


def _methodCommand(spec: MethodSpec, parameters: CMRSynthesisParameterNode, workdir: Path) -> tuple:
    """(command, options) of the method's generated `cmrsynth` sub-command (method_tasks.method_command): each input
    node written into `workdir` by its kind (a mask on the grid of the method's first image input)."""
    nodes, files = _methodInputs(spec, parameters), {}
    for role in spec.inputs:
        node, path = nodes[role.name], method_tasks.input_file(workdir, role)
        if role.kind == "molli":
            files[role.name] = _writeMolli(parameters, path)
        elif node is not None and role.kind == "cine":
            files[role.name] = mrml.write_cine_to_file(node, path, frame_interval_ms=parameters.frameInterval or None)
        elif node is not None and role.kind == "mask":
            grid = nodes[method_tasks.mask_grid_role(spec, nodes)]
            grid = grid.GetNthDataNode(0) if grid.IsA("vtkMRMLSequenceNode") else grid
            files[role.name] = mrml.write_mask_to_file(node, grid, path)
        elif node is not None:
            files[role.name] = mrml.write_node_to_file(node, path)
    return method_tasks.method_command(spec, workdir, files, parameters.methodTexts(spec), device=parameters.device,
                                       frame_interval_ms=parameters.frameInterval,
                                       inversion_times=parameters.molliChoice().inversion_times)


def _importMethodResults(spec: MethodSpec, run: "_Run", result: Result, outcome: Outcome) -> None:
    """The outputs by kind over the inputs they lie on (mrml.add_method_outputs); the main result, when it is one
    volume, becomes the latest result."""
    from CMRSynthesisLib.io import read_volume

    volumes = {name: read_volume(path) for name, path in result.outputs.items()}
    outcome.nodes = mrml.add_method_outputs(slicer.mrmlScene, spec.outputs, volumes, run.inputs, result.summary,
                                            source_name=run.sourceName, opacity=OVERLAY_OPACITY)
    main = outcome.nodes.get(spec.main_output.name)
    if main is not None and method_tasks.latest_result_label(spec):
        run.parameters.outputVolume = main
    summary = result.summary or {}
    rows = spec.table(summary) if spec.table is not None else []
    if rows:
        outcome.nodes["table"] = mrml.add_table_node(slicer.mrmlScene, rows, f"{run.sourceName} {spec.title}")
        pictures = spec.figures(summary) if spec.figures is not None else {}
        for number, (name, png) in enumerate(pictures.items()):
            path = run.workdir / f"figure_{number}.png"  # the temporary folder goes when the task completes
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)
            outcome.nodes[name] = mrml.add_image_node(slicer.mrmlScene, mrml.rgb_from_png(path),
                                                      f"{run.sourceName} {name}")
        outcome.views = (outcome.nodes["table"], *(outcome.nodes[name] for name in list(pictures)[:1]))


# ---- analysis tasks: written by hand (analysis_tasks) ------------------------------------------------------------


def _molliName(parameters: CMRSynthesisParameterNode) -> str:
    """What a T1 map is named after: the MOLLI sequence or DICOM folder."""
    sequence = parameters.molliSequence
    return sequence.GetName() if sequence is not None else Path(parameters.molliFolder.strip()).name


def _inputVolumeName(parameters: CMRSynthesisParameterNode) -> str:
    return parameters.inputVolume.GetName()


def _writeMolli(parameters: CMRSynthesisParameterNode, path: Path) -> Optional[Path]:
    """The MOLLI source images for a command: the DICOM folder as it is (the command reads the vendor tags), or the
    sequence written as a 4D NRRD (t, z, y, x); None for neither."""
    from CMRSynthesisLib.io import write_volume

    if parameters.molliSequence is not None:
        return write_volume(mrml.volume_from_sequence(parameters.molliSequence), path)
    return Path(parameters.molliFolder.strip()) if parameters.molliFolder.strip() else None


def _t1MapCommand(parameters: CMRSynthesisParameterNode, workdir: Path) -> tuple:
    """A fit mask goes onto the source grid: the sequence's, or the 'Show over' volume's."""
    sequence = parameters.molliSequence
    maskGrid = parameters.inputVolume if sequence is None else sequence.GetNthDataNode(0)
    return analysis_tasks.t1map_command(
        workdir, molli=_writeMolli(parameters, workdir / "molli.nrrd"),
        mask=_writeMask(parameters.fitMaskNode, maskGrid, workdir / "mask.nrrd"),
        inversion_times=parameters.molliChoice().inversion_times, scheme=parameters.t1Scheme)


def _importT1Maps(run: "_Run", result: Result, outcome: Outcome) -> None:
    """"<source> T1", "<source> T1 A", ... and the failed-fit labelmap. The T1 map, in its colour map, lies over
    the 'Show over' volume when that is on the source grid; otherwise it is shown alone."""
    from CMRSynthesisLib.io import read_volume

    scene = slicer.mrmlScene
    volumes = {name: read_volume(path) for name, path in result.outputs.items()}
    over = run.referenceNode
    if over is not None and not mrml.volume_from_node(over).same_geometry(volumes["t1"]):
        over = None
    nodes = {name: mrml.add_volume_node(scene, volume, f"{run.sourceName} {T1_RESULT_NAMES.get(name, name)}",
                                        labelmap=name == "failed", reference_node=over)
             for name, volume in volumes.items()}
    t1 = nodes["t1"]
    mrml.show_quantity(scene, t1, "t1_native")
    if over is not None:
        mrml.show_overlay(scene, over, t1, OVERLAY_OPACITY)
    else:
        mrml.show_overlay(scene, t1, None)
    run.parameters.outputVolume = t1
    outcome.nodes = nodes


def _ecvCommand(parameters: CMRSynthesisParameterNode, workdir: Path) -> tuple:
    """Both maps as they are; the masks on the native map's grid."""
    native = parameters.inputVolume
    return analysis_tasks.ecv_command(
        workdir, native=mrml.write_node_to_file(native, workdir / "native.nrrd"),
        post=mrml.write_node_to_file(parameters.postVolume, workdir / "post.nrrd"),
        blood=_writeMask(parameters.bloodNode, native, workdir / "blood.nrrd"),
        myocardium=_writeMask(parameters.myocardiumNode, native, workdir / "myocardium.nrrd"),
        haematocrit=parameters.haematocrit, resample=parameters.resamplePost)


def _importEcv(run: "_Run", result: Result, outcome: Outcome) -> None:
    """"<native> ECV" in its colour map over the native T1 map."""
    from CMRSynthesisLib.io import read_volume

    scene, native = slicer.mrmlScene, run.referenceNode
    ecv = mrml.add_result_nodes(scene, {"ECV": read_volume(result.outputs["ecv"])}, native)["ECV"]
    mrml.show_quantity(scene, ecv, "ecv")
    mrml.show_overlay(scene, native, ecv, OVERLAY_OPACITY)
    run.parameters.outputVolume = ecv
    outcome.nodes = {"ecv": ecv}


def _ahaCommand(parameters: CMRSynthesisParameterNode, workdir: Path) -> tuple:
    """The masks on the map's grid; placed insertion points in RAS in the map's own frame."""
    values = parameters.inputVolume
    return analysis_tasks.aha_command(
        workdir, values=mrml.write_node_to_file(values, workdir / "map.nrrd"),
        myocardium=_writeMask(parameters.myocardiumNode, values, workdir / "myocardium.nrrd"),
        blood=_writeMask(parameters.bloodNode, values, workdir / "blood.nrrd"),
        rv=_writeMask(parameters.rvNode, values, workdir / "rv.nrrd"),
        points=_insertionPoints(parameters.insertionPoints, values), quantity=parameters.quantity.value,
        allow_missing=parameters.allowMissing)


def _importAha(run: "_Run", result: Result, outcome: Outcome) -> None:
    """The 16 named AHA segments as a segmentation over the map, the per-segment values as a table node and the
    bullseye picture as an image node, laid out in a table view; the CSV / JSON table and the bullseye PNG are
    copied to a kept folder."""
    from CMRSynthesisLib.analysis.aha import AHA_SEGMENTS
    from CMRSynthesisLib.io import read_volume

    scene, values = slicer.mrmlScene, run.referenceNode
    name = values.GetName()
    labels = read_volume(result.outputs["segments"])
    mrml.volume_from_node(values).require_same_geometry(labels, f"the AHA segments and the map '{name}'")
    table = json.loads(Path(result.outputs["json"]).read_text(encoding="utf-8"))
    quantity = Quantity(table["quantity"]).label()
    outcome.nodes = {
        "segments": mrml.add_segments_node(scene, labels, AHA_SEGMENTS, f"{name} AHA segments",
                                           reference_node=values),
        "table": mrml.add_table_node(scene, table["segments"], f"{name} AHA {quantity}"),
        "bullseye": mrml.add_image_node(scene, mrml.rgb_from_png(result.outputs["bullseye"]),
                                        f"{name} AHA bullseye"),
    }
    mrml.show_overlay(scene, values, None)
    outcome.views = (outcome.nodes["table"], outcome.nodes["bullseye"])
    outcome.folder, outcome.message = _keepFiles([result.outputs[key] for key in ("csv", "json", "bullseye")],
                                                 f"{name} AHA {table['quantity']}",
                                                 "Table (CSV, JSON) and bullseye (PNG)")


def _strainMissing(parameters: CMRSynthesisParameterNode) -> str:
    cine = parameters.cineSequence
    return analysis_tasks.strain_missing(
        None if cine is None else cine.GetName(), 0 if cine is None else cine.GetNumberOfDataNodes(),
        rv=parameters.rvNode, points=parameters.insertionPoints, ed=parameters.edFrame, es=parameters.esFrame)


def _strainCommand(parameters: CMRSynthesisParameterNode, workdir: Path) -> tuple:
    """The cine as a 4D file with its trigger times; the masks (at ED) on the cine's grid; placed insertion points
    in RAS in the frame of the cine's proxy volume."""
    sequence = parameters.cineSequence
    grid = sequence.GetNthDataNode(0)
    browser = mrml.sequence_browser(slicer.mrmlScene, sequence, create=False)
    shown = browser.GetProxyNode(sequence) if browser is not None else grid
    return analysis_tasks.strain_command(
        workdir, cine=mrml.write_cine_to_file(sequence, workdir / "cine.nii",
                                              frame_interval_ms=parameters.frameInterval or None),
        myocardium=_writeMask(parameters.myocardiumNode, grid, workdir / "myocardium.nrrd"),
        blood=_writeMask(parameters.bloodNode, grid, workdir / "blood.nrrd"),
        rv=_writeMask(parameters.rvNode, grid, workdir / "rv.nrrd"),
        points=_insertionPoints(parameters.insertionPoints, shown), ed=parameters.edFrame, es=parameters.esFrame)


def _importStrain(run: "_Run", result: Result, outcome: Outcome) -> None:
    """The circumferential strain map (in %) as a sequence that plays with the cine, over it, in its colour map
    and with no colour where it has no value; the global and per-segment curves as a table and a plot; the peak
    strains per segment as a table; the bullseye picture (with segments only); the tables and the chart laid out in
    views. strain.json and the PNGs are copied to a kept folder."""
    from CMRSynthesisLib.io import read_volume

    scene, cine, name = slicer.mrmlScene, run.referenceNode, run.sourceName
    summary = json.loads(Path(result.outputs["json"]).read_text(encoding="utf-8"))
    fractions = read_volume(result.outputs["circumferential"])
    sequence, shown = mrml.add_synchronized_sequence(scene, fractions.with_array(100.0 * fractions.array),
                                                     f"{name} circumferential strain (%)", cine)
    mrml.show_quantity(scene, shown, STRAIN_DISPLAY)
    mrml.hide_nan_voxels(shown)
    browser = mrml.sequence_browser(scene, cine)
    mrml.show_overlay(scene, browser.GetProxyNode(cine), shown, OVERLAY_OPACITY)
    rows = analysis_tasks.strain_curve_rows(summary)
    curves = mrml.add_table_node(scene, rows, f"{name} strain curves")
    x, strains = analysis_tasks.strain_chart_columns(rows)
    outcome.nodes = {
        "circumferential": sequence,
        "curves": curves,
        "chart": mrml.add_plot_chart(scene, curves, x, strains, f"{name} strain", x_title=x,
                                     y_title="Green-Lagrange strain (%)",
                                     emphasised=analysis_tasks.GLOBAL_STRAIN_CURVES),
        "peaks": mrml.add_table_node(scene, analysis_tasks.strain_peak_rows(summary), f"{name} peak strain"),
    }
    if "bullseye" in result.outputs:
        outcome.nodes["bullseye"] = mrml.add_image_node(scene, mrml.rgb_from_png(result.outputs["bullseye"]),
                                                        f"{name} strain bullseye")
    outcome.views = (outcome.nodes["peaks"], outcome.nodes.get("bullseye"), outcome.nodes["chart"])
    kept = [result.outputs[key] for key in ("json", "curves", "bullseye") if key in result.outputs]
    outcome.folder, where = _keepFiles(kept, f"{name} strain", "strain.json and the figures (PNG)")
    outcome.message = f"{analysis_tasks.strain_sentence(summary)} {where}"


# ---- helpers -----------------------------------------------------------------------------------------------------


def _insertionPoints(points, reference):
    """The two placed RV insertion points in RAS in `reference`'s frame, as rows; None for none."""
    return None if points is None else mrml.control_points_ras(points, reference, count=2)


def _writeMask(node, referenceNode: vtkMRMLScalarVolumeNode, path: Path) -> Optional[Path]:
    """The mask of a segmentation or labelmap node on the reference volume's grid, written to `path`; None for none."""
    return None if node is None else mrml.write_mask_to_file(node, referenceNode, path)


def _keepFiles(paths: list, title: str, what: str) -> tuple:
    """Copy result files into a new folder under Slicer's default scene folder / KEPT_FOLDER (see
    analysis_tasks.keep_files): (folder or None, a sentence saying where `what` was saved, or why not)."""
    return analysis_tasks.keep_files(paths, Path(slicer.app.defaultScenePath) / KEPT_FOLDER, title, what)


def _pythonExecutable() -> str:
    """Slicer's own Python launcher, which gives the child Slicer's libraries and site-packages."""
    executable = shutil.which("PythonSlicer")
    if executable is None:
        raise CMRSynthesisError("PythonSlicer was not found on Slicer's PATH; reinstall Slicer.")
    return executable


class CMRSynthesisTest(ScriptedLoadableModuleTest):
    """Slicer self-test: the scene checks the pytest suite runs on slicer-core, one small real enhancement, a T1 map
    of phantom MOLLI images written as DICOM, an AHA report of a phantom and the strain of a phantom cine. It uses
    only what the installed extension has (the library and its phantom): Testing/Data is not packaged."""

    def setUp(self) -> None:
        missing = CMRSynthesisLogic().missingDependencies()
        if missing:
            self.skipTest("missing: " + ", ".join(missing))
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_scene_checks()
        self.setUp()
        self.test_scar_enhancement_of_a_phantom()
        self.setUp()
        self.test_t1_map_of_a_phantom_molli()
        self.setUp()
        self.test_aha_segments_of_a_phantom()
        self.setUp()
        self.test_cine_strain_of_a_phantom()

    def test_scene_checks(self) -> None:
        from CMRSynthesisLib import mrml_checks

        for check in mrml_checks.CHECKS:
            self.delayDisplay(check.__doc__.splitlines()[0])
            check(slicer.mrmlScene)
            slicer.mrmlScene.Clear()

    def test_scar_enhancement_of_a_phantom(self) -> None:
        """A held-out phantom LGE with its heart ROI: DDIM from t0 = 50 with 2 samples, on the CPU."""
        import numpy as np

        from CMRSynthesisLib import phantom

        study = phantom.lge_study(phantom.subject_ids("test", 1)[0])
        lge = mrml.add_volume_node(slicer.mrmlScene, study["lge"], "LGE")
        roiMask = study["lge"].with_array(study["masks"]["heart_roi"].astype(np.uint8))
        roi = mrml.add_volume_node(slicer.mrmlScene, roiMask, "Heart", labelmap=True)
        before = slicer.util.arrayFromVolume(lge).copy()
        logic = CMRSynthesisLogic()
        parameters = logic.getParameterNode()
        method = "scar_enhancement"
        parameters.task, parameters.device = method, "cpu"
        parameters.setMethodInput(method, "lge", lge)
        parameters.setMethodInput(method, "roi", roi)
        for name, value in (("steps", 50), ("samples", 2), ("sampler", "ddim"), ("ddim_steps", 10)):
            parameters.setMethodValue(method, name, value)
        outcome = logic.process(parameters, onProgress=lambda fraction, message: self.delayDisplay(message, 1),
                                wait=True)
        enhanced = outcome.nodes["enhanced"]
        self.assertEqual(enhanced.GetName(), "LGE enhanced")
        self.assertIs(parameters.outputVolume, enhanced)
        result = mrml.volume_from_node(enhanced)
        self.assertTrue(result.same_geometry(mrml.volume_from_node(lge)))
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(lge), before)
        inside = study["masks"]["heart_roi"].astype(bool)
        self.assertFalse(np.allclose(result.array[inside], before[inside]), "nothing changed inside the ROI")
        np.testing.assert_array_equal(result.array[~inside], before[~inside])
        self.delayDisplay("Scar enhancement test passed")

    def test_t1_map_of_a_phantom_molli(self) -> None:
        """Native MOLLI 5(3)3 source images of a phantom, written as a DICOM folder (the extension ships no scanner
        data) and fitted inside the LV blood pool and myocardium: the T1 map lies on the source grid, over the
        source, and its median in each tissue is the phantom's T1 within 2 %."""
        import numpy as np

        from CMRSynthesisLib import phantom
        from CMRSynthesisLib.io.t1_series import read_t1_series

        with tempfile.TemporaryDirectory(dir=slicer.app.temporaryPath) as temporary:
            folder = Path(temporary) / "MOLLI native"
            truth = writePhantomMolliDicom(folder, phantom.subject_ids("test", 1)[0])
            source = read_t1_series(folder).reference()
            tissues = truth["masks"]["blood"] | truth["masks"]["myocardium"]
            sourceNode = mrml.add_volume_node(slicer.mrmlScene, source, "MOLLI native")
            maskNode = mrml.add_volume_node(slicer.mrmlScene, source.with_array(tissues.astype(np.uint8)), "LV",
                                            labelmap=True)
            logic = CMRSynthesisLogic()
            parameters = logic.getParameterNode()
            parameters.task, parameters.molliFolder = "t1map", str(folder)
            parameters.inputVolume, parameters.fitMaskNode = sourceNode, maskNode
            outcome = logic.process(parameters, onProgress=lambda fraction, message: self.delayDisplay(message, 1),
                                    wait=True)
        t1 = outcome.nodes["t1"]
        self.assertEqual(t1.GetName(), "MOLLI native T1")
        self.assertIs(parameters.outputVolume, t1)
        result = mrml.volume_from_node(t1)
        self.assertTrue(result.same_geometry(source))
        for tissue, mask in truth["masks"].items():
            median = float(np.median(result.array[mask]))
            self.assertLess(abs(median - truth["t1_ms"][tissue]) / truth["t1_ms"][tissue], 0.02,
                            f"{tissue}: median T1 {median:.1f} ms, phantom {truth['t1_ms'][tissue]:.1f} ms")
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(sourceNode), source.array)
        self.delayDisplay("T1 map test passed")

    def test_aha_segments_of_a_phantom(self) -> None:
        """A phantom's fitted native T1 map with its myocardium, blood-pool and RV masks: 16 named segments, a
        16-row table, the bullseye picture and the kept CSV, JSON and PNG files."""
        import numpy as np

        from CMRSynthesisLib import phantom
        from CMRSynthesisLib.analysis.aha import AHA_SEGMENTS
        from CMRSynthesisLib.analysis.t1mapping import t1_maps

        subject = phantom.make_subject(phantom.subject_ids("test", 1)[0])
        labels = phantom.render_labels(subject)
        masks = phantom.tissue_masks(labels)
        heart = labels.with_array(masks["heart_roi"].astype(np.uint8))
        t1 = t1_maps(phantom.render_molli(subject, labels), heart)["t1"]
        mapNode = mrml.add_volume_node(slicer.mrmlScene, t1, "Phantom T1")
        before = slicer.util.arrayFromVolume(mapNode).copy()

        def labelmap(mask, name: str):
            return mrml.add_volume_node(slicer.mrmlScene, labels.with_array(mask.astype(np.uint8)), name,
                                        labelmap=True)

        logic = CMRSynthesisLogic()
        parameters = logic.getParameterNode()
        parameters.task, parameters.inputVolume, parameters.quantity = "aha", mapNode, Quantity.T1_NATIVE
        parameters.myocardiumNode = labelmap(masks["myocardium"] | masks["scar"], "Myocardium")
        parameters.bloodNode = labelmap(masks["blood"], "Blood pool")
        parameters.rvNode = labelmap(masks["rv"], "RV")
        outcome = logic.process(parameters, wait=True)
        segmentation = outcome.nodes["segments"].GetSegmentation()
        names = [segmentation.GetNthSegment(index).GetName() for index in range(segmentation.GetNumberOfSegments())]
        self.assertEqual(names, list(AHA_SEGMENTS))
        self.assertEqual(outcome.nodes["table"].GetNumberOfRows(), 16)
        self.assertEqual(outcome.nodes["bullseye"].GetImageData().GetNumberOfScalarComponents(), 3)
        self.assertIsNotNone(outcome.folder, outcome.message)
        kept = sorted(path.name for path in outcome.folder.iterdir())
        shutil.rmtree(outcome.folder)
        self.assertEqual(kept, ["aha_t1_native.csv", "aha_t1_native.json", "aha_t1_native_bullseye.png"])
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(mapNode), before)
        self.delayDisplay("AHA test passed")

    def test_cine_strain_of_a_phantom(self) -> None:
        """Two mid-ventricular slices of a phantom cine with its ED myocardium and RV masks: the circumferential
        strain plays with the cine in its browser, the curves come back as a table and a plot, the peaks as a
        17-row table (global and AHA segments) with the bullseye; the global peak circumferential strain is
        shortening (negative), the radial one thickening (positive); strain.json and the figures are kept."""
        from CMRSynthesisLib import phantom

        inputs = phantomCineStrainInputs(phantom.subject_ids("test", 1)[0])
        scene = slicer.mrmlScene
        cine = mrml.add_cine_sequence_node(scene, inputs["cine"], "Phantom cine")
        logic = CMRSynthesisLogic()
        parameters = logic.getParameterNode()
        parameters.task, parameters.cineSequence = "strain", cine
        parameters.myocardiumNode = mrml.add_volume_node(scene, inputs["myocardium"], "Myocardium ED", labelmap=True)
        parameters.rvNode = mrml.add_volume_node(scene, inputs["rv"], "RV ED", labelmap=True)
        outcome = logic.process(parameters, onProgress=lambda fraction, message: self.delayDisplay(message, 1),
                                wait=True)
        strain = outcome.nodes["circumferential"]
        self.assertEqual(strain.GetNumberOfDataNodes(), cine.GetNumberOfDataNodes())
        self.assertTrue(mrml.sequence_browser(scene, cine, create=False).IsSynchronizedSequenceNode(strain.GetID()))
        self.assertEqual(outcome.nodes["curves"].GetNumberOfRows(), cine.GetNumberOfDataNodes())
        self.assertGreaterEqual(outcome.nodes["chart"].GetNumberOfPlotSeriesNodes(), 2)
        peaks = outcome.nodes["peaks"]
        self.assertEqual(peaks.GetNumberOfRows(), 17)
        self.assertLess(float(peaks.GetCellText(0, peaks.GetColumnIndex("peak circumferential (%)"))), 0.0)
        self.assertGreater(float(peaks.GetCellText(0, peaks.GetColumnIndex("peak radial (%)"))), 0.0)
        self.assertEqual(outcome.nodes["bullseye"].GetImageData().GetNumberOfScalarComponents(), 3)
        self.assertIsNotNone(outcome.folder, outcome.message)
        kept = sorted(path.name for path in outcome.folder.iterdir())
        shutil.rmtree(outcome.folder)
        self.assertEqual(kept, ["strain.json", "strain_bullseye.png", "strain_curves.png"])
        self.delayDisplay("Cine strain test passed")


def writePhantomMolliDicom(folder: Path, subjectId: int, slices: int = 3) -> dict:
    """Write native MOLLI 5(3)3 source images of phantom subject `subjectId` into `folder` as one DICOM series: the
    `slices` middle slices of its LV blood pool, one file per image, with InversionTime, InstanceNumber in acquisition
    order and the phantom's geometry. The phantom is an ideal MOLLI, so a correct fit returns its tissue T1.

    Returns {"masks": {"blood", "myocardium"}: (z, y, x) bool on the written slices, "t1_ms": {same keys}: the true
    native T1}. Needs only numpy, pydicom and the library (the self-test's data; a headless test runs it too).
    """
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    from CMRSynthesisLib import phantom

    subject = phantom.make_subject(subjectId)
    labels = phantom.render_labels(subject)
    masks = phantom.tissue_masks(labels)
    series = phantom.render_molli(subject, labels)
    withBlood = np.flatnonzero(masks["blood"].any(axis=(1, 2)))
    first = int(withBlood[len(withBlood) // 2]) - slices // 2
    kept = range(first, first + slices)
    direction = np.reshape(labels.direction, (3, 3))
    seriesUid = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    for z, index in enumerate(kept):
        position = labels.index_to_physical() @ np.array([0.0, 0.0, index, 1.0])
        for image in range(series.images.array.shape[0]):
            acquisition = int(series.acquisition_rank[image, index])
            path = folder / f"IM_{z:02d}_{acquisition + 1:02d}.dcm"
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            # Written the same way by pydicom 2.4 (Slicer 5.10) and 3: preamble, file meta, explicit VR little endian.
            dataset = FileDataset(path, {}, preamble=b"\0" * 128, file_meta=meta, is_implicit_VR=False,
                                  is_little_endian=True)
            dataset.SOPClassUID, dataset.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
            dataset.Modality, dataset.SeriesDescription, dataset.SeriesInstanceUID = "MR", "phantom MOLLI", seriesUid
            dataset.ImageType = ["ORIGINAL", "PRIMARY", "M"]
            dataset.InstanceNumber = z * 100 + acquisition + 1
            dataset.InversionTime = float(series.inversion_times_ms[image, index])
            dataset.ImagePositionPatient = [float(value) for value in position[:3]]
            dataset.ImageOrientationPatient = [float(value) for value in direction[:, :2].T.ravel()]
            dataset.PixelSpacing = [float(labels.spacing[1]), float(labels.spacing[0])]
            dataset.SliceThickness = float(labels.spacing[2])
            pixels = np.clip(np.rint(series.images.array[image, index]), 0, 65535).astype("<u2")
            dataset.Rows, dataset.Columns = pixels.shape
            dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
            dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
            dataset.PixelData = pixels.tobytes()
            dataset.save_as(path)
    t1 = {"blood": subject.tissues["lv_blood"].t1_native_ms, "myocardium": subject.tissues["lv_myocardium"].t1_native_ms}
    return {"masks": {name: masks[name][first:first + slices] for name in t1}, "t1_ms": t1}


def phantomCineStrainInputs(subjectId: int, slices: int = 2) -> dict:
    """The cine of phantom subject `subjectId` cut to its `slices` middle LV slices (every frame; frame 0 is ED),
    with the ED LV myocardium (scar included) and RV blood pool on that grid.

    Returns {"cine": Volume (t, z, y, x) with trigger_times_ms, "myocardium", "rv": uint8 Volumes (z, y, x)}. Needs
    only numpy and the library (the self-test's data; a headless test runs it too).
    """
    import numpy as np

    from CMRSynthesisLib import phantom
    from CMRSynthesisLib.volume import Volume

    cine, labels = phantom.render_cine(phantom.make_subject(subjectId))
    ed = labels.array[0]
    myocardium = np.isin(ed, [phantom.LABELS["lv_myocardium"], phantom.LABELS["scar"]])
    withMyocardium = np.flatnonzero(myocardium.any(axis=(1, 2)))
    first = int(withMyocardium[len(withMyocardium) // 2]) - slices // 2
    kept = slice(first, first + slices)
    origin = tuple((cine.index_to_physical() @ np.array([0.0, 0.0, first, 1.0]))[:3])

    def cut(array: np.ndarray, metadata: dict) -> Volume:
        return Volume(array, cine.spacing, origin, cine.direction, metadata)

    return {"cine": cut(cine.array[:, kept], {"trigger_times_ms": cine.metadata["trigger_times_ms"]}),
            "myocardium": cut(myocardium[kept].astype(np.uint8), {}),
            "rv": cut((ed[kept] == phantom.LABELS["rv_blood"]).astype(np.uint8), {})}
