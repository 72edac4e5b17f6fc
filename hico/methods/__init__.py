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

This file imports no torch: the app reads the names and meanings of a run's loss terms (:func:`term_names`) on
its first screen. The method classes themselves are imported when a method is built.
"""

from __future__ import annotations

import importlib
import math
from typing import TYPE_CHECKING, Any

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

# loss.kind -> every term its forward returns, in that order ("total" first, then the sums, then their parts),
# each with the one line the Curves page and the notebooks show
TERMS: dict[str, dict[str, str]] = {
    "hico": {
        "total": "con + beta x soft_ce: what the optimizer minimises",
        "con": "lam x (local + medium + global) + (1 - lam) x (global_local + global_medium)",
        "local": "InfoNCE of the two views' local embeddings (finest pyramid level)",
        "medium": "InfoNCE of the two views' medium embeddings",
        "global": "InfoNCE of the two views' global embeddings",
        "global_local": "InfoNCE of global vectors against local vectors, both ways (0 when switched off)",
        "global_medium": "InfoNCE of global vectors against medium vectors, both ways (0 when switched off)",
        "soft_ce": "softened cross-entropy of the classifier on the labelled pairs, both views",
    },
    "uscl": {
        "total": "global + lam x ce: what the optimizer minimises",
        "global": "NT-Xent of the two views' projections",
        "ce": "cross-entropy of each view's class logits on the labelled pairs, summed over the views",
    },
    "moco": {
        "total": "the MoCo loss: what the optimizer minimises",
        "moco": "InfoNCE of each query against its momentum key, the queued keys (and UCL's hard negatives)",
    },
    "byol": {
        "total": "the BYOL loss: what the optimizer minimises",
        "byol": "|p1 - z2'|^2 + |p2 - z1'|^2 of unit vectors: predictions against the momentum target's projections",
    },
}


def term_names(config: dict[str, Any]) -> dict[str, str]:
    """The loss terms (name -> one-line meaning) of a run, from its config.yaml as a dict; torch-free."""
    loss = config.get("loss") or {}
    kind = str(loss.get("kind", "hico"))
    names = dict(TERMS.get(kind, {"total": "what the optimizer minimises"}))
    if kind == "hico" and loss.get("smoothing") == "reference" and "soft_ce" in loss.get("terms", ("soft_ce",)):
        names["soft_ce_skipped"] = SOFT_CE_SKIPPED
    return names


SOFT_CE_SKIPPED = (
    "1 when the batch held exactly one labelled sample: the authors' smoothing divides by N - 1 = 0, so soft_ce "
    "was 0 for that batch (hico-code); its epoch mean is the fraction of such batches"
)


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
    contrastive = {t: 1 for t in ("local", "medium", "global") if t in on}  # InfoNCE calls per term
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
