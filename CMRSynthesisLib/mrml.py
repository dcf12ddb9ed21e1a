"""MRML scene <-> Volume: read volume and segmentation nodes as Volumes, add results as new nodes, overlay them.

Everything works on a `vtkMRMLScene` passed in, so the same code runs inside 3D Slicer and on the Qt-free
`slicer-core` package. Slicer stores a node's voxel-to-world matrix in RAS; a Volume is in LPS (as ITK): the two
differ by the sign of the x and y axes. Nodes are read as copies and never modified.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .errors import InputError
from .method_tasks import display_name  # how identifiers read for the user (label names)
from .volume import Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse: also RAS -> LPS


def volume_from_node(node) -> Volume:
    """A copy of a scalar or labelmap volume node's voxels (z, y, x) with its geometry in LPS.

    The geometry is the node's own (local) one; a parent transform is not applied.
    """
    image = node.GetImageData() if node is not None and node.IsA("vtkMRMLVolumeNode") else None
    scalars = image.GetPointData().GetScalars() if image is not None else None
    name = node.GetName() if node is not None else None
    if scalars is None or scalars.GetNumberOfTuples() == 0:
        raise InputError(f"node '{name}' is not a volume node with voxels")
    if scalars.GetNumberOfComponents() != 1:
        raise InputError(f"volume '{name}' has {scalars.GetNumberOfComponents()} components per voxel; "
                         "a scalar (single-component) volume is needed")
    shape = tuple(reversed(image.GetDimensions()))
    array = numpy_support.vtk_to_numpy(scalars).reshape(shape).copy()
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    ijk_to_lps = LPS_TO_RAS @ slicer.util.arrayFromVTKMatrix(ijk_to_ras)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    direction = ijk_to_lps[:3, :3] / spacing
    return Volume(array, tuple(spacing), tuple(ijk_to_lps[:3, 3]), tuple(direction.ravel()), {"name": name})


def volume_from_segmentation(segmentation_node, reference_volume_node,
                             segment_ids: Iterable[str] | None = None) -> Volume:
    """Binary mask (uint8, 1 inside) of the union of segments, on the reference volume's voxel grid.

    segment_ids: the segments to join; all segments when None. Raises InputError for an unknown segment id or
    when the mask is empty on the reference grid.
    """
    _register_segmentation_converters()
    name = segmentation_node.GetName()
    segmentation = segmentation_node.GetSegmentation()
    available = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    chosen = available if segment_ids is None else list(segment_ids)
    unknown = [segment_id for segment_id in chosen if segment_id not in available]
    if unknown:
        raise InputError(f"segmentation '{name}' has no segment {unknown}; it has {available}")
    if not chosen:
        raise InputError(f"segmentation '{name}' has no segments")
    ids = vtk.vtkStringArray()
    for segment_id in chosen:
        ids.InsertNextValue(segment_id)
    scene = segmentation_node.GetScene()
    with _temporary_nodes(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        exported = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference_volume_node)
        if not exported:
            raise InputError(f"segments {chosen} of segmentation '{name}' could not be exported onto the grid "
                             f"of '{reference_volume_node.GetName()}'")
        labels = volume_from_node(labelmap)
    mask = (labels.array > 0).astype(np.uint8)
    if not mask.any():
        raise InputError(f"segments {chosen} of segmentation '{name}' are empty on the voxel grid of "
                         f"'{reference_volume_node.GetName()}': draw the heart region, or leave the ROI out")
    return Volume(mask, labels.spacing, labels.origin, labels.direction, {"name": name})


def volume_from_roi(roi_node, reference_volume_node) -> Volume:
    """Binary mask of a region of interest given as a segmentation (all segments) or a labelmap (label > 0),
    on the reference volume's voxel grid. A labelmap on another grid is resampled (nearest neighbour)."""
    if roi_node.IsA("vtkMRMLSegmentationNode"):
        return volume_from_segmentation(roi_node, reference_volume_node)
    if not roi_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"ROI '{roi_node.GetName()}' is a {roi_node.GetClassName()}; "
                         "use a segmentation or a labelmap volume")
    _register_segmentation_converters()
    scene = roi_node.GetScene()
    with _temporary_nodes(scene):
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentation_node.SetName(roi_node.GetName())
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(roi_node, segmentation_node):
            raise InputError(f"labelmap '{roi_node.GetName()}' could not be read as a region of interest")
        return volume_from_segmentation(segmentation_node, reference_volume_node)


