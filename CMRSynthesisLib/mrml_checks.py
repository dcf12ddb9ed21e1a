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


def add_test_sequence(scene, name: str = "MOLLI", values: tuple = ("300", "100", "200"), shifted: int | None = None):
    """A numeric-index sequence node whose item at index value v holds 1000 v + (0, 1, 2, ...) on the oblique grid
    (added out of order, so the sequence sorts them); the item number `shifted` lies 1 mm off that grid."""
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    sequence.SetIndexName("InversionTime")
    sequence.SetIndexUnit("ms")
    for number, value in enumerate(values):
        item = slicer.vtkMRMLScalarVolumeNode()
        slicer.util.updateVolumeFromArray(item, np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
                                          + 1000.0 * float(value))
        matrix = oblique_ijk_to_ras()
        if number == shifted:
            matrix[0, 3] += 1.0
        item.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
        sequence.SetDataNodeAtValue(item, value)
    return sequence


def check_sequence_as_4d_volume(scene) -> None:
    """A volume sequence becomes one (t, z, y, x) Volume: items in the sequence's order, on the items' grid, with
    the index values; a copy, so the sequence's items are left as they were."""
    sequence = add_test_sequence(scene)
    items = [slicer.util.arrayFromVolume(sequence.GetNthDataNode(t)).copy() for t in range(3)]
    series = mrml.volume_from_sequence(sequence)
    assert series.array.shape == (3, *SHAPE), f"shape {series.array.shape}"
    np.testing.assert_array_equal(series.array, np.stack(items))
    np.testing.assert_array_equal(series.array[:, 0, 0, 0], [100000.0, 200000.0, 300000.0])  # sorted by index
    assert series.metadata["index_values"] == ["100", "200", "300"], series.metadata
    assert (series.metadata["index_name"], series.metadata["index_unit"]) == ("InversionTime", "ms")
    grid = mrml.volume_from_node(add_test_volume(scene))
    assert series.same_geometry(grid), "the 4D volume is not on the items' grid"
    series.array[...] = -1
    for t, before in enumerate(items):
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(sequence.GetNthDataNode(t)), before)


def check_unusable_sequences_are_refused(scene) -> None:
    """Items on different grids, an empty sequence and a sequence of colour volumes raise InputError naming it."""
    mixed = add_test_sequence(scene, "Mixed", shifted=2)
    empty = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "Empty")
    colour = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "Colour")
    vector = slicer.vtkMRMLVectorVolumeNode()
    slicer.util.updateVolumeFromArray(vector, np.zeros(SHAPE + (3,), np.uint8))
    colour.SetDataNodeAtValue(vector, "0")
    for sequence, expected in ((mixed, "origin"), (empty, "no items"), (colour, "components")):
        try:
            mrml.volume_from_sequence(sequence)
        except InputError as error:
            assert sequence.GetName() in str(error) and expected in str(error), f"unclear message: {error}"
        else:
            raise AssertionError(f"sequence '{sequence.GetName()}' was read as one 4D volume")


def check_mask_on_a_sequence_grid(scene) -> None:
    """A T1 fit mask (segmentation or labelmap) is placed on the grid of a sequence's first item, which is not a
    node of the scene, exactly as on a volume node of the scene."""
    sequence = add_test_sequence(scene)
    item = sequence.GetNthDataNode(0)
    labels = two_labels()
    lge = add_test_volume(scene)
    for roi in (add_segmentation(scene, lge, labels), add_test_volume(scene, "ROI", labels, labelmap=True)):
        mask = mrml.volume_from_roi(roi, item)
        np.testing.assert_array_equal(mask.array, (labels > 0).astype(np.uint8))
        assert mask.same_geometry(mrml.volume_from_node(item)), f"the mask of '{roi.GetName()}' is off the item grid"


