"""Checks of `mrml` on a live scene, shared by the pytest suite (on slicer-core) and the Slicer module's self-test.

Each check takes a `vtkMRMLScene`, builds the small nodes it needs, and raises AssertionError (or numpy's) naming
what differs. `CHECKS` lists them all.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import slicer
import vtk

from . import mrml
from .errors import GeometryError, InputError
from .volume import Volume

SHAPE = (4, 6, 5)  # (z, y, x)
SPACING = (0.7, 0.8, 8.0)  # mm along i, j, k
ORIGIN_RAS = (10.0, -20.0, 30.0)


def oblique_ijk_to_ras() -> np.ndarray:
    """4x4 voxel -> RAS matrix of the test volume: anisotropic spacing, rotated 30 deg about z and 20 deg about x."""
    a, b = np.radians(30.0), np.radians(20.0)
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    matrix = np.eye(4)
    matrix[:3, :3] = about_z @ about_x @ np.diag(SPACING)
    matrix[:3, 3] = ORIGIN_RAS
    return matrix


def add_test_volume(scene, name: str = "LGE", array: np.ndarray | None = None, labelmap: bool = False):
    """A volume node of SHAPE on the oblique grid, filled with `array` (default: 0, 1, 2, ... as float32)."""
    if array is None:
        array = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, array)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(oblique_ijk_to_ras()))
    return node


def node_ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def add_segmentation(scene, reference_node, labels: np.ndarray, name: str = "Heart"):
    """A segmentation node with one segment per non-zero label of `labels` (on the reference grid)."""
    labelmap = add_test_volume(scene, "labels", labels.astype(np.uint8), labelmap=True)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    mrml._register_segmentation_converters()
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    scene.RemoveNode(labelmap)
    return segmentation


def two_labels() -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels[1, 2:4, 1:3] = 1
    labels[2, 1:5, 2:4] = 2
    return labels


def check_volume_round_trip(scene) -> None:
    """node -> Volume -> new node keeps the voxels and the voxel-to-RAS matrix of an oblique grid."""
    source = add_test_volume(scene)
    volume = mrml.volume_from_node(source)
    copy = mrml.add_volume_node(scene, volume, "copy")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(copy), slicer.util.arrayFromVolume(source))
    np.testing.assert_allclose(node_ijk_to_ras(copy), oblique_ijk_to_ras(), atol=1e-9)
    np.testing.assert_allclose(volume.spacing, SPACING, atol=1e-9)


def check_lps_is_ras_with_x_y_negated(scene) -> None:
    """A known voxel's RAS position is its Volume (LPS) position with x and y negated; z is kept."""
    volume = mrml.volume_from_node(add_test_volume(scene))
    voxel = np.array([3.0, 2.0, 1.0, 1.0])  # (i, j, k) = (x, y, z) indices
    ras = oblique_ijk_to_ras() @ voxel
    lps = volume.index_to_physical() @ voxel
    np.testing.assert_allclose(lps[:3], [-ras[0], -ras[1], ras[2]], atol=1e-9)
    np.testing.assert_allclose(volume.origin, [-ORIGIN_RAS[0], -ORIGIN_RAS[1], ORIGIN_RAS[2]], atol=1e-9)


def check_volume_is_a_copy(scene) -> None:
    """Changing a Volume read from a node leaves the node's voxels alone."""
    node = add_test_volume(scene)
    volume = mrml.volume_from_node(node)
    volume.array[...] = -1
    assert slicer.util.arrayFromVolume(node).min() == 0, "volume_from_node returned a view of the node's voxels"


def check_only_scalar_volumes_are_read(scene) -> None:
    """A segmentation node or a 3-component (vector) volume is refused with an InputError naming the node."""
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Heart")
    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "Colour")
    slicer.util.updateVolumeFromArray(vector, np.zeros(SHAPE + (3,), np.uint8))
    for node in (segmentation, vector):
        try:
            mrml.volume_from_node(node)
        except InputError as error:
            assert node.GetName() in str(error), f"the message does not name the node: {error}"
        else:
            raise AssertionError(f"'{node.GetName()}' ({node.GetClassName()}) was read as a scalar volume")


