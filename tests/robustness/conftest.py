"""The robustness suite trains nothing big: one torch thread per test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every robustness test runs on one torch thread (tests/conftest.py's ``one_thread``)."""