def volume_from_sequence(sequence_node) -> Volume:
    """A copy of a sequence of scalar volumes as one 4D Volume (t, z, y, x), items in the sequence's order, on their
    common grid in LPS. Metadata: name, index_name, index_unit and index_values (one text per item).

    Raises InputError naming the sequence when it is empty, holds other nodes than scalar volumes, or its items lie
    on different voxel grids (shape, spacing, origin or direction).
    """
    name = sequence_node.GetName()
    count = sequence_node.GetNumberOfDataNodes()
    if count == 0:
        raise InputError(f"sequence '{name}' has no items")
    volumes = []
    for index in range(count):
        try:
            volume = volume_from_node(sequence_node.GetNthDataNode(index))
        except InputError as error:
            raise InputError(f"item {index + 1} of sequence '{name}': {error}") from error
        if volumes:
            volumes[0].require_same_geometry(volume, f"items 1 and {index + 1} of sequence '{name}'")
        volumes.append(volume)
    first = volumes[0]
    metadata = {"name": name, "index_name": sequence_node.GetIndexName(), "index_unit": sequence_node.GetIndexUnit(),
                "index_values": [sequence_node.GetNthIndexValue(index) for index in range(count)]}
    return Volume(np.stack([volume.array for volume in volumes]), first.spacing, first.origin, first.direction,
                  metadata)


def control_points_ras(markups_node, reference_node=None, count: int | None = None) -> np.ndarray:
    """(n, 3) positions in mm of a markups node's control points: world RAS, or, with a reference volume node, RAS
    in the reference's own frame (its parent transform undone), where volume_from_node places its voxels.

    count: how many control points there must be; InputError naming the node otherwise.
    """
    name = markups_node.GetName()
    found = markups_node.GetNumberOfControlPoints()
    if count is not None and found != count:
        raise InputError(f"markups '{name}' has {found} control points; place exactly {count}")
    points = np.array([markups_node.GetNthControlPointPositionWorld(index) for index in range(found)],
                      dtype=float).reshape(found, 3)
    parent = reference_node.GetParentTransformNode() if reference_node is not None else None
    if parent is not None:
        from_world = vtk.vtkGeneralTransform()
        parent.GetTransformFromWorld(from_world)
        points = np.array([from_world.TransformPoint(point) for point in points], dtype=float).reshape(found, 3)
    return points


def add_volume_node(scene, volume: Volume, name: str, *, labelmap: bool = False, reference_node=None):
    """A new scalar (or labelmap) volume node holding a copy of a 3D Volume with its geometry.

    The name is made unique in the scene. With a reference node, the new node gets the reference's parent
    transform and subject-hierarchy folder, so it lies over the reference.
    """
    if volume.array.ndim != 3:
        raise InputError(f"'{name}': a volume node holds a 3D (z, y, x) array; got shape {volume.array.shape}")
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    slicer.util.updateVolumeFromArray(node, _vtk_compatible(volume.array, name))
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(LPS_TO_RAS @ volume.index_to_physical()))
    node.CreateDefaultDisplayNodes()
    if reference_node is not None:
        node.SetAndObserveTransformNodeID(reference_node.GetTransformNodeID())
        _place_beside(node, reference_node)
    return node


def add_result_nodes(scene, results: Mapping[str, Volume], reference_node,
                     labelmaps: Iterable[str] = ()) -> dict[str, object]:
    """One new node per result, named "<reference name> <result key>", over the reference.

    Every result must lie on the reference node's voxel grid (GeometryError otherwise), so overlays match
    voxel for voxel. Keys in `labelmaps` become labelmap nodes.
    """
    reference = volume_from_node(reference_node)
    labelmaps = set(labelmaps)
    for key, volume in results.items():
        reference.require_same_geometry(volume, f"the result '{key}' and the input '{reference_node.GetName()}'")
    return {key: add_volume_node(scene, volume, f"{reference_node.GetName()} {key}", labelmap=key in labelmaps,
                                 reference_node=reference_node)
            for key, volume in results.items()}


