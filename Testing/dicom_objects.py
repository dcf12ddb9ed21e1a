"""Small DICOM data sets for the tests: one place that builds the file meta and identifiers."""

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def new_dicom(sop_class: str, **elements) -> Dataset:
    """A data set of `sop_class` with file meta (explicit VR little endian), a fresh SOP instance UID and the given
    elements set by keyword."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    return dataset
