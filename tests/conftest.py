"""Shared test fixtures and helpers."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """A tiny model on tiny slices: a second thread only adds synchronisation, and on a machine shared with other
    jobs OpenMP threads spin-waiting for a core make the forward pass many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