def show_overlay(scene, background_node, foreground_node, opacity: float = 0.5, label_node=None) -> None:
    """Show `foreground_node` over `background_node` at `opacity` (0..1) in every slice view.

    `label_node`, when given, goes in the label layer, and every slice view is switched to draw labels as outlines
    (`vtkMRMLSliceNode.UseLabelOutline`), so the mask marks its region without hiding the image under it.
    """
    for composite in _nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
        composite.SetBackgroundVolumeID(background_node.GetID())
        composite.SetForegroundVolumeID(foreground_node.GetID() if foreground_node is not None else None)
        composite.SetForegroundOpacity(opacity)
        if label_node is not None:
            composite.SetLabelVolumeID(label_node.GetID())
    if label_node is not None:
        for slice_node in _nodes_of_class(scene, "vtkMRMLSliceNode"):
            slice_node.SetUseLabelOutline(True)


def show_quantity(scene, node, quantity: str):
    """Display a map node in its quantity's colour map and window (T1: lipari, 0-2000 ms native, 0-1000 ms
    post-contrast; ECV 0-100 %; see CMRSynthesisLib.display). The colour node is shared per quantity and returned."""
    from . import display

    name = f"CMRSynthesis {display.display_for(quantity).colormap_name} ({quantity})"
    colours = next((candidate for candidate in _nodes_of_class(scene, "vtkMRMLColorTableNode")
                    if candidate.GetName() == name), None)
    if colours is None:
        table = display.colour_table(quantity)
        colours = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
        colours.SetTypeToUser()
        colours.SetNumberOfColors(len(table))
        for index, (red, green, blue, alpha) in enumerate(table):
            colours.SetColor(index, red, green, blue, alpha)
    low, high = display.window(quantity, volume_from_node(node).array)
    display_node = node.GetDisplayNode()
    display_node.SetAndObserveColorNodeID(colours.GetID())
    display_node.AutoWindowLevelOff()
    display_node.SetWindowLevelMinMax(low, high)
    return colours


def add_segments_node(scene, labels: Volume, names: Sequence[str], name: str, reference_node=None):
    """A segmentation node with one named segment per label value 1..len(names) present in `labels` (z, y, x)."""
    _register_segmentation_converters()
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    with _temporary_nodes(scene):
        labelmap = add_volume_node(scene, labels, f"{name} labels", labelmap=True)
        colours = _label_colours(scene, names, f"{name} colours")
        labelmap.GetDisplayNode().SetAndObserveColorNodeID(colours.GetID())
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation):
            raise InputError(f"the labels of '{name}' could not be turned into segments")
    segmentation.CreateDefaultDisplayNodes()
    if reference_node is not None:
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
        segmentation.SetAndObserveTransformNodeID(reference_node.GetTransformNodeID())
        _place_beside(segmentation, reference_node)
    return segmentation


def add_table_node(scene, rows: Sequence[Mapping[str, object]], name: str):
    """A table node with one row per dict (columns: the first row's keys; a missing number is NaN)."""
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    columns = list(rows[0]) if rows else []
    for column in columns:
        numeric = all(isinstance(row[column], (int, float)) or row[column] is None for row in rows)
        array = vtk.vtkDoubleArray() if numeric else vtk.vtkStringArray()
        array.SetName(column)
        for row in rows:
            value = row[column]
            if numeric:
                array.InsertNextValue(float("nan") if value is None else float(value))
            else:
                array.InsertNextValue("" if value is None else str(value))
        table.AddColumn(array)
    return table


