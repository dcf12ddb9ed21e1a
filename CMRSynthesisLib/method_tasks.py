"""A method's task in the Slicer panel, without Qt or Slicer: what the panel offers and checks for a registered method
and the `cmrsynth` command it runs, all from the method's declaration (`methods.registry.MethodSpec`).

- `settings(spec)`: the settings the task shows (its options, then its sampling settings) with their types,
  defaults, choices, spin-box limits and the editor each takes.
- The panel's parameter node keeps each setting, phenotype file and checkpoint folder as text (`value_text`; the
  names are `stored_names(spec)`); `setting_value` reads a setting back as a typed value (InputError for an
  unreadable or out-of-range one), `shown_value` is what its editor shows.
- `missing_input`: what Apply still waits for, from the input roles' kinds and required flags.
- `method_command`: the sub-command and options of the task's `cmrsynth` command line, from the files the panel
  wrote for its inputs (`input_file`, a mask on the grid of `mask_grid_role`) and the stored texts; the outputs are
  asked for in the run's results folder (`result_file`). `process.cli_command` turns the options into flags and
  `method_commands.add_method_command` parses them: the option names are the parser's destinations (input roles,
  "out" and "<output>_out", options, sampling settings, checkpoint roles, "device", and "frame_interval_ms" / "ti"
  for cine / MOLLI inputs).

The results come back by output kind through `mrml.add_method_outputs`; `latest_result_label` says whether the main
result is one volume (the panel's latest-result selector then shows it).

Importing this module needs only the standard library and the registry, so the panel works before PyTorch is there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InputError
from .methods.registry import INPUT_KINDS, InputRole, MethodSpec, OutputRole

NODE_CLASSES: dict[str, tuple[str, ...]] = {
    "lge": ("vtkMRMLScalarVolumeNode",), "t2w": ("vtkMRMLScalarVolumeNode",), "bssfp": ("vtkMRMLScalarVolumeNode",),
    "map": ("vtkMRMLScalarVolumeNode",), "mask": ("vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode"),
}
"""Input kinds (methods.registry.INPUT_KINDS) chosen with a node selector of their own, and the MRML node classes it
offers. A cine role uses the panel's cine selector, a MOLLI role its MOLLI widgets, a phenotype role a JSON file
field."""

SAMPLING_HELP = {
    "samples": "k samples, run as one batch: their mean is the result, their SD the uncertainty",
    "sampler": "ddpm: every step; ddim: a faster coarse grid (DDIM steps)",
    "ddim_steps": "DDIM steps (with the ddim sampler): fewer is faster",
    "ddim_eta": "DDIM noise level (with the ddim sampler): 0 deterministic, 1 as much noise as DDPM",
    "seed": "random seed: same seed, same inputs, same result",
}
"""Tooltips of the sampling settings (`steps` says what it means for each method: `Sampling.steps_help`)."""

SAMPLING_LIMITS = {"steps": (1, 9999), "samples": (1, 64), "ddim_steps": (1, 1000), "ddim_eta": (0.0, 1.0),
                   "seed": (0, 2**31 - 1)}
"""Spin-box ranges of the sampling settings."""

SAMPLERS = ("ddpm", "ddim")
INT32_RANGE = (-(2**31 - 1), 2**31 - 1)  # a number setting declared without limits: any 32-bit value
RESULTS_FOLDER = "results"  # the run's outputs, under its temporary folder
CHOOSE_CINE = "Choose the cine: a loaded sequence of volumes over one heartbeat."

NAME_WORDS = {"lge": "LGE", "roi": "ROI", "ddim": "DDIM", "ddpm": "DDPM", "ed": "ED", "es": "ES", "lv": "LV",
              "rv": "RV", "sd": "SD", "t1": "T1", "t2": "T2", "t2w": "T2w", "bssfp": "bSSFP", "molli": "MOLLI",
              "ecv": "ECV"}
"""How the words of an identifier read in names shown to the user (see display_name); other words stay as written."""


def display_name(identifier: str) -> str:
    """An identifier (a role, option, setting or label name) as the user reads it: lv_blood -> "LV blood",
    roi_label -> "ROI label", ddim_steps -> "DDIM steps"."""
    text = " ".join(NAME_WORDS.get(word, word) for word in identifier.split("_"))
    return text[:1].upper() + text[1:]


@dataclasses.dataclass(frozen=True)
class Setting:
    """A setting of a method task as the panel shows it: one of its options, or (sampling True) one of its diffusion
    sampling settings. default None: not given (the command's own default holds); limits: the (low, high) range of a
    number (None: any)."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    limits: tuple | None = None
    sampling: bool = False

    @property
    def editor(self) -> str:
        """The editor the panel gives it: "check" for a bool, "choice" for one with choices, "number" (a spin box in
        `spin_range`) for a number with a default, else "text" (a line edit; empty text: not given)."""
        if self.type is bool:
            return "check"
        if self.choices is not None:
            return "choice"
        if self.type in (int, float) and self.default is not None:
            return "number"
        return "text"

    @property
    def items(self) -> list:
        """The entries of a "choice" editor: None ("not given") first when there is no default, then the choices."""
        return ([None] if self.default is None else []) + list(self.choices or ())

    @property
    def spin_range(self) -> tuple:
        """The range of a "number" editor: its limits, else any 32-bit value."""
        return self.limits or INT32_RANGE


def settings(spec: MethodSpec) -> list[Setting]:
    """The settings of a method task: its options, then its sampling settings (those `Sampling.defaults` lists:
    steps when the method has it, samples, sampler, DDIM steps, DDIM eta, seed) with the method's defaults."""
    found = [Setting(option.name, option.type, option.default, option.help, option.choices)
             for option in spec.options]
    if spec.sampling is None:
        return found
    for name, default in spec.sampling.defaults().items():
        tooltip = spec.sampling.steps_help if name == "steps" else SAMPLING_HELP[name]
        found.append(Setting(name, type(default), default, tooltip, choices=SAMPLERS if name == "sampler" else None,
                             limits=SAMPLING_LIMITS.get(name), sampling=True))
    return found


def stored_names(spec: MethodSpec) -> list[str]:
    """The names of a method task kept as text in the parameter node: its settings, phenotype files and checkpoint
    folders."""
    return ([setting.name for setting in settings(spec)]
            + [role.name for role in spec.inputs if role.kind == "phenotype"]
            + [role.name for role in spec.checkpoints])


def value_text(value: Any) -> str:
    """A value as the parameter node keeps it: None as empty text, a bool as true / false, else str(value)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def setting_value(setting: Setting, text: str | None, strict: bool = True) -> Any:
    """The value of `setting` kept as `text`, of the setting's type: the default when never set (None), None for empty
    text. An unreadable value, or one outside the choices or limits, raises InputError naming the setting, or gives
    the default when not `strict`."""
    if text is None:
        return setting.default
    text, problem = text.strip(), ""
    try:
        value = None if text == "" else (text.lower() == "true") if setting.type is bool else setting.type(text)
    except ValueError:
        value, problem = None, f"it is not {'a whole number' if setting.type is int else 'a number'}"
    if value is not None and setting.choices is not None and value not in setting.choices:
        problem = f"choose one of {', '.join(map(str, setting.choices))}"
    elif value is not None and setting.limits is not None and not setting.limits[0] <= value <= setting.limits[1]:
        problem = f"it must lie in {setting.limits[0]}..{setting.limits[1]}"
    if problem and strict:
        raise InputError(f"{display_name(setting.name)} '{text}': {problem}.")
    return setting.default if problem else value


def shown_value(setting: Setting, text: str | None) -> Any:
    """What the editor of `setting` shows for the kept `text`: a line edit the text as typed (even while it is not
    valid; the default's text when never set), the other editors the value (the default when not readable or not
    given: a spin box or check box cannot show "not given")."""
    if setting.editor == "text":
        return value_text(setting.default) if text is None else text
    value = setting_value(setting, text, strict=False)
    return setting.default if value is None else value


@dataclasses.dataclass(frozen=True)
class MolliChoice:
    """MOLLI source images as the panel holds them: a DICOM folder (its path as typed), whether a loaded sequence is
    chosen, and the inversion times in ms as comma-separated text (typed, else from the sequence's index; empty:
    unknown, or in the DICOM files)."""

    folder: str = ""
    sequence: bool = False
    inversion_times: str = ""

    def problem(self, required: bool = True) -> str:
        """What the source images still need, as a sentence; empty when they can be read: a DICOM folder or a
        loaded sequence (not both), a sequence with its inversion times."""
        folder = self.folder.strip()
        if not folder and not self.sequence:
            return "Choose the source images: a DICOM folder or a loaded sequence." if required else ""
        if folder and self.sequence:
            return "Choose either a DICOM folder or a sequence, not both."
        if self.sequence and not self.inversion_times.strip():
            return "Give the inversion times of the sequence's items (ms, separated by commas)."
        return ""


def mask_grid_role(spec: MethodSpec, chosen: Mapping[str, Any]) -> str:
    """The input role whose grid a method's masks are taken on: its first chosen input that is not a mask. chosen:
    what is chosen for each role (None or absent: nothing). InputError when no image input is chosen."""
    for role in spec.inputs:
        if role.kind != "mask" and chosen.get(role.name) is not None:
            return role.name
    raise InputError(f"{spec.title}: a mask is taken on the grid of an image input; choose the image first.")


def missing_input(spec: MethodSpec, chosen: Mapping[str, Any], texts: Mapping[str, str | None],
                  molli: MolliChoice | None = None) -> str:
    """What a method task still needs before it can run, as a sentence for the user; empty when it can run.

    chosen: what is chosen for each input role held by a node (a volume or mask, the cine or MOLLI sequence; None or
    absent: nothing); texts: the kept text of each of `stored_names(spec)` (None or absent: never set); molli: the
    MOLLI source images, for a MOLLI role. Checked in order: each required input by its kind (a phenotype file that
    is named must exist), an image input to take masks on, a readable value of every setting, the method's
    `input_rule`.
    """
    for role in spec.inputs:
        problem = _role_problem(role, chosen.get(role.name), texts.get(role.name), molli or MolliChoice())
        if problem:
            return problem
    try:
        if any(chosen.get(role.name) is not None for role in spec.inputs if role.kind == "mask"):
            mask_grid_role(spec, chosen)
        values = {setting.name: setting_value(setting, texts.get(setting.name)) for setting in settings(spec)}
    except InputError as error:
        return str(error)
    if spec.input_rule is not None:
        return spec.input_rule({role.name for role in spec.inputs if chosen.get(role.name) is not None}, values)
    return ""


def _role_problem(role: InputRole, chosen: Any, text: str | None, molli: MolliChoice) -> str:
    """What input `role` still needs (see missing_input); empty when nothing."""
    label = display_name(role.name)
    if role.kind == "molli":
        return molli.problem(role.required)
    if role.kind == "phenotype":
        path = (text or "").strip()
        if role.required and not path:
            return f"Choose the {label} file: {INPUT_KINDS[role.kind]}."
        if path and not Path(path).is_file():
            return f"The {label} file {path} does not exist."
        return ""
    if role.required and chosen is None:
        return CHOOSE_CINE if role.kind == "cine" else f"Choose the {label}: {INPUT_KINDS[role.kind]}."
    return ""


def input_file(workdir: Path, role: InputRole) -> Path:
    """Where the panel writes input `role` for the command: a cine as 4D NIfTI (with its trigger-time sidecar), any
    other image, mask or MOLLI sequence as NRRD."""
    return Path(workdir) / f"{role.name}{'.nii' if role.kind == 'cine' else '.nrrd'}"


def result_file(workdir: Path, role: OutputRole) -> Path:
    """Where the command writes output `role`: in the results folder, a cine-shaped one as 4D NIfTI (with its
    trigger-time sidecar), any other as NRRD."""
    return Path(workdir) / RESULTS_FOLDER / f"{role.name}{'.nii.gz' if role.frames else '.nrrd'}"


def method_command(spec: MethodSpec, workdir: Path, files: Mapping[str, Path | None],
                   texts: Mapping[str, str | None], *, device: str = "auto", frame_interval_ms: float | None = None,
                   inversion_times: str = "") -> tuple[str, dict[str, Any]]:
    """(sub-command, options) of the method's `cmrsynth` command line.

    files: the file (or DICOM folder) written for each input role held by a node (None or absent: not given);
    phenotype files and checkpoint folders come from `texts` (empty: not given; a checkpoint then is the shipped demo
    model), settings as typed values (InputError for an unreadable one). Every output is asked for (`result_file`).
    frame_interval_ms (0 or None: the cine's own times) goes to methods with a cine input, inversion_times (empty: the
    files' own) to methods with a MOLLI input.
    """
    options: dict[str, Any] = {}
    for role in spec.inputs:
        if role.kind == "phenotype":
            options[role.name] = _text_path(texts.get(role.name))
        else:
            options[role.name] = files.get(role.name)
    kinds = {role.kind for role in spec.inputs}
    if "cine" in kinds:
        options["frame_interval_ms"] = frame_interval_ms or None
    if "molli" in kinds:
        options["ti"] = inversion_times.strip() or None
    main, *others = spec.outputs
    options["out"] = result_file(workdir, main)
    options.update({f"{role.name}_out": result_file(workdir, role) for role in others})
    options.update({setting.name: setting_value(setting, texts.get(setting.name)) for setting in settings(spec)})
    options.update({role.name: _text_path(texts.get(role.name)) for role in spec.checkpoints})
    options["device"] = device
    return spec.command, options


def latest_result_label(spec: MethodSpec) -> str:
    """The label of the panel's latest-result selector for the method's main result ("Enhanced volume:", "T1 map:"),
    or empty when that result is not one volume (labels, a mask, or cine-shaped)."""
    main = spec.main_output
    if main.kind in ("labels", "mask") or main.frames:
        return ""
    return f"{display_name(main.name)} {'map' if main.kind == 'map' else 'volume'}:"


def _text_path(text: str | None) -> str | None:
    """A file or folder path as typed; None when empty."""
    return (text or "").strip() or None
