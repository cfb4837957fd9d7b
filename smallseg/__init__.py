"""smallseg: find and outline small objects in images far larger than a GPU tile.

Public API (stable names; import from ``smallseg`` directly):

- :func:`evaluate` – score an instance prediction against ground truth (COCO AP, small-object AP,
  Boundary IoU / Boundary AP, F1, counting error).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