def add_image_node(scene, rgb: np.ndarray, name: str):
    """A vector volume node showing an (rows, cols, 3) uint8 RGB picture (e.g. the bullseye) upright in an axial
    slice view: columns run to the patient's left (screen right) and rows to posterior (screen down), 1 mm per
    pixel, as Slicer places a picture file it loads."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"'{name}': an RGB picture must be (rows, cols, 3); got {rgb.shape}")
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", scene.GenerateUniqueName(name))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(rgb[None], dtype=np.uint8))
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(LPS_TO_RAS))
    node.CreateDefaultDisplayNodes()
    return node


def rgb_from_png(path: str | Path) -> np.ndarray:
    """(rows, cols, 3) uint8 RGB of an 8-bit PNG file, top row first; an alpha channel is dropped, grey repeated."""
    reader = vtk.vtkPNGReader()
    if not Path(path).is_file() or not reader.CanReadFile(str(path)):
        raise InputError(f"{path}: not a PNG file")
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    scalars = image.GetPointData().GetScalars()
    if scalars is None or scalars.GetDataType() != vtk.VTK_UNSIGNED_CHAR:
        raise InputError(f"{path}: not an 8-bit PNG picture")
    columns, rows, _ = image.GetDimensions()
    pixels = numpy_support.vtk_to_numpy(scalars).reshape(rows, columns, -1)[::-1]  # VTK's first row is the bottom
    channels = pixels[..., :3] if pixels.shape[2] >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    return np.ascontiguousarray(channels)


def write_node_to_file(node, path: str | Path, *, protected: Iterable[str | Path] = ()) -> Path:
    """Write a volume node's voxels and geometry to NRRD / NIfTI (chosen by the suffix); returns the path."""
    from .io import write_volume

    return write_volume(volume_from_node(node), path, protected=protected)


def write_mask_to_file(roi_node, reference_volume_node, path: str | Path) -> Path:
    """Write the mask of a segmentation or labelmap node on the reference volume's grid (see volume_from_roi) to NRRD
    / NIfTI (chosen by the suffix); returns the path."""
    from .io import write_volume

    return write_volume(volume_from_roi(roi_node, reference_volume_node), path)


def write_cine_to_file(sequence_node, path: str | Path, *, frame_interval_ms: float | None = None) -> Path:
    """Write a volume sequence as a 4D cine file with its trigger times (see cine_from_sequence_node and
    io.write_cine: a trigger-time sidecar beside it); returns the path."""
    from .io import write_cine

    return write_cine(cine_from_sequence_node(sequence_node, frame_interval_ms=frame_interval_ms), path)


def inversion_times_from_index(sequence_node) -> str:
    """A sequence's index values as comma-separated text ("100,180,...") when its index is the inversion time in ms
    (its name holds "inversion", its unit is ms or none); else empty."""
    if "inversion" not in sequence_node.GetIndexName().lower() or sequence_node.GetIndexUnit() not in ("", "ms"):
        return ""
    return ",".join(sequence_node.GetNthIndexValue(index) for index in range(sequence_node.GetNumberOfDataNodes()))


def _vtk_compatible(array: np.ndarray, name: str) -> np.ndarray:
    """A C-contiguous array of a type VTK renders: bool -> uint8, 64-bit integers -> int32 (range-checked)."""
    if array.dtype == bool:
        return np.ascontiguousarray(array, dtype=np.uint8)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        limits = np.iinfo(np.int32)
        if array.size and (array.min() < limits.min or array.max() > limits.max):
            raise InputError(f"'{name}': values {array.min()}..{array.max()} do not fit a 32-bit integer volume")
        return np.ascontiguousarray(array, dtype=np.int32)
    return np.ascontiguousarray(array)


def _segment_palette(count: int) -> list[tuple[float, float, float]]:
    """`count` distinguishable colours (matplotlib's tab20)."""
    from matplotlib import colormaps

    return [tuple(colormaps["tab20"](index % 20)[:3]) for index in range(count)]


def _nodes_of_class(scene, class_name: str) -> list:
    return [scene.GetNthNodeByClass(index, class_name) for index in range(scene.GetNumberOfNodesByClass(class_name))]


