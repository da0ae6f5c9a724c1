"""Fixtures of the curation tests (the helpers are in tests/curate_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from curate_fixtures import make_duplicates_folder


@pytest.fixture
def duplicates_folder(tmp_path) -> tuple[Path, list[Path], dict[str, Path]]:
    root = tmp_path / "source"
    originals, copies = make_duplicates_folder(root)
    return root, originals, copies
