"""Paths of the third-party test files in ../shared/data (see each folder's SOURCES.md)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(
    os.environ.get("ATOMICSPI_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
CRYODRGN = SHARED / "cryodrgn"
if not SHARED.is_dir():  # missing data is an error, never a skip
    raise FileNotFoundError(f"shared test data not found at {SHARED}; set ATOMICSPI_SHARED_DATA")