def _place_beside(node, reference_node) -> None:
    """Put `node` in the subject-hierarchy folder of `reference_node`, when the reference has an item there."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    reference_item = hierarchy.GetItemByDataNode(reference_node) if hierarchy is not None else 0
    if not reference_item:
        return
    parent = hierarchy.GetItemParent(reference_item)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:  # slicer-core: no subject-hierarchy plugin creates items for new nodes
        hierarchy.CreateItem(parent, node)


@contextlib.contextmanager
def _temporary_nodes(scene) -> Iterator[None]:
    """Remove from the scene, on exit, every node added inside the block (helpers, display and colour nodes)."""
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        yield
    finally:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in added:
            if node.GetID() not in before and node.GetScene() is scene:  # removing one may remove its display
                scene.RemoveNode(node)


def _register_segmentation_converters() -> None:
    """Slicer registers the segmentation representation converters at start-up; plain slicer-core does not."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def cine_from_sequence_node(sequence_node, *, frame_interval_ms: float | None = None) -> Volume:
    """A copy of a volume sequence as a cine: (t, z, y, x) Volume (see volume_from_sequence) with metadata
    "trigger_times_ms" from the index values when the index unit is a time unit (ms, s, ...).

    For a sequence indexed by anything else (a frame number, no unit), `frame_interval_ms` spaces the frames from 0,
    with a note in metadata "notes"; without it, InputError naming the sequence and its index. InputError too when the
    index values do not increase (see io.cine.check_cine) or the items cannot form one 4D volume.
    """
    from .io.cine import check_cine, times_to_ms

    series = volume_from_sequence(sequence_node)
    name, index, unit = series.metadata["name"], series.metadata["index_name"], series.metadata["index_unit"]
    times = times_to_ms(series.metadata["index_values"], unit, f"sequence '{name}'")
    notes, source = [], f"the index values of sequence '{name}' ({unit})"
    if times is None:
        if frame_interval_ms is None:
            raise InputError(f"sequence '{name}' is indexed by '{index}' in '{unit or 'no unit'}', not by time (ms or "
                             "s), so the frames' trigger times are unknown; give frame_interval_ms (ms between frames)")
        times = [frame * float(frame_interval_ms) for frame in range(series.array.shape[0])]
        source = "the frame interval given"
        notes.append(f"sequence '{name}' is indexed by '{index}' in '{unit or 'no unit'}', not by time: the frames were "
                     f"spaced {frame_interval_ms:g} ms apart (the frame interval given)")
    cine = series.with_array(series.array, trigger_times_ms=times, time_source=source, notes=notes)
    check_cine(cine, f"sequence '{name}'", min_frames=1)
    return cine


def add_cine_sequence_node(scene, cine: Volume, name: str, reference_node=None):
    """A new sequence node holding a copy of a cine, one scalar volume per frame on the cine's geometry, indexed by
    "time" in "ms" (the trigger times), with a sequence browser node and its proxy volume node so the cine plays.

    The names are made unique in the scene. With a reference node, the proxy gets the reference's parent transform
    and subject-hierarchy folder. Returns the vtkMRMLSequenceNode; InputError for an unusable cine (check_cine).
    """
    from .io.cine import check_cine

    check_cine(cine, f"the cine '{name}'", min_frames=1)
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", scene.GenerateUniqueName(name))
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("ms")
    sequence.SetIndexType(sequence.NumericIndex)
    ijk_to_ras = slicer.util.vtkMatrixFromArray(LPS_TO_RAS @ cine.index_to_physical())
    for frame, time in zip(cine.array, cine.metadata["trigger_times_ms"]):
        item = slicer.vtkMRMLScalarVolumeNode()
        slicer.util.updateVolumeFromArray(item, _vtk_compatible(frame, name))
        item.SetIJKToRASMatrix(ijk_to_ras)
        sequence.SetDataNodeAtValue(item, f"{float(time):.10g}")
    if not scene.IsNodeClassRegistered("vtkMRMLSequenceBrowserNode"):  # slicer-core: no Sequences module
        scene.RegisterNodeClass(slicer.vtkMRMLSequenceBrowserNode())
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", scene.GenerateUniqueName(f"{name} browser"))
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    steps = np.diff(cine.metadata["trigger_times_ms"])
    if steps.size:  # play in real time
        browser.SetPlaybackRateFps(float(1000.0 / np.median(steps)))
    _update_sequence_proxies(scene, browser)
    proxy = browser.GetProxyNode(sequence)
    proxy.SetName(sequence.GetName())
    proxy.CreateDefaultDisplayNodes()
    if reference_node is not None:
        proxy.SetAndObserveTransformNodeID(reference_node.GetTransformNodeID())
        _place_beside(proxy, reference_node)
    return sequence


