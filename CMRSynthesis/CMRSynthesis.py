"""CMR Synthesis: diffusion-model synthesis and enhancement of cardiac MR in 3D Slicer.

The panel binds its widgets to a parameter node. The Logic writes the input nodes to a temporary folder, runs the
same `cmrsynth` command line that CLI users run (with Slicer's Python, out of process, so the GUI stays live and
Cancel can kill it), polls its JSON progress with a QTimer, and brings the results back as new nodes over the input.
Everything that computes lives in CMRSynthesisLib.
"""

# ruff: noqa: UP045
# Annotations here are evaluated on import (the parameter-node wrapper needs real ones), so they are written
# Optional[...], not X | None: Slicer before 5.10 (Python 3.9) then still loads the module and says what it lacks.

import dataclasses
import enum
import importlib.metadata
import logging
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional, Union

import qt
import slicer
import vtk
from packaging.requirements import Requirement
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode
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

from CMRSynthesisLib import mrml  # these need only numpy, vtk and slicer, which Slicer has
from CMRSynthesisLib.errors import Cancelled, CMRSynthesisError, InputError
from CMRSynthesisLib.process import CliProcess, Result, State, child_environment, cli_command

PYTHON_REQUIRED = (3, 11)  # the pinned packages (scikit-image 0.26, matplotlib 3.11) need it: Slicer 5.10 or later
TORCH_REQUIREMENT = ">=2.8"  # MONAI 1.6 needs torch 2.8 or newer
# Packages Slicer ships that Resources/requirements.txt could pull in: pip keeps them at their installed versions.
SLICER_OWNED_PACKAGES = ("torch", "SimpleITK", "numpy", "scipy", "pydicom", "Pillow", "packaging", "requests")
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
        self.parent.helpText = """
Diffusion-model synthesis and enhancement of cardiac MR. <b>Scar enhancement (LGE)</b>: localized diffusion
brightens scar against healthy myocardium inside a heart region of interest and leaves every voxel outside it as it
was; the mean of several samples is returned. Inputs are never modified; results are new volumes over the input.
The shipped demo model is trained on synthetic phantoms only: point to your own checkpoint for real studies.
<br>Needs Slicer 5.10 or later (Python 3.11 or newer) and the PyTorch extension; the other Python packages are
offered for installation on the first Apply.
"""
        self.parent.acknowledgementText = """
Scar enhancement follows M. Hasny, O. B. Demirel, A. Amyar, S. Faghihroohi, R. Nezafat, "Myocardial Scar
Enhancement in LGE Cardiac MRI using Localized Diffusion", MICCAI. Built on MONAI, PyTorch and 3D Slicer.
"""
        self.parent.icon = qt.QIcon(resourcePath("Icons/CMRSynthesis.png"))


class Task(enum.Enum):
    """What the panel computes; the value is the label shown in the Task box."""

    SCAR_ENHANCEMENT = "Scar enhancement (LGE)"

    def label(self) -> str:
        return self.value


FOREGROUND_RESULT = {Task.SCAR_ENHANCEMENT: "enhanced"}  # per task, the result shown over the input
LABELMAP_RESULTS = ("roi",)  # results that are masks


@parameterNodeWrapper
class CMRSynthesisParameterNode:
    """The panel's state, saved with the scene. checkpointPath / segmenterPath empty: the shipped models.
    ddimSteps is used with the ddim sampler only."""

    task: Task
    inputVolume: vtkMRMLScalarVolumeNode
    roiNode: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]  # noqa: UP007 (the wrapper needs Union)
    checkpointPath: str = ""
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    segmenterPath: str = ""
    steps: Annotated[int, WithinRange(1, 999)] = 250
    samples: Annotated[int, WithinRange(1, 20)] = 5
    sampler: Annotated[str, Choice(["ddpm", "ddim"])] = "ddpm"
    ddimSteps: Annotated[int, WithinRange(1, 250)] = 20
    seed: Annotated[int, WithinRange(0, 2_147_483_647)] = 0  # the largest value a QSpinBox holds
    outputVolume: vtkMRMLScalarVolumeNode


