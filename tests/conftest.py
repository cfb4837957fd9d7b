"""Shared test fixtures and helpers: where the real test files are, one torch thread, the tiny test models.

Test modules import the constants directly (``from conftest import RASTERIO_DATA``: tests/ is on ``sys.path``
under pytest) and request the fixtures by name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from smallseg.models import build_model

# Every real file a test reads lies under tests/data (origin and licence of each: tests/data/ORIGIN.md), so the
# suite passes in a fresh clone on any machine; nothing is read from beside the repository.
DATA_DIR = Path(__file__).resolve().parent / "data"
RASTERIO_DATA = DATA_DIR / "rasterio-cc0"  # rasterio's CC0 GeoTIFFs, good and broken
PYDICOM_DATA = DATA_DIR / "pydicom"  # pydicom's test DICOM files: CT, MR, truncated MR, SEG, no meta header

# The two tiny architectures the pipeline tests run: real SmallObjectNets, small enough for a shared 2-core CPU.
# resnet18 cut after 3 stages at output stride 8 (fast on small tiles), and mobilenetv3-small (the shipped
# models' encoder) at output stride 32 with no dilation.
TINY_ENCODERS = {
    "resnet18": dict(encoder_name="resnet18", encoder_depth=3, encoder_output_stride=8),
    "mobilenetv3": dict(encoder_name="tu-mobilenetv3_small_100", encoder_depth=5, encoder_output_stride=32),
}
TINY_DECODER = dict(decoder_pyramid_channels=32, decoder_segmentation_channels=32, refine_channels=(8, 8))


def make_tiny_model(encoder: str = "resnet18", *, seed: int | None = 0, semantic_bias=None, **config):
    """A tiny untrained SmallObjectNet in eval mode.

    Args:
        encoder: a key of ``TINY_ENCODERS``.
        seed: ``torch.manual_seed`` before building, so the random weights are the same in every run
            (``None``: leave the generator as it is).
        semantic_bias: values for the semantic head's bias, one per class plus background: leaning a random
            model towards foreground gives the pipelines objects to decode, stitch and write.
        **config: further ``build_model`` arguments (``classes``, ``in_channels``, ``max_distance_px``,
            ``tile_size_px``, ``input_scale``, ``class_names``, ...); they override the tiny defaults.
    """
    if seed is not None:
        torch.manual_seed(seed)
    model = build_model(**{**TINY_ENCODERS[encoder], **TINY_DECODER, **config})
    if semantic_bias is not None:
        with torch.no_grad():
            model.heads["semantic"].bias[:] = torch.tensor(semantic_bias, dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny-model factory :func:`make_tiny_model` (a fixture so that a test states what it uses)."""
    return make_tiny_model


@pytest.fixture(scope="module")
def one_torch_thread():
    """A tiny model on tiny slices: a second thread only adds synchronisation, and on a machine shared with other
    jobs OpenMP threads spin-waiting for a core make the forward pass many times slower (54 s vs 8 s measured
    for a 30-step training test)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
