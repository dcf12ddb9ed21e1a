"""The method registry: every method declares itself once, as a `MethodSpec` named `SPEC` in its own module under
`CMRSynthesisLib.methods`, and everything that offers methods is built from these declarations: `load_method`, the
`cmrsynth` sub-commands (`CMRSynthesisLib.method_commands`), the Slicer task table and the training recipes they name.

A declaration says what the method reads (input roles, each of a kind from INPUT_KINDS), what it writes (output
roles), which checkpoints it loads (with the shipped demo model of each), its options and, for diffusion methods,
its sampling defaults. Adding a method is adding its module (with `SPEC`), its training recipe and its config: the
registry finds the module by itself (`pkgutil` over this package). `register` adds a declaration at run time (tests,
extensions).

Declarations are plain data: importing this module needs only the standard library, so the Slicer module can read
the task table before PyTorch is installed (`method_specs(strict=False)` then lists the methods that could not be
imported and why).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError

INPUT_KINDS: dict[str, str] = {
    "lge": "late gadolinium enhancement (LGE) image stack",
    "cine": "cine: frames (t, z, y, x) over one heartbeat with their trigger times, or a 3D stack as one frame",
    "molli": "MOLLI / ShMOLLI source images with their inversion times",
    "t2w": "T2-weighted image stack",
    "bssfp": "bSSFP image stack",
    "map": "quantitative map (e.g. T1 in ms)",
    "mask": "mask or label map on an input image's grid",
    "phenotype": "phenotype vector (JSON)",
}
"""What an input role can hold; readers and panel selectors are chosen by kind."""

OUTPUT_KINDS: dict[str, str] = {
    "image": "synthetic or enhanced image, in the input's units",
    "map": "quantitative map",
    "sd": "per-voxel standard deviation of the k samples (uncertainty)",
    "labels": "label map",
    "mask": "binary mask",
}
"""What an output role can hold; the panel shows images and maps over their input, labels and masks as labels."""

OPTION_TYPES = (int, float, str, bool)


def _check_name(name: str, what: str) -> None:
    if not name or not name.replace("_", "").isalnum() or not name[0].isalpha() or name.lower() != name:
        raise ValueError(f"{what} {name!r} must be a lower-case identifier (letters, digits, underscores)")


@dataclasses.dataclass(frozen=True)
class InputRole:
    """One input of a method: `name` is its key in `run(inputs)` and its command-line option (--name), `kind` one
    of INPUT_KINDS; `help` says what it is for the user; optional inputs may be None in `run`."""

    name: str
    kind: str
    help: str
    required: bool = True

    def __post_init__(self) -> None:
        _check_name(self.name, "input role")
        if self.kind not in INPUT_KINDS:
            raise ValueError(f"input role {self.name!r}: unknown kind {self.kind!r}; known: {sorted(INPUT_KINDS)}")


@dataclasses.dataclass(frozen=True)
class OutputRole:
    """One output of a method: its key in the dict `run` returns; the first output of a method is its main result
    (`--out`), the others are written on request (--<name>-out). `grid`: the input role whose grid it lies on, or
    several input roles: the first of them that is given (`grid_input`; e.g. a method of optional inputs);
    `frames`: True when it keeps the time axis of a cine on that grid (a cine in, a cine out; else 3D);
    `quantity`: the display quantity of a map (see `CMRSynthesisLib.display`), None for none; `synthetic`: whether a
    DICOM export marks it SYNTHETIC (made by the generative model) or only DERIVED (computed from acquired images),
    None: by kind (images, maps and SDs synthetic, labels and masks derived)."""

    name: str
    kind: str
    help: str
    grid: str | tuple[str, ...]
    frames: bool = False
    quantity: str | None = None
    synthetic: bool | None = None

    @property
    def grids(self) -> tuple[str, ...]:
        """The input roles it may lie on, in order of preference."""
        return (self.grid,) if isinstance(self.grid, str) else tuple(self.grid)

    def grid_input(self, inputs: dict[str, Any]) -> str:
        """The input role (a key of `inputs`) it lies on: the first of `grids` given (not None), else the first."""
        return next((name for name in self.grids if inputs.get(name) is not None), self.grids[0])

    @property
    def is_synthetic(self) -> bool:
        """Marked SYNTHETIC in a DICOM export (`synthetic`, or by kind)."""
        return self.kind in ("image", "map", "sd") if self.synthetic is None else self.synthetic

    def __post_init__(self) -> None:
        _check_name(self.name, "output role")
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"output role {self.name!r}: unknown kind {self.kind!r}; known: {sorted(OUTPUT_KINDS)}")


@dataclasses.dataclass(frozen=True)
class CheckpointRole:
    """A checkpoint the method loads: `name` is its keyword in the method's `load` and its option (--name), `shipped`
    the shipped demo checkpoint used when the user gives none (a name in Resources/checkpoints)."""

    name: str
    help: str
    shipped: str

    def __post_init__(self) -> None:
        _check_name(self.name, "checkpoint role")


@dataclasses.dataclass(frozen=True)
class Option:
    """A setting passed to `run` as a keyword: type one of OPTION_TYPES, `default` of that type (or None: unset),
    `choices` the allowed values (None: any). per_study: a fact of one study or case (its ED frame, its slice
    numbers, its field strength, the direction a multi-sequence case synthesises) rather than a setting of the method:
    `cmrsynth evaluate` neither takes nor reports it, since every held-out case brings its own."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    per_study: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name, "option")
        if self.type not in OPTION_TYPES:
            raise ValueError(f"option {self.name!r}: type must be one of {OPTION_TYPES}")
        if self.default is not None and not isinstance(self.default, self.type):
            raise ValueError(f"option {self.name!r}: default {self.default!r} is not a {self.type.__name__}")
        if self.choices is not None and self.default is not None and self.default not in self.choices:
            raise ValueError(f"option {self.name!r}: default {self.default!r} is not one of {self.choices}")


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Diffusion sampling settings a method takes in `run` (steps, samples, sampler, ddim_steps, ddim_eta, seed) and
    their defaults. `steps_help` says what `steps` means for this method (e.g. the partial-diffusion start step t0);
    steps None: the method has no such setting (it samples from pure noise through the whole chain). ddim_eta: the
    DDIM noise level (0 deterministic, 1 the DDPM posterior's variance on the coarse grid; Song et al. 2021)."""

    steps: int | None
    samples: int
    sampler: str = "ddpm"
    ddim_steps: int = 20
    ddim_eta: float = 0.0
    steps_help: str = "diffusion steps"

    def defaults(self) -> dict[str, Any]:
        """The `run` keywords and their defaults: steps (left out when None: a method sampling from pure noise has
        no start step to choose), samples, sampler, ddim_steps, ddim_eta, seed."""
        steps = {} if self.steps is None else {"steps": self.steps}
        return {**steps, "samples": self.samples, "sampler": self.sampler, "ddim_steps": self.ddim_steps,
                "ddim_eta": self.ddim_eta, "seed": 0}


@dataclasses.dataclass(frozen=True)
class EvaluationCase:
    """One held-out case of an evaluation (see `Evaluation`): what every model reads and what its output is compared
    with.

    subject: phantom subject id; family: the split it was drawn from ("test", "ood"); inputs: the method's `run`
    inputs (role name -> Volume, ...); reference: the ground truth the outputs are compared with (any object the
    metric functions understand: a Volume, a 2D array, ...); slice: the slice index in the subject's stack the case is
    about (None: the whole stack); context: whatever else the metric functions need (tissue masks, the ROI used,
    AHA segments), never written out; facts: numbers about the case itself rather than a model (e.g. the Dice of the
    ROI a segmenter found), written in the case's row and summarised once.
    """

    subject: int
    family: str
    inputs: dict[str, Any]
    reference: Any
    slice: int | None = None
    context: dict[str, Any] = dataclasses.field(default_factory=dict)
    facts: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A model the method is compared with on the same cases: a baseline, an ablation or another checkpoint.

    name: its key in metrics.json (a lower-case identifier); label: its row in the table; help: one line on what it
    is. load(context) -> predict, where `context` is a `CMRSynthesisLib.evaluation.EvaluationContext` (the spec, the
    loaded method, device, the other checkpoints given, the run options) and predict(case, progress) -> output, the
    object the metric functions compare with the case's reference. A baseline that cannot be had here (its checkpoint
    missing or tampered: CheckpointError; anything else: `evaluation.ModelUnavailable(reason)`) is reported as
    "unavailable: <why>", never with numbers. Helpers: `evaluation.checkpoint_baseline`, `evaluation.input_baseline`.
    """

    name: str
    label: str
    load: Callable[[Any], Callable[..., Any]]
    help: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "baseline")


@dataclasses.dataclass(frozen=True)
class ReferenceRow:
    """The reference itself as a row of the table, for scale (e.g. the CNRs of the enhancement target): `metrics(
    reference, case) -> {metric: float | None}`; its name is its key in metrics.json."""

    name: str
    label: str
    metrics: Callable[[Any, EvaluationCase], dict[str, Any]]

    def __post_init__(self) -> None:
        _check_name(self.name, "reference row")


@dataclasses.dataclass(frozen=True)
class Column:
    """A column of the evaluation table. key: a per-case metric (shown as mean ± SD over cases, times `scale`) or an
    agreement statistic "<quantity>.<stat>" with stat one of r, bias, loa (limits of agreement), n; header: the
    column title (with units); digits: decimals shown."""

    key: str
    header: str
    scale: float = 1.0
    digits: int = 2


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """How `cmrsynth evaluate METHOD` measures a method on held-out phantom subjects (engine:
    `CMRSynthesisLib.evaluation`). Every case goes through the method and every baseline in one run, with the same
    settings (seed included: a method draws one generator per slice from the seed and the slice's position).

    cases(split, subjects, method) -> [EvaluationCase]: the held-out cases of one split (a name in `splits`) from the
    first `subjects` suitable phantom subjects; `method` is the loaded method, for what the cases need from it (a
    segmenter's ROI, its config's crop size); raise InputError when the split yields none.
    metrics: functions (output, reference, case) -> {metric: float | None}, merged per case and model; None: not
    computable here (e.g. LPIPS without its weights), left out of the statistics.
    columns: the table's columns, in order (see Column). higher_is_better / lower_is_better: metric names by
    direction (the paired comparison says which model is better; metrics in neither have no direction).
    baselines: the other models, table rows in this order before the method's (`method_label`).
    predict(method, case, options, progress) -> output: how the method (and a `checkpoint_baseline`) runs on a case;
    None: `method.run(case.inputs, progress=progress, **options)[main output]`.
    reference_row: the reference's own metrics as a row after the method's (None: no such row).
    agreement(output, reference, case) -> {quantity: (predicted values, true values)}: paired measurements (e.g. the
    16 AHA segment means of a map) pooled over the cases of each model for Pearson R, bias and limits of agreement
    (Bland & Altman 1986) and a Bland-Altman figure; units: {metric or quantity: units} for figure axes.
    unavailable_metrics() -> {metric: reason}: metrics that cannot be computed on this machine (shown so in the table).
    published: rows of numbers from the paper, (label, {column key: text}), shown in italics below the others.
    splits: the held-out splits a user may ask for (default all of them); subjects: the default per split.
    title: the table's caption.
    """

    cases: Callable[[str, int, Any], list[EvaluationCase]]
    metrics: tuple[Callable[[Any, Any, EvaluationCase], dict[str, Any]], ...]
    columns: tuple[Column, ...]
    higher_is_better: tuple[str, ...] = ()
    lower_is_better: tuple[str, ...] = ()
    baselines: tuple[Baseline, ...] = ()
    method_label: str = "Method (this run)"
    predict: Callable[..., Any] | None = None
    reference_row: ReferenceRow | None = None
    agreement: Callable[[Any, Any, EvaluationCase], dict[str, tuple[Any, Any]]] | None = None
    units: dict[str, str] = dataclasses.field(default_factory=dict)
    unavailable_metrics: Callable[[], dict[str, str]] | None = None
    published: tuple[tuple[str, dict[str, str]], ...] = ()
    splits: tuple[str, ...] = ("test", "ood")
    subjects: int = 6
    title: str = ""

    def __post_init__(self) -> None:
        if not self.metrics or not self.columns or not self.splits:
            raise ValueError("an evaluation needs at least one metric function, table column and split")
        if self.subjects < 1:
            raise ValueError(f"an evaluation's default number of subjects must be at least 1; got {self.subjects}")
        names = [baseline.name for baseline in self.baselines]
        names += [self.reference_row.name] if self.reference_row is not None else []
        if len(set(names)) < len(names):
            raise ValueError(f"an evaluation's baselines and reference row need distinct names; got {names}")
        both = sorted(set(self.higher_is_better) & set(self.lower_is_better))
        if both:
            raise ValueError(f"metric(s) {', '.join(both)} cannot be both higher and lower is better")


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A method's declaration.

    name: registry key (load_method(name)); command: its `cmrsynth` sub-command; title: its Slicer task label; help:
    one line for the user; paper: the publication it implements; factory: `factory(checkpoint, device=..., **other
    checkpoints by role name)` returns an object with `run(inputs, *, progress, **options) -> dict of Volumes` and a
    `device` attribute; the first checkpoint role is the method's own (`checkpoint`). summarise: optional
    `summarise(inputs, outputs) -> dict` of facts for the command's JSON result. recipes: training recipe names that
    produce its checkpoints. evaluation: how `cmrsynth evaluate` measures it on held-out phantom subjects against its
    baselines (None: the method is not offered there). table: optional `table(summary) -> rows` (dicts of one table),
    and figures: optional `figures(summary) -> {name: PNG bytes}`, drawn from the command's facts, that the Slicer
    task shows beside the outputs (e.g. a per-segment table and its bullseye). input_rule: optional
    `input_rule(given input role names, option values) -> sentence` saying what the given inputs lack or have too much
    for those options (empty when they fit), for rules the roles' `required` cannot say (e.g. "exactly the two
    sequences that are not the target"); the panel shows it before running (`run` checks the same).
    """

    name: str
    command: str
    title: str
    help: str
    paper: str
    factory: Callable[..., Any]
    inputs: tuple[InputRole, ...]
    outputs: tuple[OutputRole, ...]
    checkpoints: tuple[CheckpointRole, ...]
    options: tuple[Option, ...] = ()
    sampling: Sampling | None = None
    summarise: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None
    recipes: tuple[str, ...] = ()
    evaluation: Evaluation | None = None
    table: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None
    figures: Callable[[dict[str, Any]], dict[str, bytes]] | None = None
    input_rule: Callable[[set[str], dict[str, Any]], str] | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "method")
        if not self.inputs or not self.outputs or not self.checkpoints:
            raise ValueError(f"method {self.name!r} must declare at least one input, output and checkpoint")
        if self.checkpoints[0].name != "checkpoint":
            raise ValueError(f"method {self.name!r}: its first checkpoint role must be 'checkpoint' (its own model)")
        inputs = [role.name for role in self.inputs]
        for output in self.outputs:
            unknown = [grid for grid in output.grids if grid not in inputs]
            if unknown or not output.grids:
                raise ValueError(f"method {self.name!r}: output {output.name!r} lies on unknown input "
                                 f"{', '.join(map(repr, unknown)) or '(none named)'}")
        names = inputs + [f"{role.name}_out" for role in self.outputs[1:]] + [role.name for role in self.checkpoints]
        names += [option.name for option in self.options] + (list(self.sampling.defaults()) if self.sampling else [])
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"method {self.name!r} declares {', '.join(repeated)} twice")

    @property
    def main_output(self) -> OutputRole:
        return self.outputs[0]

    def option_defaults(self) -> dict[str, Any]:
        """Every `run` keyword but `progress` with its default: the options, then the sampling settings."""
        return {**{option.name: option.default for option in self.options},
                **(self.sampling.defaults() if self.sampling else {})}

    def load(self, checkpoint: str | Path | None = None, device: str = "auto", **checkpoints: Any) -> Any:
        """The method ready to run: `checkpoint` its own (None: shipped), other checkpoint roles as keywords."""
        unknown = sorted(set(checkpoints) - {role.name for role in self.checkpoints[1:]})
        if unknown:
            raise InputError(f"{self.name} has no checkpoint role {', '.join(unknown)}; it takes "
                             f"{', '.join(role.name for role in self.checkpoints)}")
        return self.factory(checkpoint, device=device, **checkpoints)