@dataclasses.dataclass
class Outcome:
    """How a run ended, as the Logic reports it: nodes are the new result nodes by output name."""

    task: Task
    state: State
    message: str
    nodes: dict
    log: list


class CMRSynthesisWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

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
        self.ui.checkpointBrowseButton.connect("clicked()", lambda: self.onBrowseFolder("checkpointPath", "Enhancer"))
        self.ui.segmenterBrowseButton.connect("clicked()", lambda: self.onBrowseFolder("segmenterPath", "Segmenter"))
        if _pythonTooOld():
            self.ui.statusLabel.text = f"CMR Synthesis needs {_pythonTooOld()}."
        self.initializeParameterNode()

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
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            self._parameterNode.inputVolume = next(
                (node for node in volumes if not node.IsA("vtkMRMLLabelMapVolumeNode")), None)

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
        """Apply needs an input volume; while a task runs it is the Cancel button and the inputs are locked.
        The DDIM step count is editable only with the ddim sampler."""
        running = self.logic.isRunning()
        ready = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.ddimStepsSpinBox.enabled = bool(self._parameterNode and self._parameterNode.sampler == "ddim")
        self.ui.applyButton.text = "Cancel" if running else "Apply"
        self.ui.applyButton.enabled = running or ready
        self.ui.applyButton.toolTip = ("Stop the running task" if running else
                                       "Run the task" if ready else "Choose an input volume first")
        for section in (self.ui.inputsCollapsibleButton, self.ui.advancedCollapsibleButton):
            section.enabled = not running

    def onBrowseFolder(self, parameter: str, model: str) -> None:
        """Let the user pick the checkpoint folder held by the parameter named `parameter` (checkpointPath, ...)."""
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), f"{model} checkpoint folder (model.safetensors + config.json)",
            getattr(self._parameterNode, parameter))
        if folder:
            setattr(self._parameterNode, parameter, folder)

    def onApplyButton(self) -> None:
        if self.logic.isRunning():
            self.logic.cancel()
            self.ui.statusLabel.text = "Cancelling..."
            return
        if not self.ensureDependencies():
            return
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "Starting..."
        try:
            self.logic.process(self._parameterNode, onProgress=self.onProgress, onFinished=self.onFinished)
        except (CMRSynthesisError, OSError) as error:
            self.ui.statusLabel.text = "Could not start."
            slicer.util.errorDisplay(f"{self._parameterNode.task.label()} could not start:\n\n{error}")
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
            self.ui.statusLabel.text = f"Done: {names}."
            slicer.util.resetSliceViews()
        elif outcome.state is State.CANCELLED:
            self.ui.statusLabel.text = "Cancelled."
        else:
            self.ui.statusLabel.text = "Failed."
            slicer.util.errorDisplay(f"{outcome.task.label()} failed:\n\n{outcome.message}",
                                     detailedText="\n".join(outcome.log))


@dataclasses.dataclass
class _Run:
    """A task in progress: its command, temporary folder and where its results go."""

    task: Task
    cli: CliProcess
    workdir: Path
    parameters: CMRSynthesisParameterNode
    inputNode: vtkMRMLScalarVolumeNode
    onFinished: Optional[Callable[[Outcome], None]]


