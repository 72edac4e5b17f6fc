"""Names shared by the models, the losses and the evaluation: one place, no torch.

The three embedding LEVELS (``local``, ``medium``, ``global``, finest first) are what HiCoNet's projection heads
return and what :mod:`hico.eval.features` pools; each is built on one MAP of the feature pyramid, chosen among
:data:`PYRAMID_MAPS` by ``ModelConfig.levels`` (or, without the pyramid, on one of :data:`NO_FPN_MAPS`).
"""

from __future__ import annotations

LEVELS: tuple[str, str, str] = ("local", "medium", "global")
"""The three embedding levels, finest first: the heads' outputs and the feature levels of the evaluation."""

PYRAMID_MAPS: tuple[str, ...] = ("p2", "p3", "p4", "p5")
"""FPN output maps; ``pK`` is built on ResNet stage ``cK`` and has stride ``2**K`` (1/4 .. 1/32)."""

NO_FPN_MAPS: tuple[str, str, str] = ("c2", "c4", "c5")
"""Backbone stages standing in for the pyramid maps of a model without FPN (64 / 256 / 512 channels)."""
