"""Scoring instance predictions of small objects.

- :func:`evaluate` (:mod:`smallseg.metrics.evaluation`): the one call — COCO mask AP / AP_small... and AR,
  Boundary AP / IoU, precision / recall / F1 at IoU 0.5, counting error.
- :mod:`smallseg.metrics.coco`: pycocotools' COCOeval run per overlap component (identical numbers, scales to
  dense scenes).
- :mod:`smallseg.metrics.boundary`: boundaries on crops (reference or fixed width).
- :mod:`smallseg.metrics.counting`: TP / FP / FN, F1, counting error.
- :mod:`smallseg.metrics.objects`: objects as cropped masks and full-image RLEs built from crops.
"""

from __future__ import annotations

__all__ = ["evaluate", "Evaluation"]


def __getattr__(name: str):
    # Lazy: `import smallseg.metrics` stays cheap (pycocotools/scipy load on first use).
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("smallseg.metrics.evaluation"), name)
    raise AttributeError(f"module 'smallseg.metrics' has no attribute {name!r}")
