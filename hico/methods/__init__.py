"""Methods: one module per pretraining method, on one small interface (:class:`hico.methods.base.Method`).

A method's YAML file selects it with ``loss.kind`` and configures it; :func:`build_method` makes the module that
the trainer drives without knowing which method it is::

    >>> from hico.config import load_method
    >>> from hico.models import HiCoNet
    >>> cfg = load_method("byol")
    >>> model = HiCoNet(cfg.model)
    >>> method = build_method(cfg, model)
    >>> sorted(method.terms)
    ['byol', 'total']

This file imports no torch; the method classes themselves are imported when a method is built. The names and
meanings of each method's loss terms (``TERMS``, :func:`term_names`, which the app reads on its first screen) live
in :mod:`hico.names`, beside the level names, and are re-exported here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from hico.names import SOFT_CE_SKIPPED, TERMS, term_names

if TYPE_CHECKING:
    from torch import nn

    from hico.config import LossConfig, MethodConfig
    from hico.methods.base import Method

# loss.kind -> the module and class of the method
CLASSES: dict[str, tuple[str, str]] = {
    "hico": ("hico.methods.contrastive", "HiCo"),
    "uscl": ("hico.methods.contrastive", "USCL"),
    "moco": ("hico.methods.moco", "MoCo"),
    "byol": ("hico.methods.byol", "BYOL"),
}
KINDS: tuple[str, ...] = tuple(CLASSES)

__all__ = ["CLASSES", "KINDS", "SOFT_CE_SKIPPED", "TERMS", "build_loss", "build_method", "method_class", "term_names"]


def method_class(kind: str) -> type[Method]:
    """The :class:`~hico.methods.base.Method` subclass that ``loss.kind`` names."""
    if kind not in CLASSES:
        raise ValueError(f"loss.kind must be one of {KINDS}, got {kind!r}")
    module, name = CLASSES[kind]
    return getattr(importlib.import_module(module), name)


def build_method(cfg: MethodConfig, model: nn.Module) -> Method:
    """The method ``cfg`` describes, for ``model`` (the trained network; momentum copies are made from it)."""
    return method_class(cfg.loss.kind)(cfg, model)


def build_loss(loss: LossConfig, dim: int = 128) -> nn.Module:
    """The loss module of ``loss`` alone (``dim``: the embedding size); it validates its own arguments."""
    return method_class(loss.kind).build_loss(loss, dim)


def uses_labels(cfg: MethodConfig) -> bool:
    """Whether training feeds labels to the loss: some labels are kept and the method has a labelled term."""
    return cfg.data.label_rate > 0 and method_class(cfg.loss.kind).labels_needed(cfg.loss)