def check_quantity_display(scene) -> None:
    """T1 maps get the shared 256-entry lipari colour node and a 0-2000 ms window, ECV maps 0-100 %; the voxels
    are left alone and a second T1 map reuses the first one's colour node."""
    from . import display

    t1, ecv, again = (add_test_volume(scene, name) for name in ("T1", "ECV", "T1 again"))
    for node in (t1, ecv, again):
        node.CreateDefaultDisplayNodes()
    voxels = slicer.util.arrayFromVolume(t1).copy()
    colours = mrml.show_quantity(scene, t1, "t1_native")
    tables = scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")
    assert "lipari" in colours.GetName() and colours.GetNumberOfColors() == 256, colours.GetName()
    first = [0.0, 0.0, 0.0, 0.0]
    colours.GetColor(0, first)
    np.testing.assert_allclose(first, display.colour_table("t1_native")[0], atol=1 / 255)  # stored as 8 bits
    for node, quantity, window in ((t1, "t1_native", (0.0, 2000.0)), (ecv, "ecv", (0.0, 100.0))):
        if node is ecv:
            mrml.show_quantity(scene, ecv, quantity)
        shown = node.GetDisplayNode()
        assert not shown.GetAutoWindowLevel(), f"{quantity}: the window is still automatic"
        np.testing.assert_allclose((shown.GetWindowLevelMin(), shown.GetWindowLevelMax()), window, atol=1e-6)
    assert ecv.GetDisplayNode().GetColorNodeID() != colours.GetID(), "ECV shown in the T1 colour map"
    assert mrml.show_quantity(scene, again, "t1_native") is colours, "a second T1 map got its own colour node"
    assert again.GetDisplayNode().GetColorNodeID() == colours.GetID()
    assert scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode") == tables + 1, "colour nodes were not shared"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(t1), voxels)


def check_aha_segments_node(scene) -> None:
    """Labels 1-16 become 16 segments named as the AHA model, in its order, each one's mask its label on the
    reference grid; no helper nodes are left and the reference map is untouched."""
    from .analysis.aha import AHA_SEGMENTS

    reference = add_test_volume(scene, "T1 map")
    voxels = slicer.util.arrayFromVolume(reference).copy()
    labels = (np.arange(np.prod(SHAPE)) % 17).reshape(SHAPE).astype(np.uint8)  # 0 and every segment 1-16
    volumes_before = scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode")
    node = mrml.add_segments_node(scene, mrml.volume_from_node(reference).with_array(labels), AHA_SEGMENTS,
                                  "T1 map AHA segments", reference_node=reference)
    segmentation = node.GetSegmentation()
    names = [segmentation.GetNthSegment(index).GetName() for index in range(segmentation.GetNumberOfSegments())]
    assert names == list(AHA_SEGMENTS), f"segments {names}"
    for number in range(1, 17):
        segment_id = segmentation.GetNthSegmentID(number - 1)
        mask = mrml.volume_from_segmentation(node, reference, [segment_id])
        np.testing.assert_array_equal(mask.array, (labels == number).astype(np.uint8), err_msg=names[number - 1])
    assert scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode") == volumes_before, "helper volumes left in the scene"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(reference), voxels)


def check_table_node(scene) -> None:
    """Rows of dicts become a table: one column per key in order, numbers as doubles (missing: NaN), text kept."""
    rows = [{"segment": 1, "name": "basal anterior", "mean": 1010.5, "n": 40, "missing": False},
            {"segment": 2, "name": "basal anteroseptal", "mean": None, "n": 0, "missing": True}]
    table = mrml.add_table_node(scene, rows, "AHA t1_native").GetTable()
    columns = [table.GetColumnName(index) for index in range(table.GetNumberOfColumns())]
    assert columns == ["segment", "name", "mean", "n", "missing"] and table.GetNumberOfRows() == 2, columns
    mean, name = table.GetColumnByName("mean"), table.GetColumnByName("name")
    assert mean.GetValue(0) == 1010.5 and np.isnan(mean.GetValue(1)), "a missing value is not NaN"
    assert name.GetValue(1) == "basal anteroseptal" and table.GetColumnByName("missing").GetValue(1) == 1.0


