"""Small DICOM data sets for the tests: one place that builds the file meta and identifiers."""

from pydicom.dataset import Dataset

from CMRSynthesisLib.io.dicom_export import new_dataset


def new_dicom(sop_class: str, **elements) -> Dataset:
    """A data set of `sop_class` with file meta (explicit VR little endian), a fresh SOP instance UID and the given
    elements set by keyword."""
    dataset = new_dataset(sop_class)
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    return dataset
