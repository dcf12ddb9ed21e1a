"""mrml.py on the Qt-free slicer-core scene: the same checks the Slicer module's self-test runs inside Slicer."""

import numpy as np
import pytest
import slicer

from CMRSynthesisLib import mrml, mrml_checks
from CMRSynthesisLib.errors import InputError
from CMRSynthesisLib.volume import Volume


@pytest.mark.parametrize("check", mrml_checks.CHECKS, ids=lambda check: check.__name__)
def test_mrml(check):
    check(slicer.vtkMRMLScene())



# ---- cine <-> sequence node (issue 12) ----------------------------------------------------------------------------


def _cine(times: list[float]) -> Volume:
    """A small int16 cine on the oblique test grid of mrml_checks (RAS there, LPS here)."""
    ijk_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ mrml_checks.oblique_ijk_to_ras()
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    array = np.arange(len(times) * np.prod(mrml_checks.SHAPE), dtype=np.int16).reshape(len(times), *mrml_checks.SHAPE)
    return Volume(array, spacing, ijk_to_lps[:3, 3], (ijk_to_lps[:3, :3] / spacing).ravel(),
                  {"trigger_times_ms": times})


def _sequence(scene, values: list[str], unit: str, index: str = "time"):
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "Cine")
    sequence.SetIndexName(index)
    sequence.SetIndexUnit(unit)
    for number, value in enumerate(values):
        item = slicer.vtkMRMLScalarVolumeNode()
        slicer.util.updateVolumeFromArray(item, np.full(mrml_checks.SHAPE, number, dtype=np.int16))
        item.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(mrml_checks.oblique_ijk_to_ras()))
        sequence.SetDataNodeAtValue(item, value)
    return sequence


def test_cine_sequence_node_round_trip_and_playback():
    """A cine becomes a time-indexed sequence (ms) with a browser and a proxy volume that shows its first frame, on
    the cine's grid; reading the sequence back gives the same array, geometry and trigger times."""
    scene = slicer.vtkMRMLScene()
    cine = _cine([12.5, 40.0, 95.25, 130.0])
    reference = mrml_checks.add_test_volume(scene, "Reference")
    sequence = mrml.add_cine_sequence_node(scene, cine, "Cine", reference_node=reference)
    assert (sequence.GetIndexName(), sequence.GetIndexUnit()) == ("time", "ms")
    assert [sequence.GetNthIndexValue(t) for t in range(4)] == ["12.5", "40", "95.25", "130"]
    (browser,) = [scene.GetNthNodeByClass(0, "vtkMRMLSequenceBrowserNode")]
    assert browser.GetMasterSequenceNode() is sequence
    proxy = browser.GetProxyNode(sequence)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(proxy), cine.array[0])
    np.testing.assert_allclose(mrml_checks.node_ijk_to_ras(proxy), mrml_checks.oblique_ijk_to_ras(), atol=1e-9)
    back = mrml.cine_from_sequence_node(sequence)
    np.testing.assert_array_equal(back.array, cine.array)
    assert back.same_geometry(cine) and back.metadata["trigger_times_ms"] == cine.metadata["trigger_times_ms"]
    with pytest.raises(InputError, match="must increase"):
        mrml.add_cine_sequence_node(scene, cine.with_array(cine.array, trigger_times_ms=[0.0, 40.0, 40.0, 80.0]), "Bad")


def test_cine_from_sequence_node_index_units():
    """Index values in seconds become ms; a sequence indexed by frame number needs a frame interval, and says so."""
    scene = slicer.vtkMRMLScene()
    seconds = mrml.cine_from_sequence_node(_sequence(scene, ["0", "0.045", "0.09"], "s"))
    np.testing.assert_allclose(seconds.metadata["trigger_times_ms"], [0.0, 45.0, 90.0])
    np.testing.assert_array_equal(seconds.array[:, 0, 0, 0], [0, 1, 2])
    frames = _sequence(scene, ["1", "2", "3"], "", index="frame")
    with pytest.raises(InputError, match="indexed by 'frame' in 'no unit', not by time.*frame_interval_ms"):
        mrml.cine_from_sequence_node(frames)
    cine = mrml.cine_from_sequence_node(frames, frame_interval_ms=30)
    assert cine.metadata["trigger_times_ms"] == [0.0, 30.0, 60.0]
    assert "30 ms apart" in cine.metadata["notes"][0]