def check_image_node(scene) -> None:
    """A (rows, cols, 3) picture becomes a 3-component uint8 volume of cols x rows x 1 voxels, upright and not
    mirrored in an axial view: the first column towards the patient's right (screen left), the first row anterior."""
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0] = np.arange(4) * 60  # red grows to the right, green downwards
    rgb[..., 1] = np.arange(3)[:, None] * 100
    node = mrml.add_image_node(scene, rgb, "AHA bullseye")
    image = node.GetImageData()
    assert image.GetDimensions() == (4, 3, 1) and image.GetNumberOfScalarComponents() == 3, image.GetDimensions()
    assert image.GetScalarType() == vtk.VTK_UNSIGNED_CHAR
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), rgb[None])
    ras = node_ijk_to_ras(node)
    top_left, top_right, bottom_left = (ras @ np.array([i, j, 0.0, 1.0]) for i, j in ((0, 0), (3, 0), (0, 2)))
    assert top_right[0] < top_left[0], "the picture is mirrored in an axial view (columns run to the patient's right)"
    assert bottom_left[1] < top_left[1], "the picture is upside down in an axial view (rows run anterior)"


def check_png_read_as_rgb(scene) -> None:
    """An RGBA PNG as matplotlib writes it (the bullseye) reads back as its RGB pixels, top row first."""
    from matplotlib import image as matplotlib_image

    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[0, :, 0] = 255  # top row red, left column blue
    rgb[:, 0, 2] = 200
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bullseye.png"
        matplotlib_image.imsave(path, rgb)
        np.testing.assert_array_equal(mrml.rgb_from_png(path), rgb)
        try:
            mrml.rgb_from_png(Path(folder) / "missing.png")
        except InputError as error:
            assert "missing.png" in str(error), error
        else:
            raise AssertionError("a missing PNG was read")


def check_insertion_points(scene) -> None:
    """Two placed points come out in world RAS, or in the frame of a map under a transform; another number of
    points raises InputError naming the markups node, which is left as it was."""
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "RV insertion points")
    placed = np.array([[10.0, -20.0, 30.0], [-12.5, 40.0, 3.0]])
    for point in placed:
        points.AddControlPoint(*point)
    moved = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "Registration")
    shift = np.eye(4)
    shift[:3, 3] = (5.0, -7.0, 2.0)  # the map's voxels lie 5 mm right, 7 mm posterior, 2 mm superior in world
    moved.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    reference = add_test_volume(scene, "T1 map")
    np.testing.assert_allclose(mrml.control_points_ras(points, reference, count=2), placed, atol=1e-9)
    reference.SetAndObserveTransformNodeID(moved.GetID())
    np.testing.assert_allclose(mrml.control_points_ras(points, reference, count=2), placed - shift[:3, 3], atol=1e-9)
    points.SetAndObserveTransformNodeID(moved.GetID())
    np.testing.assert_allclose(mrml.control_points_ras(points), placed + shift[:3, 3], atol=1e-9)
    try:
        mrml.control_points_ras(points, count=3)
    except InputError as error:
        assert points.GetName() in str(error) and "3" in str(error), f"unclear message: {error}"
    else:
        raise AssertionError("two points were accepted where three are needed")
    np.testing.assert_allclose([points.GetNthControlPointPosition(index) for index in range(2)], placed)


def oblique_cine(frames: int = 3) -> Volume:
    """A cine Volume (t, z, y, x) on the oblique test grid (in LPS), frame t holding 100 t + (0, 1, 2, ...), with
    trigger times 0, 40, 80, ... ms."""
    ijk_to_lps = mrml.LPS_TO_RAS @ oblique_ijk_to_ras()
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    voxels = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    array = np.stack([voxels + 100.0 * frame for frame in range(frames)])
    return Volume(array, tuple(spacing), tuple(ijk_to_lps[:3, 3]), tuple((ijk_to_lps[:3, :3] / spacing).ravel()),
                  {"trigger_times_ms": [40.0 * frame for frame in range(frames)]})