_registered: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> None:
    """Add a declaration at run time; ValueError when a method of that name or command is already known."""
    known = method_specs()
    clash = next((other for other in known.values() if spec.command == other.command), None)
    if spec.name in known or clash is not None:
        raise ValueError(f"a method named {spec.name!r} or with command {spec.command!r} is already registered")
    _registered[spec.name] = spec


def unregister(name: str) -> None:
    """Remove a declaration added with `register` (no-op for unknown names)."""
    _registered.pop(name, None)


def method_modules() -> list[str]:
    """Names of the modules of this package that may declare a method (found without importing them)."""
    package = Path(__file__).parent
    return sorted(info.name for info in pkgutil.iter_modules([str(package)]) if info.name != "registry")


def method_specs(strict: bool = True) -> dict[str, MethodSpec]:
    """Every declared method by name: the modules' `SPEC`s, then the ones added with `register`.

    strict False: a module whose dependencies are missing (ModuleNotFoundError, e.g. no PyTorch yet in Slicer) is
    left out instead of raising; `unavailable_methods` says which and why.
    """
    specs: dict[str, MethodSpec] = {}
    for module_name in method_modules():
        try:
            module = importlib.import_module(f"{__package__}.{module_name}")
        except ModuleNotFoundError:
            if strict:
                raise
            continue
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, MethodSpec):
            specs[spec.name] = spec
    return {**specs, **_registered}


def unavailable_methods() -> dict[str, str]:
    """Method modules that cannot be imported here, with the reason (a missing package)."""
    missing = {}
    for module_name in method_modules():
        try:
            importlib.import_module(f"{__package__}.{module_name}")
        except ModuleNotFoundError as error:
            missing[module_name] = f"needs the Python package {error.name!r}"
    return missing


def get_spec(name: str) -> MethodSpec:
    """The declaration of method `name`; InputError naming the known ones otherwise."""
    specs = method_specs()
    if name not in specs:
        raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(specs))}")
    return specs[name]


def load_method(name: str, checkpoint: str | Path | None = None, device: str = "auto", **checkpoints: Any) -> Any:
    """Load method `name` with its checkpoint (None: the shipped demo model) on `device` ("auto", "cpu", "cuda");
    other checkpoints by role name (e.g. segmenter=...). Returns the object whose `run(inputs, *, progress,
    **options)` computes the declared outputs; InputError for an unknown method, CheckpointError for a missing,
    tampered or foreign checkpoint."""
    return get_spec(name).load(checkpoint, device, **checkpoints)
