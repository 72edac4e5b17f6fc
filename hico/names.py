"""Names shared by the models, the losses, the methods, the evaluation and the app: one place, no torch.

The three embedding LEVELS (``local``, ``medium``, ``global``, finest first) are what HiCoNet's projection heads
return and what :mod:`hico.eval.features` pools; each is built on one MAP of the feature pyramid, chosen among
:data:`PYRAMID_MAPS` by ``ModelConfig.levels`` (or, without the pyramid, on one of :data:`NO_FPN_MAPS`).

The loss TERMS of each method (``loss.kind``), with the one line the Curves page and the notebooks show, are here
too (:func:`term_names` of a run's config); :mod:`hico.methods` returns them from its forward.
"""

from __future__ import annotations

from typing import Any

LEVELS: tuple[str, str, str] = ("local", "medium", "global")
"""The three embedding levels, finest first: the heads' outputs and the feature levels of the evaluation."""

PYRAMID_MAPS: tuple[str, ...] = ("p2", "p3", "p4", "p5")
"""FPN output maps; ``pK`` is built on ResNet stage ``cK`` and has stride ``2**K`` (1/4 .. 1/32)."""

NO_FPN_MAPS: tuple[str, str, str] = ("c2", "c4", "c5")
"""Backbone stages standing in for the pyramid maps of a model without FPN (64 / 256 / 512 channels)."""

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


# loss.kind -> the loss settings that method reads, each with its label and what it means *for that method* (the
# Train page shows these and nothing else: lambda weighs peer against cross-level terms for HiCo, but the
# cross-entropy terms for USCL; MoCo and BYOL read neither alpha nor beta)
KNOBS: dict[str, dict[str, tuple[str, str]]] = {
    "hico": {
        "lam": ("lambda", "weight of the peer-level terms; 1 - lambda weighs the cross-level ones"),
        "alpha": ("alpha", "label smoothing of the softened cross-entropy"),
        "beta": ("beta", "weight of the softened cross-entropy on the labelled videos"),
        "temperature": ("temperature", "of every InfoNCE term: lower makes the loss stricter"),
    },
    "uscl": {
        "lam": ("lambda", "weight of the two cross-entropy terms added to NT-Xent"),
        "temperature": ("temperature", "of NT-Xent"),
    },
    "moco": {
        "temperature": ("temperature", "of the InfoNCE over the key and the queued negatives"),
        "momentum": ("momentum", "of the key encoder (an exponential moving average of the query encoder)"),
        "queue_size": ("queue size", "negatives kept from earlier batches"),
    },
    "byol": {"momentum": ("tau", "momentum of the target network")},
}
