"""mrml.py on the Qt-free slicer-core scene: the same checks the Slicer module's self-test runs inside Slicer."""

import pytest
import slicer

from CMRSynthesisLib import mrml_checks


@pytest.mark.parametrize("check", mrml_checks.CHECKS, ids=lambda check: check.__name__)
def test_mrml(check):
    check(slicer.vtkMRMLScene())