def check_segmentation_mask(scene) -> None:
    """The union of all segments (or of the chosen ones) as a 0/1 mask on the reference grid, no nodes left over."""
    lge = add_test_volume(scene)
    labels = two_labels()
    segmentation = add_segmentation(scene, lge, labels)
    nodes_before = scene.GetNumberOfNodes()
    mask = mrml.volume_from_segmentation(segmentation, lge)
    assert scene.GetNumberOfNodes() == nodes_before, "temporary nodes were left in the scene"
    assert mask.same_geometry(mrml.volume_from_node(lge)), "the mask is not on the reference grid"
    np.testing.assert_array_equal(mask.array, (labels > 0).astype(np.uint8))
    first = segmentation.GetSegmentation().GetNthSegmentID(0)
    np.testing.assert_array_equal(mrml.volume_from_segmentation(segmentation, lge, [first]).array,
                                  (labels == 1).astype(np.uint8))


def check_labelmap_roi_on_another_grid(scene) -> None:
    """A labelmap ROI on the LGE grid is taken as is; one on a coarser grid is resampled onto the LGE grid."""
    lge = add_test_volume(scene)
    labels = two_labels()
    same_grid = add_test_volume(scene, "ROI", labels, labelmap=True)
    np.testing.assert_array_equal(mrml.volume_from_roi(same_grid, lge).array, (labels > 0).astype(np.uint8))
    coarse = add_test_volume(scene, "coarse ROI", np.ones((1, 2, 1), np.uint8), labelmap=True)
    coarse_matrix = oblique_ijk_to_ras()
    coarse_matrix[:3, :3] *= 3.0  # 3x the spacing, same first voxel: covers LGE indices -1.5 .. 3n - 1.5
    coarse.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(coarse_matrix))
    expected = np.zeros(SHAPE, np.uint8)
    expected[0:2, 0:5, 0:2] = 1
    np.testing.assert_array_equal(mrml.volume_from_roi(coarse, lge).array, expected)


def check_empty_roi_is_refused(scene) -> None:
    """An empty segment, a segmentation without segments and an unknown segment id raise InputError naming it."""
    lge = add_test_volume(scene)
    no_segments = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "No segments")
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Empty")
    empty.SetReferenceImageGeometryParameterFromVolumeNode(lge)
    mrml._register_segmentation_converters()
    empty.GetSegmentation().AddEmptySegment("heart")
    filled = add_segmentation(scene, lge, two_labels(), "Filled")
    for node, segment_ids in ((no_segments, None), (empty, None), (filled, ["no such segment"])):
        try:
            mrml.volume_from_segmentation(node, lge, segment_ids)
        except InputError as error:
            assert node.GetName() in str(error), f"the message does not name the segmentation: {error}"
        else:
            raise AssertionError(f"segmentation '{node.GetName()}' with {segment_ids} gave a mask")


def check_results_named_placed_and_input_untouched(scene) -> None:
    """Results become "<input> <key>" nodes in the input's folder; the input node is not modified."""
    lge = add_test_volume(scene)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), "Study")
    hierarchy.SetItemParent(hierarchy.GetItemByDataNode(lge) or hierarchy.CreateItem(folder, lge), folder)
    voxels, modified = slicer.util.arrayFromVolume(lge).copy(), (lge.GetMTime(), lge.GetImageData().GetMTime())

    volume = mrml.volume_from_node(lge)
    results = {"enhanced": volume.with_array(volume.array * 2), "roi": volume.with_array(two_labels())}
    nodes = mrml.add_result_nodes(scene, results, lge, labelmaps={"roi"})
    again = mrml.add_result_nodes(scene, {"enhanced": results["enhanced"]}, lge)
    mrml.show_overlay(scene, lge, nodes["enhanced"], 0.5, label_node=nodes["roi"])

    assert (nodes["enhanced"].GetName(), nodes["roi"].GetName()) == ("LGE enhanced", "LGE roi")
    assert again["enhanced"].GetName() != "LGE enhanced", "a second result reused the first one's name"
    assert nodes["roi"].IsA("vtkMRMLLabelMapVolumeNode") and not nodes["enhanced"].IsA("vtkMRMLLabelMapVolumeNode")
    for node in nodes.values():
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == folder, f"'{node.GetName()}' not in folder"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(nodes["enhanced"]), voxels * 2)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(lge), voxels)
    assert (lge.GetMTime(), lge.GetImageData().GetMTime()) == modified, "the input node was modified"


