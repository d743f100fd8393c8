"""DICOM in and out: CT and PET series from the scanner, body-weight SUV, DICOM SEG back."""

from cocoseg_monai.errors import DicomError

__all__ = ["DicomError"]
