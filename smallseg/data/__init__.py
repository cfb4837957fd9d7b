"""Deterministic synthetic data with exact ground truth, and COCO JSON I/O.

- :mod:`smallseg.data.remote_sensing` – GeoTIFF aerial scenes with cars and small buildings.
- :mod:`smallseg.data.medical` – CT-like DICOM series with lung nodules, NIfTI labels.
- :mod:`smallseg.data.microscopy` – fluorescence nuclei images with instance label TIFFs.
- :mod:`smallseg.data.coco_json` – cut label rasters into tiles and write COCO JSON with RLE masks.
- :mod:`smallseg.data.recipe` – regenerate the train/val/test splits described in ``datasets/*.yaml``.

Submodules import their heavy dependencies (rasterio, SimpleITK) lazily; import the one you need.
"""
