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
