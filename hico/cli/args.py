"""argparse types shared by the ``hico`` commands (the settings' own checks are in :mod:`hico.checks`)."""

from __future__ import annotations

import argparse


def frames_arg(text: str) -> int | None:
    """argparse type of a frames-per-video option: a positive int, or ``all`` / ``0`` (None: every frame)."""
    if text.lower() in ("all", "0"):
        return None
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of frames or 'all', got {text!r}")
    return n


def C_arg(text: str) -> float | None:
    """``--C`` of ``hico probe`` and ``hico study``: a positive number, or ``auto`` (None: chosen per fold by a
    grouped cross-validation inside the training videos, :func:`hico.eval.probe.choose_C`)."""
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number nor auto: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 or auto, got {text}")
    return value
