"""DICOM in and out: CT and PET series from the scanner, body-weight SUV, DICOM SEG back."""

from .common import DicomError

__all__ = ["DicomError"]