def check_plot_chart(scene) -> None:
    """A chart gets one line series per chosen column of a table, against the x column, named after the column, the
    emphasised ones wider; a column the table lacks is refused with an InputError naming it."""
    rows = [{"frame": frame, "global (%)": -2.0 * frame, "segment 1 (%)": -1.5 * frame, "segment 2 (%)": -frame}
            for frame in range(1, 5)]
    table = mrml.add_table_node(scene, rows, "Strain curves")
    chart = mrml.add_plot_chart(scene, table, "frame", ["global (%)", "segment 1 (%)", "segment 2 (%)"], "Strain",
                                x_title="frame", y_title="strain (%)", emphasised=["global (%)"])
    assert (chart.GetXAxisTitle(), chart.GetYAxisTitle(), chart.GetTitle()) == ("frame", "strain (%)", "Strain")
    series = [chart.GetNthPlotSeriesNode(index) for index in range(chart.GetNumberOfPlotSeriesNodes())]
    assert [node.GetName() for node in series] == ["global (%)", "segment 1 (%)", "segment 2 (%)"]
    for node in series:
        assert node.GetTableNode() is table and node.GetXColumnName() == "frame", node.GetName()
        assert node.GetYColumnName() == node.GetName() and node.GetMarkerStyle() == node.MarkerStyleNone
    assert [node.GetLineWidth() for node in series] == [3, 1, 1], "the emphasised series is not the wide one"
    assert len({tuple(node.GetColor()) for node in series}) == 3, "two series share a colour"
    try:
        mrml.add_plot_chart(scene, table, "time (ms)", ["global (%)"], "Strain")
    except InputError as error:
        assert "time (ms)" in str(error) and "Strain curves" in str(error), error
    else:
        raise AssertionError("a chart was made of a column the table lacks")


def check_synchronized_sequence(scene) -> None:
    """A 4D result joins the cine's browser as a sequence indexed like the cine: its proxy shows the frame the cine's
    proxy shows, lies in the cine proxy's folder and under its transform, and NaN voxels (no value) are drawn
    transparent; a result with another frame count or off the cine's grid is refused."""
    cine = oblique_cine(3)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "Registration")
    reference = add_test_volume(scene, "Reference")
    reference.SetAndObserveTransformNodeID(transform.GetID())
    sequence = mrml.add_cine_sequence_node(scene, cine, "Cine", reference_node=reference)
    strain = cine.with_array(-cine.array / 100.0)
    strain.array[:, 0] = np.nan  # the first slice has no value
    result, proxy = mrml.add_synchronized_sequence(scene, strain, "Cine strain", sequence)
    assert [result.GetNthIndexValue(t) for t in range(3)] == [sequence.GetNthIndexValue(t) for t in range(3)]
    assert (result.GetIndexName(), result.GetIndexUnit()) == (sequence.GetIndexName(), sequence.GetIndexUnit())
    (browser,) = mrml._nodes_of_class(scene, "vtkMRMLSequenceBrowserNode")
    assert browser.IsSynchronizedSequenceNode(result.GetID()) and browser.GetProxyNode(result) is proxy
    cine_proxy = browser.GetProxyNode(sequence)
    for frame in (2, 1):
        browser.SetSelectedItemNumber(frame)
        mrml._update_sequence_proxies(scene, browser)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(proxy), strain.array[frame])
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(cine_proxy), cine.array[frame])
    np.testing.assert_allclose(node_ijk_to_ras(proxy), oblique_ijk_to_ras(), atol=1e-6)
    assert proxy.GetName() == result.GetName() == "Cine strain" and not proxy.IsA("vtkMRMLLabelMapVolumeNode")
    assert proxy.GetTransformNodeID() == transform.GetID(), "the result is not under the cine's transform"
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(proxy)) == hierarchy.GetItemParent(
        hierarchy.GetItemByDataNode(cine_proxy)), "the result is not in the cine's folder"
    for bad, expected in ((strain.with_array(strain.array[:2]), InputError),
                          (Volume(strain.array, strain.spacing, tuple(np.add(strain.origin, 1.0)), strain.direction),
                           GeometryError)):
        try:
            mrml.add_synchronized_sequence(scene, bad, "Bad", sequence)
        except expected as error:
            assert "Bad" in str(error), error
        else:
            raise AssertionError(f"a result of shape {bad.array.shape} at {bad.origin} joined the cine")


