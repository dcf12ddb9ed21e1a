"""A method's task in the panel without Qt or Slicer (CMRSynthesisLib.method_tasks): the settings made from a
declaration, their values kept as text and read back, what Apply waits for, and the command line, which the real
`cmrsynth` parser must read back as given, for toy methods registered here and for every registered method."""

from pathlib import Path

import pytest

from CMRSynthesisLib import method_tasks
from CMRSynthesisLib.cli import build_parser
from CMRSynthesisLib.errors import InputError
from CMRSynthesisLib.method_tasks import CHOOSE_CINE, MolliChoice, Setting
from CMRSynthesisLib.methods import register, unregister
from CMRSynthesisLib.methods.registry import (
    CheckpointRole,
    InputRole,
    MethodSpec,
    Option,
    OutputRole,
    Sampling,
    method_specs,
)
from CMRSynthesisLib.process import cli_command


def _never(*args, **kwargs):
    raise AssertionError("the panel's logic never loads a method")


SMOOTH = MethodSpec(
    name="toy_task_smoothing", command="toy-task-smooth", title="Toy smoothing", help="a toy method",
    paper="none", factory=_never,
    inputs=(InputRole("t2w", "t2w", "T2-weighted stack"), InputRole("mask", "mask", "where", required=False)),
    outputs=(OutputRole("smoothed", "map", "smoothed map", grid="t2w", quantity="t1_native"),
             OutputRole("spread", "sd", "SD of the samples", grid="t2w"),
             OutputRole("region", "mask", "region used", grid="t2w")),
    checkpoints=(CheckpointRole("checkpoint", "its model", "toy_demo"),
                 CheckpointRole("segmenter", "its segmenter", "toy_segmenter")),
    options=(Option("radius", int, 2, "kernel radius"), Option("mode", str, "gauss", "kernel", choices=("gauss", "box")),
             Option("strict", bool, False, "refuse odd inputs"), Option("scale", float, None, "intensity scale"),
             Option("label", int, None, "label value"), Option("note", str, None, "a note"),
             Option("level", int, None, "level", choices=(1, 2, 3))),
    sampling=Sampling(steps=10, samples=2),
)

EVERY_KIND = MethodSpec(
    name="toy_task_every_kind", command="toy-task-every-kind", title="Every kind", help="inputs of every panel kind",
    paper="none", factory=_never,
    inputs=(InputRole("cine", "cine", "cine"), InputRole("molli", "molli", "MOLLI images", required=False),
            InputRole("bssfp", "bssfp", "bSSFP stack", required=False),
            InputRole("roi", "mask", "ROI", required=False),
            InputRole("profile", "phenotype", "phenotype JSON", required=False)),
    outputs=(OutputRole("frames", "image", "synthetic frames", grid="cine", frames=True),
             OutputRole("t1", "map", "T1 map at ED", grid="cine", quantity="t1_native")),
    checkpoints=(CheckpointRole("checkpoint", "its model", "toy_demo"),),
    sampling=Sampling(steps=None, samples=3, sampler="ddim"),
)


@pytest.fixture
def registered():
    """SMOOTH and EVERY_KIND in the registry (so the `cmrsynth` parser has their commands) for one test."""
    for spec in (SMOOTH, EVERY_KIND):
        register(spec)
    yield
    for spec in (SMOOTH, EVERY_KIND):
        unregister(spec.name)


def _setting(spec: MethodSpec, name: str) -> Setting:
    return next(setting for setting in method_tasks.settings(spec) if setting.name == name)


def _parsed(subcommand: str, options: dict):
    """The options as the panel's command line gives them to the real `cmrsynth` parser."""
    return build_parser().parse_args(cli_command(subcommand, options, python="python")[3:])


def test_display_names():
    assert [method_tasks.display_name(name) for name in ("lv_blood", "roi_label", "ddim_steps", "t2w", "seed")] == [
        "LV blood", "ROI label", "DDIM steps", "T2w", "Seed"]


