"""What the Slicer extension needs installed (CMRSynthesisLib.dependencies), checked without Slicer."""

import importlib.metadata

from CMRSynthesisLib import dependencies

ABSENT = "cmrsynthesis-surely-absent-package"


def test_python_too_old_says_which_slicer_to_install():
    assert dependencies.python_too_old((3, 11, 0)) == "" and dependencies.python_too_old((3, 12, 4)) == ""
    assert dependencies.python_too_old((3, 9, 10)) == (
        "Slicer 5.10 or later (its packages need Python 3.11 or newer; this Slicer has Python 3.9.10)")
    assert dependencies.python_too_old() == ""  # the suite runs on Python 3.11 or newer


def test_requirements_and_what_is_unmet(tmp_path):
    version = importlib.metadata.version("packaging")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"# pinned\n\npackaging=={version}\n  {ABSENT}==1.0  \n")
    assert dependencies.requirement_lines(requirements) == [f"packaging=={version}", f"{ABSENT}==1.0"]
    assert dependencies.unmet_requirement(f"packaging=={version}") is None
    assert dependencies.unmet_requirement("packaging<1") == f"packaging<1 (found {version})"
    assert dependencies.unmet_requirement(f"{ABSENT}==1.0") == f"{ABSENT}==1.0 (not installed)"
    missing = dependencies.missing(requirements)
    assert f"{ABSENT}==1.0 (not installed)" in missing and not any(line.startswith("packaging") for line in missing)
    assert all(line.startswith(("torch", ABSENT)) for line in missing)


def test_constraints_hold_installed_packages_at_their_versions():
    version = importlib.metadata.version("packaging")
    assert dependencies.installed_versions(["packaging", ABSENT]) == {"packaging": version}
    assert dependencies.constraints(["packaging", ABSENT]) == f"packaging=={version}\n"
    assert set(dependencies.SLICER_OWNED_PACKAGES) >= {"torch", "numpy", "SimpleITK"}