def check_label_sequence(scene) -> None:
    """Labels of every frame play with the cine as labelmaps, their values named in the proxy's colour table."""
    cine = oblique_cine(2)
    sequence = mrml.add_cine_sequence_node(scene, cine, "Cine")
    labels = cine.with_array(np.stack([two_labels(), 3 * (two_labels() > 0)]).astype(np.uint8))
    result, proxy = mrml.add_synchronized_sequence(scene, labels, "Cine labels", sequence,
                                                   label_names=["LV blood", "LV myocardium", "RV blood"])
    assert proxy.IsA("vtkMRMLLabelMapVolumeNode") and result.GetNthDataNode(1).IsA("vtkMRMLLabelMapVolumeNode")
    colours = proxy.GetDisplayNode().GetColorNode()
    assert [colours.GetColorName(value) for value in range(4)] == ["background", "LV blood", "LV myocardium",
                                                                   "RV blood"]
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(proxy), labels.array[0])


def check_sequence_browser(scene) -> None:
    """A sequence's browser is found where it plays, as master or synchronised; one without a browser gets a new
    one (with a proxy), unless asked only to find one."""
    cine = mrml.add_cine_sequence_node(scene, oblique_cine(2), "Cine")
    (browser,) = mrml._nodes_of_class(scene, "vtkMRMLSequenceBrowserNode")
    assert mrml.sequence_browser(scene, cine) is browser
    result, _ = mrml.add_synchronized_sequence(scene, oblique_cine(2), "Result", cine)
    assert mrml.sequence_browser(scene, result, create=False) is browser
    alone = add_test_sequence(scene, "MOLLI")
    assert mrml.sequence_browser(scene, alone, create=False) is None
    made = mrml.sequence_browser(scene, alone)
    assert made is not browser and made.GetMasterSequenceNode() is alone and made.GetProxyNode(alone) is not None


def check_nan_voxels_transparent(scene) -> None:
    """hide_nan_voxels: a map's NaN voxels get alpha 0 in the slice-view display pipeline, its finite values (large
    ones too) alpha 255; without it NaN is drawn opaque."""
    from vtk.util import numpy_support

    values = np.full(SHAPE, np.nan, dtype=np.float32)
    values[1, 2, 1:4] = [-12.0, 0.0, 3.0e5]
    node = add_test_volume(scene, "Strain", values)
    node.CreateDefaultDisplayNodes()
    mrml.show_quantity(scene, node, "peak_circumferential_strain")
    display = node.GetDisplayNode()

    def alpha() -> np.ndarray:
        display.SetInputImageDataConnection(node.GetImageDataConnection())
        display.UpdateImageDataPipeline()
        producer = display.GetOutputImageDataConnection().GetProducer()
        producer.Update()
        rgba = numpy_support.vtk_to_numpy(producer.GetOutputDataObject(0).GetPointData().GetScalars())
        return rgba.reshape(*SHAPE, 4)[..., 3]

    assert (alpha() == 255).all(), "the test expects NaN to be drawn opaque by default"
    mrml.hide_nan_voxels(node)
    np.testing.assert_array_equal(alpha(), np.where(np.isnan(values), 0, 255))


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
    check_sequence_as_4d_volume,
    check_unusable_sequences_are_refused,
    check_mask_on_a_sequence_grid,
    check_quantity_display,
    check_aha_segments_node,
    check_table_node,
    check_image_node,
    check_png_read_as_rgb,
    check_insertion_points,
    check_plot_chart,
    check_synchronized_sequence,
    check_label_sequence,
    check_sequence_browser,
    check_nan_voxels_transparent,
)