def test_settings_are_the_options_then_the_sampling_settings():
    """Types, defaults, choices and limits as declared; sampling settings with the method's defaults, limits and
    the method's own help for steps; each gets the editor its type asks for."""
    found = method_tasks.settings(SMOOTH)
    assert [setting.name for setting in found] == ["radius", "mode", "strict", "scale", "label", "note", "level",
                                                   "steps", "samples", "sampler", "ddim_steps", "ddim_eta", "seed"]
    assert [setting.sampling for setting in found] == [False] * 7 + [True] * 6
    editors = {setting.name: setting.editor for setting in found}
    assert editors == {"radius": "number", "mode": "choice", "strict": "check", "scale": "text", "label": "text",
                       "note": "text", "level": "choice", "steps": "number", "samples": "number",
                       "sampler": "choice", "ddim_steps": "number", "ddim_eta": "number", "seed": "number"}
    steps, sampler = _setting(SMOOTH, "steps"), _setting(SMOOTH, "sampler")
    assert (steps.type, steps.default, steps.limits, steps.help) == (int, 10, (1, 9999), "diffusion steps")
    assert (sampler.type, sampler.default, sampler.choices) == (str, "ddpm", ("ddpm", "ddim"))
    eta = _setting(SMOOTH, "ddim_eta")
    assert (eta.type, eta.default, eta.spin_range) == (float, 0.0, (0.0, 1.0))
    assert [(setting.name, setting.default) for setting in found[7:]] == list(SMOOTH.option_defaults().items())[7:]
    assert _setting(SMOOTH, "level").items == [None, 1, 2, 3] and _setting(SMOOTH, "mode").items == ["gauss", "box"]
    assert _setting(SMOOTH, "radius").spin_range == (-(2**31 - 1), 2**31 - 1)
    assert _setting(SMOOTH, "seed").spin_range == (0, 2**31 - 1)


def test_a_method_without_a_start_step_shows_no_steps():
    """T1Diff samples from pure noise: its sampling settings lack steps; a method without sampling has none."""
    assert [setting.name for setting in method_tasks.settings(EVERY_KIND)] == ["samples", "sampler", "ddim_steps",
                                                                               "ddim_eta", "seed"]
    assert _setting(EVERY_KIND, "sampler").default == "ddim"
    assert method_tasks.settings(MethodSpec(**{**vars(SMOOTH), "name": "plain", "command": "plain",
                                               "options": (), "sampling": None})) == []


def test_stored_names():
    assert method_tasks.stored_names(EVERY_KIND) == ["samples", "sampler", "ddim_steps", "ddim_eta", "seed",
                                                     "profile", "checkpoint"]


def test_values_kept_as_text_read_back():
    """Every value of every setting survives value_text -> setting_value; never set gives the default, empty text
    gives None (not given)."""
    values = {"radius": 7, "mode": "box", "strict": True, "scale": 0.25, "label": -3, "note": "a, b", "level": 2,
              "steps": 50, "samples": 4, "sampler": "ddim", "ddim_steps": 12, "ddim_eta": 0.5, "seed": 0}
    for setting in method_tasks.settings(SMOOTH):
        value = values[setting.name]
        assert method_tasks.setting_value(setting, method_tasks.value_text(value)) == value, setting.name
        assert method_tasks.setting_value(setting, None) == setting.default
        assert method_tasks.setting_value(setting, "  ") is None
    strict = _setting(SMOOTH, "strict")
    assert method_tasks.value_text(False) == "false" and method_tasks.setting_value(strict, "false") is False
    assert method_tasks.value_text(None) == ""


@pytest.mark.parametrize(("name", "text", "message"), [
    ("radius", "two", "Radius 'two': it is not a whole number."),
    ("radius", "1.5", "Radius '1.5': it is not a whole number."),
    ("scale", "half", "Scale 'half': it is not a number."),
    ("mode", "disc", "Mode 'disc': choose one of gauss, box."),
    ("level", "4", "Level '4': choose one of 1, 2, 3."),
    ("samples", "65", "Samples '65': it must lie in 1..64."),
    ("ddim_steps", "0", "DDIM steps '0': it must lie in 1..1000."),
])
def test_unreadable_values_are_refused_or_replaced_by_the_default(name, text, message):
    setting = _setting(SMOOTH, name)
    with pytest.raises(InputError) as raised:
        method_tasks.setting_value(setting, text)
    assert str(raised.value) == message
    assert method_tasks.setting_value(setting, text, strict=False) == setting.default


def test_editors_show_the_typed_text_or_a_readable_value():
    """A line edit shows the text as typed, even while it is not valid (the default's text when never set); a spin
    box, combo box or check box a value, the default when the kept text is unreadable or empty."""
    scale, note, radius, strict = (_setting(SMOOTH, name) for name in ("scale", "note", "radius", "strict"))
    assert method_tasks.shown_value(scale, "half") == "half" and method_tasks.shown_value(scale, None) == ""
    assert method_tasks.shown_value(note, None) == "" and method_tasks.shown_value(note, " x ") == " x "
    assert method_tasks.shown_value(radius, "two") == 2 and method_tasks.shown_value(radius, "") == 2
    assert method_tasks.shown_value(radius, "5") == 5 and method_tasks.shown_value(strict, "true") is True


