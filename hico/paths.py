"""Where the project's own folders are (the source checkout this package runs from)."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The project folder: the parent of the ``hico`` package."""

SAMPLES = PROJECT_ROOT / "data_samples"
"""The small sample dataset shipped with the project (``hico demo``, ``hico pretrain --preset demo``)."""
