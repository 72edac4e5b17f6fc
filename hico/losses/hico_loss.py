"""HiCo's hierarchical contrastive loss: peer-level, cross-level and softened CE terms (paper eq. 2-9)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from hico.losses.info_nce import info_nce
from hico.losses.soft_ce import SMOOTHINGS, Smoothing, reference_skipped, softened_cross_entropy
from hico.names import LEVELS

__all__ = ["CROSS_PAIRINGS", "HICO_TERMS", "HiCoLoss"]

PEER_TERMS: tuple[str, ...] = LEVELS  # each level against itself
CROSS_TERMS: tuple[str, ...] = ("global_local", "global_medium")
HICO_TERMS: tuple[str, ...] = (*PEER_TERMS, *CROSS_TERMS, "soft_ce")
CrossPairing = Literal["cross_view", "same_view"]
CROSS_PAIRINGS: tuple[str, ...] = ("cross_view", "same_view")

# The info_nce calls of each contrastive term, as ((key, view), (key, view)) with view 0 / 1.
_PEER_PAIRS: dict[str, list[tuple[tuple[str, int], tuple[str, int]]]] = {
    level: [((level, 0), (level, 1))] for level in PEER_TERMS
}
_CROSS_PAIRS: dict[str, dict[str, list[tuple[tuple[str, int], tuple[str, int]]]]] = {
    # eq. 5: the global vector of one view against the local / medium vector of the OTHER view
    "cross_view": {
        f"global_{level}": [(("global", 0), (level, 1)), (("global", 1), (level, 0))] for level in ("local", "medium")
    },
    # the authors' code: global against local / medium of the SAME view
    "same_view": {
        f"global_{level}": [(("global", 0), (level, 0)), (("global", 1), (level, 1))] for level in ("local", "medium")
    },
}


class HiCoLoss(nn.Module):
    """HiCo loss: ``total = con + beta * soft_ce`` with (eq. 6)
    ``con = lam * (local + medium + global) + (1 - lam) * (global_local + global_medium)``.

    With l, m, g the local / medium / global embeddings of view 1 and l', m', g' those of view 2:

    - ``local = info_nce(l, l')``, ``medium = info_nce(m, m')``, ``global = info_nce(g, g')`` (eq. 2-4);
    - ``cross_pairing="cross_view"`` (default, the paper's eq. 5):
      ``global_local = info_nce(g, l') + info_nce(g', l)``,
      ``global_medium = info_nce(g, m') + info_nce(g', m)``;
    - ``cross_pairing="same_view"`` (the authors' code):
      ``global_local = info_nce(g, l) + info_nce(g', l')``,
      ``global_medium = info_nce(g, m) + info_nce(g', m')``;
    - ``soft_ce``: the softened cross-entropy of the classifier logits of both views on the labelled
      samples (eq. 7-8), see ``hico.losses.soft_ce`` for the two ``smoothing`` modes.

    The cross-view pairing is the default because it is what the paper writes and motivates (the global
    vector of one view is the anchor of the other view's local vector, eq. 5); it also asks the levels to
    agree across the two augmented frames, while the same-view pairing only aligns the levels of one
    augmented frame. ``"same_view"`` reproduces the authors' code for comparison.

    Every term can be switched off with ``terms`` so that each row of the paper's Tables 1-3 is a
    configuration: e.g. ``terms={"global"}`` is the SimCLR row (use ``lam=1`` for SimCLR's exact scale),
    ``terms=HICO_TERMS[:5]`` is "HiCo without labels". Terms switched off do not enter ``total`` and are
    reported as detached 0-dim zeros, so every curve has a value at every step.

    All contrastive terms of a call are computed by one batched matmul when the embeddings share one
    shape (the usual case); otherwise by one ``info_nce`` call (one matmul) per pair.

    Args:
        lam: Weight of the peer-level terms in [0, 1]; the cross-level terms get 1 - lam. Paper: 0.5.
        alpha: Label smoothing in [0, 1). Paper: 0.2.
        beta: Weight of the softened CE, >= 0. Paper: 0.2.
        temperature: InfoNCE temperature > 0. Paper: 0.5.
        terms: The term names switched on, any of ``HICO_TERMS`` (default: all six).
        cross_pairing: ``"cross_view"`` (paper) or ``"same_view"`` (authors' code).
        smoothing: ``"normalized"`` (default) or ``"reference"`` (authors' code).

    Shapes (forward):
        out1, out2: dicts for view 1 and view 2 with ``"local"``, ``"medium"``, ``"global"``: (N, D)
            embeddings, and ``"logits"``: (N, K); only the keys used by the terms switched on are needed.
        labels: (N,) integer classes with -1 for unlabelled samples, or None (nothing labelled).

    Returns:
        A dict of 0-dim tensors: ``"total"``, ``"con"`` and each term of ``HICO_TERMS`` by name
        (unweighted values; the weights only enter ``con`` and ``total``). With ``smoothing="reference"``
        and ``soft_ce`` on, also ``"soft_ce_skipped"``: 1.0 when the batch has exactly one labelled sample,
        so that the authors' formula has no value and ``soft_ce`` is 0 for that batch, else 0.0 (a count,
        not a loss: it never enters ``total``; the trainer's epoch mean is the fraction of skipped steps).

    Example:
        >>> import torch
        >>> loss_fn = HiCoLoss(lam=0.5, alpha=0.2, beta=0.2)
        >>> def outputs(n=8, k=3):  # what a HiCo model returns for one view
        ...     return {"local": torch.randn(n, 256), "medium": torch.randn(n, 256),
        ...             "global": torch.randn(n, 256), "logits": torch.randn(n, k)}
        >>> out1, out2 = outputs(), outputs()
        >>> labels = torch.tensor([0, 2, -1, -1, 1, -1, 0, -1])
        >>> losses = loss_fn(out1, out2, labels)
        >>> sorted(losses)
        ['con', 'global', 'global_local', 'global_medium', 'local', 'medium', 'soft_ce', 'total']
    """

    def __init__(
        self,
        lam: float = 0.5,
        alpha: float = 0.2,
        beta: float = 0.2,
        temperature: float = 0.5,
        terms: Iterable[str] | str = HICO_TERMS,
        cross_pairing: CrossPairing = "cross_view",
        smoothing: Smoothing = "normalized",
    ) -> None:
        super().__init__()
        if not 0 <= lam <= 1:
            raise ValueError(f"HiCoLoss: lam must be in [0, 1], got {lam}")
        if not 0 <= alpha < 1:
            raise ValueError(f"HiCoLoss: alpha must be in [0, 1), got {alpha}")
        if not beta >= 0:
            raise ValueError(f"HiCoLoss: beta must be >= 0, got {beta}")
        if not temperature > 0:
            raise ValueError(f"HiCoLoss: temperature must be > 0, got {temperature}")
        names = [terms] if isinstance(terms, str) else list(terms)
        unknown = sorted(set(names) - set(HICO_TERMS))
        if unknown:
            raise ValueError(f"HiCoLoss: unknown terms {unknown}; known terms: {list(HICO_TERMS)}")
        if not names:
            raise ValueError(f"HiCoLoss: terms is empty; switch on at least one of {list(HICO_TERMS)}")
        if cross_pairing not in CROSS_PAIRINGS:
            raise ValueError(f"HiCoLoss: cross_pairing must be one of {CROSS_PAIRINGS}, got {cross_pairing!r}")
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"HiCoLoss: smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
        self.lam = lam
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature
        self.terms: tuple[str, ...] = tuple(t for t in HICO_TERMS if t in names)  # canonical order
        self.cross_pairing = cross_pairing
        self.smoothing = smoothing
        pairs = {**_PEER_PAIRS, **_CROSS_PAIRS[cross_pairing]}
        self._pairs = {t: pairs[t] for t in self.terms if t in pairs}

    def extra_repr(self) -> str:
        return (
            f"lam={self.lam}, alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}, "
            f"terms={list(self.terms)}, cross_pairing={self.cross_pairing!r}, smoothing={self.smoothing!r}"
        )

    @property
    def outputs(self) -> tuple[str, ...]:
        """The model outputs the terms switched on read: embeddings finest first, then ``"logits"`` (soft_ce)."""
        keys = {key for pairs in self._pairs.values() for pair in pairs for key, _ in pair}
        return (*(k for k in PEER_TERMS if k in keys), *(("logits",) if "soft_ce" in self.terms else ()))

    def _contrastive_terms(
        self, outs: tuple[Mapping[str, Tensor], Mapping[str, Tensor]], weights: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Every contrastive term switched on, from one batched info_nce when the shapes allow it."""
        calls = [pair for pairs in self._pairs.values() for pair in pairs]
        if not calls:
            return {}
        for key in sorted({key for pair in calls for key, _ in pair}):
            for view in (0, 1):
                if key not in outs[view]:
                    raise KeyError(f"HiCoLoss: out{view + 1} has no {key!r} embedding (needed by {list(self._pairs)})")
        left = [outs[view][key] for (key, view), _ in calls]
        right = [outs[view][key] for _, (key, view) in calls]
        if len({x.shape for x in left + right}) == 1:
            values = list(info_nce(torch.stack(left), torch.stack(right), self.temperature, weights).unbind())
        else:
            values = [info_nce(x, y, self.temperature, weights) for x, y in zip(left, right, strict=True)]
        result, start = {}, 0
        for term, pairs in self._pairs.items():  # a cross term is the sum of its two info_nce calls
            chunk = values[start : start + len(pairs)]
            result[term] = sum(chunk[1:], chunk[0])
            start += len(pairs)
        return result

    def forward(
        self,
        out1: Mapping[str, Tensor],
        out2: Mapping[str, Tensor],
        labels: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Compute every term; see the class docstring for shapes. ``weights``: optional (N,) pair weights of
        the contrastive terms (IVPP, see :func:`~hico.losses.info_nce`)."""
        losses = self._contrastive_terms((out1, out2), weights)
        if "soft_ce" in self.terms:
            for view, out in enumerate((out1, out2), start=1):
                if "logits" not in out:
                    raise KeyError(f"HiCoLoss: out{view} has no 'logits' (needed by the soft_ce term)")
            losses["soft_ce"] = softened_cross_entropy(
                out1["logits"], out2["logits"], labels, alpha=self.alpha, mode=self.smoothing
            )

        reference = next(iter(losses.values()))

        def zero() -> Tensor:  # a term switched off: a detached 0-dim zero
            return torch.zeros((), dtype=reference.dtype, device=reference.device)

        peer = sum((losses[t] for t in PEER_TERMS if t in losses), zero())
        cross = sum((losses[t] for t in CROSS_TERMS if t in losses), zero())
        con = self.lam * peer + (1 - self.lam) * cross
        total = con + self.beta * losses["soft_ce"] if "soft_ce" in losses else con
        result = {"total": total, "con": con}
        for term in HICO_TERMS:
            result[term] = losses[term] if term in losses else zero()
        if "soft_ce" in losses and self.smoothing == "reference":
            skipped = zero() if labels is None else reference_skipped(labels).to(reference.device, reference.dtype)
            result["soft_ce_skipped"] = skipped
        return result
