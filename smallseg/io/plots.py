"""PNG charts of ``smallseg evaluate --plot DIR`` (matplotlib, an optional dependency: ``pip install
'smallseg[plot]'``), and the CSV of the curves' data beside them.

matplotlib is imported only here and only when a chart is drawn, through its object API (``Figure`` +
the Agg canvas): no pyplot global state, no display needed, safe in a thread. Without matplotlib
:func:`require_matplotlib` says so in one line before any scoring starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from smallseg.errors import SmallsegError
from smallseg.io.atomic import atomic_path, write_text_atomic

_BUCKET_COLOURS = {"all": "black", "small": "tab:red", "medium": "tab:orange", "large": "tab:blue"}
_BUCKET_STYLES = {"all": "-", "small": "-", "medium": "--", "large": "-."}  # equal curves stay visible


def require_matplotlib(what: str = "plot") -> None:
    """Raise one line when matplotlib is not installed (``what``: the argument that asked for charts)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SmallsegError(f"{what}: the charts need matplotlib (pip install 'smallseg[plot]'); "
                            "plot=FILE.png writes the TP/FP/FN quick-look without it") from None


def _figure(width_in: float = 6.0, height_in: float = 4.5):
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        # No "Software" / date chunk: the same numbers give the same bytes.
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return path


def write_pr_curves_png(path: str | os.PathLike, curves: Sequence, *, title: str = "") -> Path:
    """Precision over recall, one line per size bucket (``curves``: :class:`smallseg.metrics.plots.PRCurve`),
    each labelled with its AP at that IoU; buckets without GT are listed as such."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for c in curves:
        colour = _BUCKET_COLOURS.get(c.bucket, None)
        if c.precision is None:
            ax.plot([], [], color=colour or "grey", linestyle=":", label=f"{c.bucket}: no GT")
            continue
        ax.plot(c.recall, c.precision, color=colour, linestyle=_BUCKET_STYLES.get(c.bucket, "-"), linewidth=2.2 if c.bucket == "all" else 1.4,
                label=f"{c.bucket}: AP@{c.iou:g} {c.ap:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (interpolated, pycocotools)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title or "precision-recall per size bucket", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def write_score_histogram_png(path: str | os.PathLike, tp_scores: np.ndarray, fp_scores: np.ndarray, *,
                              iou: float = 0.5, title: str = "", bins: int = 20) -> Path:
    """Histogram of the detection scores of true positives (green) and false positives (red) at IoU ``iou``:
    where they separate is where a ``--min-score`` would cut."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    both = np.concatenate([tp_scores, fp_scores])
    if both.size and (both.min() < 0 or both.max() > 1):  # scores outside 0-1 (another tool's): fit the range
        edges = np.linspace(float(both.min()), float(both.max()) + 1e-9, bins + 1)
    ax.hist([tp_scores, fp_scores], bins=edges, color=["tab:green", "tab:red"], stacked=False,
            label=[f"TP ({len(tp_scores)})", f"FP ({len(fp_scores)})"])
    ax.set_xlabel("detection score")
    ax.set_ylabel("detections")
    ax.legend(fontsize=8)
    ax.set_title(title or f"scores of true / false positives at IoU {iou:g}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def write_pr_curves_csv(path: str | os.PathLike, curves: Sequence) -> Path:
    """The curves' numbers: ``bucket,iou,recall,precision`` (one row per bucket and recall threshold; buckets
    without GT have no rows). ``precision`` is written with ``repr`` (round-trips exactly)."""
    lines = ["bucket,iou,recall,precision"]
    for c in curves:
        if c.precision is None:
            continue
        lines.extend(f"{c.bucket},{c.iou!r},{float(r)!r},{float(p)!r}" for r, p in zip(c.recall, c.precision))
    write_text_atomic(path, "\n".join(lines) + "\n")
    return Path(path)
