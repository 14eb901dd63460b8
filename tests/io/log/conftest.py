"""Shared helpers for the embedded-log tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIDAL_DATA_DIR", raising=False)
