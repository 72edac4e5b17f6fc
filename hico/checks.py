"""The argument checks of every settings dataclass (model, augmentation, training, fine-tuning): one wording.

Each raises :class:`ValueError` with one line that names the setting (``label``, e.g. ``"train.epochs"`` or
``"FinetuneConfig.folds"``), what it must be and the value given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral
from typing import Any


def is_number(v: object) -> bool:
    """A finite int or float (bool is not a number here)."""
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def check_int(label: str, v: object, low: int, extra: str = "") -> int:
    """``v`` as an int when it is an integer (numpy integers too, not bool) ``>= low``; ``extra`` is added to the
    message after the bound (e.g. ``" or None (all frames)"``)."""
    if isinstance(v, bool) or not isinstance(v, Integral) or v < low:
        raise ValueError(f"{label} must be an integer >= {low}{extra}, got {v!r}")
    return int(v)


def check_number(label: str, v: object) -> float:
    """``v`` as a float when it is a finite number."""
    if not is_number(v):
        raise ValueError(f"{label} must be a finite number, got {v!r}")
    return float(v)


def check_choice(label: str, v: Any, choices: Sequence[Any]) -> None:
    """``v`` must be one of ``choices``."""
    if v not in choices:
        raise ValueError(f"{label} must be one of {tuple(choices)}, got {v!r}")
