"""Readers and writers: GeoTIFF, medical volumes (DICOM, NIfTI, MHA, NRRD), vectors."""