class CMRSynthesisLogic(ScriptedLoadableModuleLogic):
    """Runs one task at a time through the `cmrsynth` command line; reports through callbacks, never widgets."""

    POLL_INTERVAL_MS = 200

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._run: Optional[_Run] = None
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)

    def getParameterNode(self) -> CMRSynthesisParameterNode:
        return CMRSynthesisParameterNode(super().getParameterNode())

    # Dependencies

    def missingDependencies(self) -> list:
        """What this Slicer lacks, as text to show: a new enough Python (Slicer), else every requirement (torch
        and Resources/requirements.txt) that no installed version satisfies."""
        if _pythonTooOld():
            return [_pythonTooOld()]
        requirements = [f"torch{TORCH_REQUIREMENT}"] + _requirementLines()
        return [problem for problem in map(_unmetRequirement, requirements) if problem]

    def installDependencies(self) -> None:
        """torch (missing or too old) through the PyTorch extension's PyTorchUtils, then Resources/requirements.txt
        with pip, under constraints that hold every package Slicer owns at its installed version. Asks the user
        first; raises when declined or failed, and at once when Slicer itself is too old."""
        if _pythonTooOld():
            raise CMRSynthesisError(f"CMR Synthesis needs {_pythonTooOld()}. Install a newer Slicer.")
        torchRequirement = f"torch{TORCH_REQUIREMENT}"
        if _unmetRequirement(torchRequirement):
            try:
                import PyTorchUtils
            except ModuleNotFoundError as error:
                raise CMRSynthesisError("Install the 'PyTorch' extension from the Extensions Manager, restart "
                                        "Slicer, then press Apply again.") from error
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                                  torchVersionRequirement=TORCH_REQUIREMENT)
            stillUnmet = _unmetRequirement(torchRequirement)
            if torch is None or stillUnmet:
                raise CMRSynthesisError(f"PyTorch was not installed: {stillUnmet or torchRequirement} is needed.")
        with tempfile.TemporaryDirectory() as folder:
            constraints = Path(folder) / "constraints.txt"
            constraints.write_text("".join(f"{name}=={version}\n" for name, version in _installedVersions(
                SLICER_OWNED_PACKAGES).items()))
            try:
                from slicer import packaging as slicerPackaging  # Slicer >= 5.12
            except ImportError:
                slicerPackaging = None
            if slicerPackaging is not None:
                slicerPackaging.pip_ensure(slicerPackaging.load_requirements(resourcePath("requirements.txt")),
                                           constraints=str(constraints), requester="CMR Synthesis")
            elif slicer.util.confirmOkCancelDisplay("CMR Synthesis will install these Python packages:\n\n"
                                                    + "\n".join(_requirementLines())):
                slicer.util.pip_install(["-r", resourcePath("requirements.txt"), "-c", str(constraints)])
            else:
                raise CMRSynthesisError("Installation of the Python packages was declined.")

    # Running

    def isRunning(self) -> bool:
        return self._run is not None

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
        if parameters.inputVolume is None:
            raise InputError("Choose an input volume.")
        workdir = Path(tempfile.mkdtemp(prefix="CMRSynthesis-", dir=slicer.app.temporaryPath))
        try:
            subcommand, options = self._commandOptions(parameters, workdir)
            command = cli_command(subcommand, options, python=_pythonExecutable())
            cli = CliProcess(command, env=child_environment(), cwd=workdir, on_progress=onProgress,
                                     on_log=lambda line: logger.info("cmrsynth: %s", line))
            cli.start()
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        self._run = _Run(parameters.task, cli, workdir, parameters, parameters.inputVolume, onFinished)
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

    def _commandOptions(self, parameters: CMRSynthesisParameterNode, workdir: Path) -> tuple:
        """(subcommand, options) of the command line for the chosen task, its inputs written into `workdir`."""
        writers = {Task.SCAR_ENHANCEMENT: self._scarEnhancementOptions}
        return writers[parameters.task](parameters, workdir)

    def _scarEnhancementOptions(self, parameters: CMRSynthesisParameterNode, workdir: Path) -> tuple:
        from CMRSynthesisLib.io import write_volume

        lge = parameters.inputVolume
        roi = parameters.roiNode
        options = {
            "lge": mrml.write_node_to_file(lge, workdir / "lge.nrrd"),
            "roi": None if roi is None else write_volume(mrml.volume_from_roi(roi, lge), workdir / "roi.nrrd"),
            "out": workdir / "enhanced.nrrd",
            "roi_out": workdir / "roi.nrrd" if roi is None else None,  # the ROI the segmentation model found
            "checkpoint": parameters.checkpointPath.strip() or None,
            "segmenter": parameters.segmenterPath.strip() or None,
            "steps": parameters.steps,
            "samples": parameters.samples,
            "sampler": parameters.sampler,
            "ddim_steps": parameters.ddimSteps if parameters.sampler == "ddim" else None,
            "seed": parameters.seed,
            "device": parameters.device,
        }
        return "enhance", options

    def _poll(self) -> None:
        if self._run is not None and self._run.cli.poll() is not State.RUNNING:
            self._complete(self._run.cli.result)

    def _complete(self, result: Result) -> Outcome:
        """Bring the results in as nodes, remove the temporary folder, report the outcome."""
        run, self._run = self._run, None
        self._timer.stop()
        outcome = Outcome(run.task, result.state, result.message, {}, result.log)
        try:
            if result.state is State.SUCCEEDED:
                outcome.nodes = self._importResults(run, result)
        except CMRSynthesisError as error:
            outcome.state, outcome.message = State.FAILED, str(error)
        finally:
            shutil.rmtree(run.workdir, ignore_errors=True)
        if run.onFinished is not None:
            run.onFinished(outcome)
        return outcome

    def _importResults(self, run: _Run, result: Result) -> dict:
        from CMRSynthesisLib.io import read_volume

        if run.inputNode.GetScene() is None:
            raise InputError(f"The input volume '{run.inputNode.GetName()}' was removed while the task ran.")
        scene = run.inputNode.GetScene()
        volumes = {name: read_volume(path) for name, path in result.outputs.items()}
        nodes = mrml.add_result_nodes(scene, volumes, run.inputNode, labelmaps=LABELMAP_RESULTS)
        foreground = nodes[FOREGROUND_RESULT[run.task]]
        mrml.show_overlay(scene, run.inputNode, foreground, 0.5, label_node=nodes.get("roi"))
        run.parameters.outputVolume = foreground
        return nodes