def _update_sequence_proxies(scene, browser) -> None:
    """Create or update the browser's proxy nodes with the Sequences module's logic (a temporary one on slicer-core)."""
    modules = getattr(slicer, "modules", None)
    if modules is not None and hasattr(modules, "sequences"):
        modules.sequences.logic().UpdateProxyNodesFromSequences(browser)
        return
    logic = slicer.vtkSlicerSequencesLogic()
    logic.SetMRMLScene(scene)
    try:
        logic.UpdateProxyNodesFromSequences(browser)
    finally:
        logic.SetMRMLScene(None)


# --- plots (panel)


def add_plot_chart(scene, table_node, x_column: str, y_columns: Sequence[str], name: str, *, x_title: str = "",
                   y_title: str = "", emphasised: Iterable[str] = ()):
    """A plot chart node with one line series per column of `y_columns` in `table_node`, against `x_column`.

    Each series is named after its column (the legend shows it); the `emphasised` ones are drawn 3 pixels wide in
    tab10's colours, the others 1 pixel wide in tab20b's (none of tab10's; repeated after 20). The chart's name is
    made unique in the scene and is its title. Raises InputError naming the columns the table lacks.
    """
    from itertools import cycle

    from matplotlib import colormaps

    table = table_node.GetTable()
    missing = [column for column in (x_column, *y_columns) if table.GetColumnByName(column) is None]
    if missing:
        raise InputError(f"table '{table_node.GetName()}' has no column {missing}")
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(name))
    chart.SetTitle(chart.GetName())
    chart.SetXAxisTitle(x_title)
    chart.SetYAxisTitle(y_title)
    emphasised = set(emphasised)
    strong, light = iter(colormaps["tab10"].colors), cycle(colormaps["tab20b"].colors)
    for column in y_columns:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", column)
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName(x_column)
        series.SetYColumnName(column)
        series.SetPlotType(series.PlotTypeScatter)  # points in table order, joined by lines
        series.SetMarkerStyle(series.MarkerStyleNone)
        series.SetLineStyle(series.LineStyleSolid)
        series.SetLineWidth(3 if column in emphasised else 1)
        series.SetColor(*(next(strong) if column in emphasised else next(light)))
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart


def sequence_browser(scene, sequence_node, *, create: bool = True):
    """The first sequence browser node of the scene that plays `sequence_node` (as master or synchronised), its proxy
    nodes brought up to date. Without one: a new browser with `sequence_node` as master when `create`, else None."""
    for browser in _nodes_of_class(scene, "vtkMRMLSequenceBrowserNode"):
        if browser.IsSynchronizedSequenceNode(sequence_node.GetID(), True):
            _update_sequence_proxies(scene, browser)
            return browser
    if not create:
        return None
    if not scene.IsNodeClassRegistered("vtkMRMLSequenceBrowserNode"):  # slicer-core: no Sequences module
        scene.RegisterNodeClass(slicer.vtkMRMLSequenceBrowserNode())
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode",
                                      scene.GenerateUniqueName(f"{sequence_node.GetName()} browser"))
    browser.SetAndObserveMasterSequenceNodeID(sequence_node.GetID())
    _update_sequence_proxies(scene, browser)
    return browser


