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
import math
from typing import TYPE_CHECKING, Any

from hico.names import LEVELS, SOFT_CE_SKIPPED, TERMS, term_names

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

__all__ = [
    "CLASSES", "KINDS", "SOFT_CE_SKIPPED", "TERMS", "build_loss", "build_method", "chance_level", "method_class",
    "term_names",
]  # fmt: skip


def chance_level(config: dict[str, Any], term: str) -> float | None:
    """The value of loss term ``term`` of a run (its config.yaml as a dict) at chance: every candidate of each
    softmax equally likely (embeddings that tell nothing apart, logits all equal); torch-free.

    An InfoNCE of N pairs gathered from every rank (``train.batch_size`` is the global batch, so the number of
    processes does not enter) gives each of its 2N anchors 2N - 1 candidates: ln(2N - 1). HiCo's cross-level
    terms are sums of two such InfoNCE, its ``con`` and ``total`` the weighted sums of the terms switched on; a
    labelled term of K classes is ln K per cross-entropy (assuming every batch holds labelled pairs). MoCo's
    query has 1 + E + s + K candidates (its key, E intra-video negatives, UCL's mixed negative, the K queued
    keys). None where there is no chance level (BYOL, a term switched off, an unknown class count, the authors'
    ``reference`` smoothing, whose targets do not sum to 1).
    """
    loss, data = config.get("loss") or {}, config.get("data") or {}
    kind = str(loss.get("kind", "hico"))
    if term not in TERMS.get(kind, {}):
        return None
    if kind == "moco":
        negatives = int(data.get("negatives", 3)) if data.get("pairs") == "ucl" else 0
        mixed = 1 if int(loss.get("support_size", 0)) > 0 else 0
        return math.log(1 + negatives + mixed + int(loss.get("queue_size", 4096)))
    if kind not in ("hico", "uscl"):
        return None
    n = int((config.get("train") or {}).get("batch_size", 0))
    pairs = math.log(2 * n - 1) if n >= 2 else None
    k = (config.get("model") or {}).get("num_classes")
    classes = math.log(k) if isinstance(k, int) and k >= 2 else None
    labelled = float(data.get("label_rate", 0.0)) > 0
    if kind == "uscl":
        ce = (None if classes is None else 2 * classes) if labelled else 0.0
        lam = float(loss.get("lam", 0.2))
        parts = {"global": pairs, "ce": ce if labelled else None}
        if term == "total":
            return None if pairs is None or ce is None else pairs + lam * ce
        return parts[term]
    on = set(loss.get("terms", ("local", "medium", "global", "global_local", "global_medium", "soft_ce")))
    soft_ce = classes if loss.get("smoothing", "normalized") == "normalized" else None  # both views' mean: ln K
    contrastive = {t: 1 for t in LEVELS if t in on}  # InfoNCE calls per term: 1 per peer term
    contrastive |= {t: 2 for t in ("global_local", "global_medium") if t in on}
    if term in contrastive:
        return None if pairs is None else contrastive[term] * pairs
    if term == "soft_ce":
        return soft_ce if "soft_ce" in on and labelled else None
    if term not in ("con", "total") or (pairs is None and contrastive):
        return None
    lam = float(loss.get("lam", 0.5))
    con = sum((lam if calls == 1 else 1 - lam) * calls * pairs for calls in contrastive.values())
    beta = float(loss.get("beta", 0.2))
    if term == "con" or "soft_ce" not in on or not labelled or beta == 0:
        return con
    return None if soft_ce is None else con + beta * soft_ce


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