def _requirementLines() -> list:
    lines = Path(resourcePath("requirements.txt")).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _pythonTooOld() -> str:
    """What to install when this Slicer's Python is older than PYTHON_REQUIRED; empty when it is new enough."""
    if sys.version_info >= PYTHON_REQUIRED:
        return ""
    required = ".".join(map(str, PYTHON_REQUIRED))
    return (f"Slicer 5.10 or later (its packages need Python {required} or newer; this Slicer has Python "
            f"{platform.python_version()})")


def _unmetRequirement(requirement: str) -> Optional[str]:
    """`requirement` (a pip requirement line) with the reason, when no installed version satisfies it; else None."""
    parsed = Requirement(requirement)
    try:
        installed = importlib.metadata.version(parsed.name)
    except importlib.metadata.PackageNotFoundError:
        return f"{requirement} (not installed)"
    return None if parsed.specifier.contains(installed, prereleases=True) else f"{requirement} (found {installed})"


def _installedVersions(names) -> dict:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _pythonExecutable() -> str:
    """Slicer's own Python launcher, which gives the child Slicer's libraries and site-packages."""
    executable = shutil.which("PythonSlicer")
    if executable is None:
        raise CMRSynthesisError("PythonSlicer was not found on Slicer's PATH; reinstall Slicer.")
    return executable


class CMRSynthesisTest(ScriptedLoadableModuleTest):
    """Slicer self-test: the scene checks the pytest suite runs on slicer-core, then one small real enhancement."""

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
        parameters.inputVolume, parameters.roiNode = lge, roi
        parameters.steps, parameters.samples, parameters.sampler, parameters.device = 50, 2, "ddim", "cpu"
        parameters.ddimSteps = 10
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