def add_synchronized_sequence(scene, series: Volume, name: str, sequence_node, *,
                              label_names: Sequence[str] | None = None) -> tuple:
    """A new sequence node holding the frames of `series` (t, z, y, x), played in step with `sequence_node`.

    Frame t becomes the item at `sequence_node`'s t-th index value (same index name, unit and type) and the new
    sequence joins `sequence_node`'s browser (see sequence_browser), so both show the same frame. `series` must have
    one frame per item of `sequence_node` (InputError) on its items' voxel grid (GeometryError). The new proxy node
    gets the parent transform and subject-hierarchy folder of `sequence_node`'s proxy. With `label_names`, the items
    are labelmaps whose value i is named label_names[i - 1] in the proxy's colour table. Names are made unique in
    the scene. Returns (sequence node, proxy node).
    """
    count = sequence_node.GetNumberOfDataNodes()
    if series.array.ndim != 4 or series.array.shape[0] != count:
        raise InputError(f"'{name}' has shape {series.array.shape}: it needs one frame (t, z, y, x) for each of the "
                         f"{count} items of sequence '{sequence_node.GetName()}'")
    volume_from_node(sequence_node.GetNthDataNode(0)).require_same_geometry(
        series, f"the items of sequence '{sequence_node.GetName()}' and '{name}'")
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", scene.GenerateUniqueName(name))
    sequence.SetIndexName(sequence_node.GetIndexName())
    sequence.SetIndexUnit(sequence_node.GetIndexUnit())
    sequence.SetIndexType(sequence_node.GetIndexType())
    ijk_to_ras = slicer.util.vtkMatrixFromArray(LPS_TO_RAS @ series.index_to_physical())
    for index, frame in enumerate(series.array):
        item = slicer.vtkMRMLLabelMapVolumeNode() if label_names is not None else slicer.vtkMRMLScalarVolumeNode()
        slicer.util.updateVolumeFromArray(item, _vtk_compatible(frame, name))
        item.SetIJKToRASMatrix(ijk_to_ras)
        sequence.SetDataNodeAtValue(item, sequence_node.GetNthIndexValue(index))
    browser = sequence_browser(scene, sequence_node)
    browser.AddSynchronizedSequenceNode(sequence)
    _update_sequence_proxies(scene, browser)
    proxy, reference = browser.GetProxyNode(sequence), browser.GetProxyNode(sequence_node)
    proxy.SetName(sequence.GetName())
    proxy.CreateDefaultDisplayNodes()
    if label_names is not None:
        proxy.GetDisplayNode().SetAndObserveColorNodeID(_label_colours(scene, label_names, f"{name} colours").GetID())
    proxy.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
    _place_beside(proxy, reference)
    return sequence, proxy


def hide_nan_voxels(node) -> None:
    """Draw the voxels of a scalar volume node that hold NaN (no value, e.g. strain outside the myocardium) fully
    transparent in slice views: its display's threshold keeps every finite value, and NaN fails every comparison."""
    limit = float(np.finfo(np.float32).max)
    display = node.GetDisplayNode()
    display.SetApplyThreshold(True)
    display.SetThreshold(-limit, limit)


def _label_colours(scene, names: Sequence[str], name: str):
    """A colour table node: 0 transparent background, value i named names[i - 1] in a distinguishable colour."""
    colours = scene.AddNewNodeByClass("vtkMRMLColorTableNode", scene.GenerateUniqueName(name))
    colours.SetTypeToUser()
    colours.SetNumberOfColors(len(names) + 1)
    colours.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for value, (label, rgb) in enumerate(zip(names, _segment_palette(len(names))), start=1):
        colours.SetColor(value, label, *rgb, 1.0)
    return colours


# --- results of a registered method (panel)


def add_method_outputs(scene, outputs: Sequence, volumes: Mapping[str, Volume], inputs: Mapping[str, object],
                       summary: Mapping | None = None, *, source_name: str = "", opacity: float = 0.5) -> dict:
    """New nodes for the outputs of a registered method, each over the input it lies on, and shown.

    outputs: the method's `OutputRole`s (methods.registry) in declaration order, the first its main result; volumes:
    the written outputs by name (those absent are skipped); inputs: the input node of each role (a volume node, a
    sequence node for a cine or MOLLI input, or None); summary: the command's facts ("frames", "ed_frame",
    "es_frame", "label_values"). Each output is named "<its input's name> <output name>" (`source_name` when its
    input has no node) and checked to lie on its input's grid (GeometryError otherwise).

    By kind: images, maps and SDs become volumes (a map with a `quantity` in its colour map), masks labelmaps, labels
    segmentations with named segments (see label_names). A cine-shaped output (t, z, y, x) of a cine sequence becomes
    a sequence that plays with the cine (labelmap items for labels and masks) when it holds every frame, else one
    node per frame, named after the frame (from 1) and its phase ("ED", "ES") when the summary gives them. Shown: the
    main output's input in the background (a sequence's proxy), the main image (else the first) over it at `opacity`,
    the first mask or labels sequence in the label layer. Returns {output name or "<output> frame <n>": node}.
    """
    summary = summary or {}
    nodes, shown = {}, {}
    for role in outputs:
        if role.name not in volumes:
            continue
        volume, grid = volumes[role.name], inputs.get(role.grid_input(inputs))
        name = f"{grid.GetName() if grid is not None else source_name} {role.name}"
        if grid is not None:
            source = grid.GetNthDataNode(0) if grid.IsA("vtkMRMLSequenceNode") else grid
            volume_from_node(source).require_same_geometry(volume, f"the result '{role.name}' and the input "
                                                                   f"'{grid.GetName()}'")
        if grid is not None and grid.IsA("vtkMRMLSequenceNode") and volume.array.ndim == 4:
            added, display = _add_frame_outputs(scene, role, volume, grid, name, summary)
        elif role.kind == "labels":
            added, display = {role.name: add_segments_node(scene, volume, label_names(role, volume, summary), name,
                                                           reference_node=_shown_node(scene, grid))}, None
        else:
            display = add_volume_node(scene, volume, name, labelmap=role.kind == "mask",
                                      reference_node=_shown_node(scene, grid))
            added = {role.name: display}
        nodes.update(added)
        if display is not None:
            shown[role.name] = display
            if role.quantity and role.kind not in ("labels", "mask"):
                show_quantity(scene, display, role.quantity)
    images = [shown[role.name] for role in outputs if role.name in shown and role.kind not in ("labels", "mask")]
    labels = [shown[role.name] for role in outputs if role.name in shown and role.kind in ("labels", "mask")]
    background = _shown_node(scene, inputs.get(outputs[0].grid_input(inputs)))
    if background is None and images:
        background, images = images[0], images[1:]
    if background is not None:
        show_overlay(scene, background, images[0] if images else None, opacity,
                     label_node=labels[0] if labels else None)
    return nodes