def check_results_follow_the_input_transform(scene) -> None:
    """Results of an input under a transform go under the same transform; the input keeps voxels and geometry.

    (The input's own modified time is not compared here: MRML touches it when another node observes its transform.)
    """
    lge = add_test_volume(scene)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "Registration")
    lge.SetAndObserveTransformNodeID(transform.GetID())
    voxels, image_modified = slicer.util.arrayFromVolume(lge).copy(), lge.GetImageData().GetMTime()
    volume = mrml.volume_from_node(lge)
    node = mrml.add_result_nodes(scene, {"enhanced": volume}, lge)["enhanced"]
    assert node.GetTransformNodeID() == transform.GetID(), "the result is not under the input's transform"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(lge), voxels)
    np.testing.assert_allclose(node_ijk_to_ras(lge), oblique_ijk_to_ras(), atol=1e-9)
    assert lge.GetImageData().GetMTime() == image_modified, "the input's voxels were modified"
    assert lge.GetTransformNodeID() == transform.GetID()


def check_results_off_grid_are_refused(scene) -> None:
    """A result whose origin differs from the input's raises GeometryError instead of a misaligned overlay."""
    lge = add_test_volume(scene)
    volume = mrml.volume_from_node(lge)
    shifted = Volume(volume.array, volume.spacing, tuple(np.add(volume.origin, 1.0)), volume.direction)
    try:
        mrml.add_result_nodes(scene, {"enhanced": shifted}, lge)
    except GeometryError as error:
        assert "origin" in str(error), f"the message does not name the difference: {error}"
    else:
        raise AssertionError("a result off the input grid was added")


def check_overlay(scene) -> None:
    """show_overlay sets background, foreground, opacity and label layer of every slice view, and draws the label
    layer as outlines, so the ROI does not hide the result."""
    for class_name in ("vtkMRMLSliceCompositeNode", "vtkMRMLSliceNode"):
        for layout in ("Red", "Green"):
            if scene.GetNumberOfNodesByClass(class_name) < 2:  # slicer-core; Slicer has its own views
                scene.AddNewNodeByClass(class_name).SetLayoutName(layout)
    slice_nodes = mrml._nodes_of_class(scene, "vtkMRMLSliceNode")
    for slice_node in slice_nodes:
        slice_node.SetUseLabelOutline(False)
    lge = add_test_volume(scene)
    enhanced = add_test_volume(scene, "enhanced")
    roi = add_test_volume(scene, "roi", two_labels(), labelmap=True)
    mrml.show_overlay(scene, lge, enhanced, 0.3)
    assert not any(node.GetUseLabelOutline() for node in slice_nodes), "label outlines changed without a label"
    mrml.show_overlay(scene, lge, enhanced, 0.3, label_node=roi)
    for composite in mrml._nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
        layers = (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID(), composite.GetLabelVolumeID())
        assert layers == (lge.GetID(), enhanced.GetID(), roi.GetID()), f"slice view layers are {layers}"
        assert abs(composite.GetForegroundOpacity() - 0.3) < 1e-9
    outlined = [node.GetLayoutName() for node in slice_nodes if node.GetUseLabelOutline()]
    assert len(outlined) == len(slice_nodes) >= 2, f"the ROI is drawn filled (outlines only in {outlined})"


def check_file_round_trip(scene) -> None:
    """A node written to NRRD comes back with its voxels and RAS geometry, read by Slicer and by io.read_volume."""
    from .io import read_volume

    lge = add_test_volume(scene)
    with tempfile.TemporaryDirectory() as folder:
        path = mrml.write_node_to_file(lge, Path(folder) / "lge.nrrd")
        loaded = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "loaded by Slicer")
        storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        assert storage.ReadData(loaded), f"Slicer could not read {path}"
        copy = mrml.add_volume_node(scene, read_volume(path), "from file")
    for node in (loaded, copy):
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), slicer.util.arrayFromVolume(lge))
        np.testing.assert_allclose(node_ijk_to_ras(node), oblique_ijk_to_ras(), atol=1e-6)


CHECKS = (
    check_volume_round_trip,
    check_lps_is_ras_with_x_y_negated,
    check_volume_is_a_copy,
    check_only_scalar_volumes_are_read,
    check_segmentation_mask,
    check_labelmap_roi_on_another_grid,
    check_empty_roi_is_refused,
    check_results_named_placed_and_input_untouched,
    check_results_follow_the_input_transform,
    check_results_off_grid_are_refused,
    check_overlay,
    check_file_round_trip,
)