@pytest.mark.parametrize(("folder", "sequence", "times", "required", "problem"), [
    ("", False, "", True, "Choose the source images: a DICOM folder or a loaded sequence."),
    (" ", False, "", False, ""),
    ("/data/molli", True, "100,200", True, "Choose either a DICOM folder or a sequence, not both."),
    ("", True, " ", True, "Give the inversion times of the sequence's items (ms, separated by commas)."),
    ("", True, "100,200", True, ""),
    ("/data/molli", False, "", True, ""),
])
def test_molli_source_images(folder, sequence, times, required, problem):
    assert MolliChoice(folder, sequence, times).problem(required) == problem


def test_apply_waits_for_the_required_inputs_then_readable_settings(tmp_path):
    """In order: each required input by its kind, a named phenotype file that exists, an image to take masks on,
    a readable value of every setting."""
    node = object()  # anything chosen; None is nothing
    assert method_tasks.missing_input(SMOOTH, {}, {}) == "Choose the T2w: T2-weighted image stack."
    assert method_tasks.missing_input(SMOOTH, {"t2w": node}, {}) == ""
    assert method_tasks.missing_input(SMOOTH, {"mask": node}, {}) == "Choose the T2w: T2-weighted image stack."
    assert method_tasks.missing_input(SMOOTH, {"t2w": node}, {"radius": "two", "scale": "half"}) == (
        "Radius 'two': it is not a whole number.")
    assert method_tasks.missing_input(SMOOTH, {"t2w": node}, {"scale": ""}) == ""

    assert method_tasks.missing_input(EVERY_KIND, {"bssfp": node}, {}) == CHOOSE_CINE
    chosen = {"cine": node}
    assert method_tasks.missing_input(EVERY_KIND, chosen, {}) == ""
    assert method_tasks.missing_input(EVERY_KIND, chosen, {}, MolliChoice("", True, "")) == (
        "Give the inversion times of the sequence's items (ms, separated by commas).")
    absent = tmp_path / "absent.json"
    assert method_tasks.missing_input(EVERY_KIND, chosen, {"profile": str(absent)}) == (
        f"The Profile file {absent} does not exist.")
    (tmp_path / "profile.json").write_text("{}")
    assert method_tasks.missing_input(EVERY_KIND, chosen, {"profile": str(tmp_path / "profile.json")}) == ""
    required = MethodSpec(**{**vars(EVERY_KIND), "name": "needs_profile", "command": "needs-profile",
                             "inputs": (InputRole("cine", "cine", "cine"), InputRole("profile", "phenotype", "JSON"))})
    assert method_tasks.missing_input(required, chosen, {"profile": " "}) == (
        "Choose the Profile file: phenotype vector (JSON).")
    assert method_tasks.missing_input(EVERY_KIND, chosen, {"sampler": "euler"}) == (
        "Sampler 'euler': choose one of ddpm, ddim.")


def test_masks_are_taken_on_the_first_chosen_image_input():
    node = object()
    assert method_tasks.mask_grid_role(EVERY_KIND, {"cine": node, "roi": node}) == "cine"
    assert method_tasks.mask_grid_role(EVERY_KIND, {"cine": None, "molli": node, "roi": node}) == "molli"
    no_image = MethodSpec(**{**vars(SMOOTH), "name": "optional_image", "command": "optional-image",
                             "inputs": (InputRole("t2w", "t2w", "T2w", required=False),
                                        InputRole("mask", "mask", "where", required=False))})
    message = "Toy smoothing: a mask is taken on the grid of an image input; choose the image first."
    with pytest.raises(InputError, match=message):
        method_tasks.mask_grid_role(no_image, {"mask": node})
    assert method_tasks.missing_input(no_image, {"mask": node}, {}) == message


def test_files_of_inputs_and_results(tmp_path):
    """A cine goes as 4D NIfTI, every other input as NRRD; outputs are asked for in the results folder, a
    cine-shaped one as 4D NIfTI."""
    roles = {role.name: role for role in EVERY_KIND.inputs}
    assert method_tasks.input_file(tmp_path, roles["cine"]) == tmp_path / "cine.nii"
    assert method_tasks.input_file(tmp_path, roles["molli"]) == tmp_path / "molli.nrrd"
    frames, t1 = EVERY_KIND.outputs
    assert method_tasks.result_file(tmp_path, frames) == tmp_path / "results" / "frames.nii.gz"
    assert method_tasks.result_file(tmp_path, t1) == tmp_path / "results" / "t1.nrrd"


def test_latest_result_label():
    assert method_tasks.latest_result_label(SMOOTH) == "Smoothed map:"
    assert method_tasks.latest_result_label(EVERY_KIND) == ""  # cine-shaped
    specs = method_specs(strict=False)
    assert method_tasks.latest_result_label(specs["scar_enhancement"]) == "Enhanced volume:"
    assert method_tasks.latest_result_label(specs["cine_segmentation"]) == ""  # labels