def label_names(role, volume: Volume, summary: Mapping | None = None) -> tuple[str, ...]:
    """Names of the values 1, 2, ... of a labels or mask output (an `OutputRole`): its own `labels` when it declares
    them; else the command's "label_values" ({identifier: value}: lv_blood 1 -> "LV blood"); else the output's name
    for a mask and "label 1", "label 2", ... up to the largest value."""
    declared = getattr(role, "labels", None)
    if declared:
        return tuple(declared)
    values = {int(value): name for name, value in ((summary or {}).get("label_values") or {}).items()
              if int(value) > 0}
    if role.kind == "mask" and not values:
        return (display_name(role.name),)
    largest = max([*values, int(volume.array.max()) if volume.array.size else 0, 1])
    return tuple(display_name(values[value]) if value in values else f"label {value}"
                 for value in range(1, largest + 1))


def _shown_node(scene, node):
    """The node slice views show for an input: a sequence's proxy in its browser, else the node itself (or None)."""
    if node is not None and node.IsA("vtkMRMLSequenceNode"):
        return sequence_browser(scene, node).GetProxyNode(node)
    return node


def _add_frame_outputs(scene, role, volume: Volume, cine, name: str, summary: Mapping) -> tuple[dict, object]:
    """({key: node}, node to show or None) for a cine-shaped output of the sequence `cine` (see add_method_outputs).
    The frames are the summary's "frames" (from 0), by default all of the cine's; InputError when their number is not
    the output's."""
    count, frames = cine.GetNumberOfDataNodes(), volume.array
    reported = summary.get("frames")
    numbers = list(range(count)) if reported is None else [int(frame) for frame in reported]
    if len(numbers) != len(frames):
        raise InputError(f"the command wrote {role.name} of {len(frames)} frame(s) for frames {numbers} of the cine "
                         f"'{cine.GetName()}'")
    names = label_names(role, volume, summary) if role.kind in ("labels", "mask") else None
    if numbers == list(range(count)) and count > 1:
        sequence, proxy = add_synchronized_sequence(scene, volume, name, cine, label_names=names)
        return {role.name: sequence}, proxy
    shown = _shown_node(scene, cine)
    phases = {summary.get(f"{phase.lower()}_frame"): f" ({phase})" for phase in ("ED", "ES")}
    nodes = {}
    for number, frame in zip(numbers, frames):
        title = f"{name}, frame {number + 1}{phases.get(number, '')}"
        nodes[f"{role.name} frame {number + 1}"] = (
            add_segments_node(scene, volume.with_array(frame), names, title, reference_node=shown) if names is not None
            else add_volume_node(scene, volume.with_array(frame), title, reference_node=shown))
    return nodes, None
