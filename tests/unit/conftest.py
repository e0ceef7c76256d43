"""Shared fixtures of the unit tests (the helpers that build toy data and compare models are in ``toy.py``)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The caller owns torch's thread count; the unit tests use one (fast and steady on a shared 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