def test_command_line_of_a_toy_method_is_read_back_by_cmrsynth(registered, tmp_path):
    """The settings as typed values, the checkpoint folders (empty: shipped), the inputs as written, every output
    asked for; the real parser reads each back as given."""
    texts = {"radius": "5", "mode": "box", "strict": "true", "scale": "0.5", "label": "-3", "sampler": "ddim",
             "ddim_steps": "7", "seed": "3", "checkpoint": str(tmp_path / "my model"), "segmenter": " "}
    files = {"t2w": tmp_path / "t2w.nrrd", "mask": None}
    subcommand, options = method_tasks.method_command(SMOOTH, tmp_path, files, texts, device="cpu")
    args = _parsed(subcommand, options)
    assert (args.command, args.method, args.t2w, args.mask) == ("toy-task-smooth", SMOOTH.name,
                                                                tmp_path / "t2w.nrrd", None)
    assert (args.radius, args.mode, args.strict, args.scale, args.label, args.note, args.level) == (
        5, "box", True, 0.5, -3, None, None)
    assert (args.steps, args.samples, args.sampler, args.ddim_steps, args.seed) == (10, 2, "ddim", 7, 3)
    assert (args.checkpoint, args.segmenter, args.device) == (tmp_path / "my model", None, "cpu")
    results = tmp_path / "results"
    assert (args.out, args.spread_out, args.region_out) == (results / "smoothed.nrrd", results / "spread.nrrd",
                                                            results / "region.nrrd")
    assert "frame_interval_ms" not in options and "ti" not in options  # no cine or MOLLI input
    with pytest.raises(InputError, match="Radius 'two'"):
        method_tasks.method_command(SMOOTH, tmp_path, files, {"radius": "two"})


def test_command_line_of_every_input_kind(registered, tmp_path):
    """The cine with its frame interval, the MOLLI images with their inversion times, the phenotype file from its
    text; the strict flag of a bool option given as false is left out (the parser's default)."""
    files = {"cine": tmp_path / "cine.nii", "molli": tmp_path / "molli.nrrd", "bssfp": None}
    texts = {"profile": str(tmp_path / "profile.json"), "samples": "5"}
    subcommand, options = method_tasks.method_command(EVERY_KIND, tmp_path, files, texts, frame_interval_ms=40.0,
                                                      inversion_times=" 100,180,260 ")
    args = _parsed(subcommand, options)
    assert (args.cine, args.molli, args.bssfp, args.roi, args.profile) == (
        tmp_path / "cine.nii", tmp_path / "molli.nrrd", None, None, tmp_path / "profile.json")
    assert (args.frame_interval_ms, args.ti, args.samples, args.sampler, args.device) == (
        40.0, "100,180,260", 5, "ddim", "auto")
    assert (args.out, args.t1_out) == (tmp_path / "results" / "frames.nii.gz", tmp_path / "results" / "t1.nrrd")
    _, options = method_tasks.method_command(EVERY_KIND, tmp_path, files, {}, frame_interval_ms=0.0)
    assert (options["frame_interval_ms"], options["ti"], options["profile"]) == (None, None, None)
    smooth = method_tasks.method_command(SMOOTH, tmp_path, {"t2w": tmp_path / "t2w.nrrd"}, {"strict": "false"})[1]
    assert _parsed("toy-task-smooth", smooth).strict is False


def test_command_line_of_every_registered_method(tmp_path):
    """Each method of the registry, with its required inputs given and its settings at their defaults: the parser
    reads back the inputs, every output and the declared defaults."""
    specs = method_specs(strict=False)
    assert {"scar_enhancement", "cine_segmentation"} <= set(specs)
    for spec in specs.values():
        files = {role.name: method_tasks.input_file(tmp_path, role) for role in spec.inputs if role.required}
        texts = {role.name: str(tmp_path / f"{role.name}.json") for role in spec.inputs if role.kind == "phenotype"}
        subcommand, options = method_tasks.method_command(spec, tmp_path, files, texts)
        args = _parsed(subcommand, options)
        assert (args.command, args.method, args.out) == (spec.command, spec.name,
                                                         method_tasks.result_file(tmp_path, spec.main_output))
        for role in spec.inputs:
            given = files.get(role.name) or texts.get(role.name)
            assert getattr(args, role.name) == (Path(given) if given else None), (spec.name, role.name)
        for role in spec.outputs[1:]:
            assert getattr(args, f"{role.name}_out") == method_tasks.result_file(tmp_path, role), spec.name
        for setting in method_tasks.settings(spec):  # a bool without a default is off on the command line
            expected = bool(setting.default) if setting.type is bool else setting.default
            assert getattr(args, setting.name) == expected, (spec.name, setting.name)
        assert all(getattr(args, role.name) is None for role in spec.checkpoints), spec.name
