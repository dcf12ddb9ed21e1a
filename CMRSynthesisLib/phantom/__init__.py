"""Synthetic short-axis cardiac MR subjects: anatomy and acquisition drawn from an id (`anatomy`), the beating heart
and its true motion (`motion`), images of every contrast on one geometry (`contrast`), and whole studies written
with a `subject.json` that names every file by role (`study`)."""

from .anatomy import (
    FIELD_3T_RATIOS,
    LABELS,
    OOD_FIRST_ID,
    REFERENCE_TISSUES,
    SPLITS,
    TERRITORY_CENTRES_DEG,
    TISSUE_OF_LABEL,
    Acquisition,
    Geometry,
    LeftVentricle,
    RightVentricle,
    Scar,
    Subject,
    Thorax,
    Tissue,
    make_subject,
    slice_depths_mm,
    split_of,
    subject_ids,
)
from .contrast import (
    LOOK_LOCKER_RATE_PER_MS,
    bssfp_signal,
    molli_inversion_times,
    oedema_mask,
    oedema_tissue,
    render_cine,
    render_lge,
    render_molli,
    render_t1_map,
    render_t2w,
    shading_field,
)
from .motion import (
    cine_phases,
    cine_trigger_times_ms,
    contraction,
    lagrangian_displacement_mm,
    render_labels,
    true_strain,
)
from .study import SUBJECT_FILES, lge_study, multi_sequence_study, tissue_masks, true_ecv_percent, write_subject

__all__ = [
    "FIELD_3T_RATIOS", "LABELS", "LOOK_LOCKER_RATE_PER_MS", "OOD_FIRST_ID", "REFERENCE_TISSUES", "SPLITS",
    "SUBJECT_FILES", "TERRITORY_CENTRES_DEG", "TISSUE_OF_LABEL", "Acquisition", "Geometry", "LeftVentricle",
    "RightVentricle", "Scar", "Subject", "Thorax", "Tissue", "bssfp_signal", "cine_phases", "cine_trigger_times_ms",
    "contraction", "lagrangian_displacement_mm", "lge_study", "make_subject", "molli_inversion_times",
    "multi_sequence_study", "oedema_mask", "oedema_tissue", "render_cine", "render_labels", "render_lge",
    "render_molli", "render_t1_map", "render_t2w", "shading_field", "slice_depths_mm", "split_of", "subject_ids",
    "tissue_masks", "true_ecv_percent", "true_strain", "write_subject",
]
