"""USCL's loss (MICCAI 2021): NT-Xent on the projections plus a cross-entropy on the labelled samples."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from hico.losses.info_nce import info_nce
from hico.losses.soft_ce import labelled_cross_entropy

__all__ = ["USCLLoss"]


class USCLLoss(nn.Module):
    """``total = info_nce(g, g') + lam * (CE(view 1) + CE(view 2))``.

    CE(view) is the plain cross-entropy of that view's logits, averaged over the labelled samples
    (label >= 0); it is exactly 0 (and backward still works) when no sample of the batch is labelled.

    Args:
        lam: Weight of the cross-entropy, >= 0. USCL: 0.2.
        temperature: NT-Xent temperature > 0. USCL: 0.5.

    Shapes (forward):
        out1, out2: dicts for view 1 and view 2 with ``"global"``: the projections z, (N, D), and
            ``"logits"``: (N, K) (USCL's classifier reads z).
        labels: (N,) integer classes with -1 for unlabelled samples, or None (nothing labelled).

    Returns:
        A dict of 0-dim tensors: ``"total"``, ``"global"`` (the NT-Xent) and ``"ce"`` (CE(view 1) +
        CE(view 2), unweighted).

    Example:
        >>> import torch
        >>> loss_fn = USCLLoss(lam=0.2)
        >>> out1 = {"global": torch.randn(8, 256), "logits": torch.randn(8, 3)}
        >>> out2 = {"global": torch.randn(8, 256), "logits": torch.randn(8, 3)}
        >>> losses = loss_fn(out1, out2, torch.tensor([0, 1, -1, -1, 2, -1, -1, -1]))
        >>> sorted(losses)
        ['ce', 'global', 'total']
    """

    def __init__(self, lam: float = 0.2, temperature: float = 0.5) -> None:
        super().__init__()
        if not lam >= 0:
            raise ValueError(f"USCLLoss: lam must be >= 0, got {lam}")
        if not temperature > 0:
            raise ValueError(f"USCLLoss: temperature must be > 0, got {temperature}")
        self.lam = lam
        self.temperature = temperature

    def extra_repr(self) -> str:
        return f"lam={self.lam}, temperature={self.temperature}"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The model outputs this loss reads."""
        return ("global", "logits")

    def forward(
        self,
        out1: Mapping[str, Tensor],
        out2: Mapping[str, Tensor],
        labels: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Compute the loss; see the class docstring for shapes. ``weights``: optional (N,) pair weights of the
        NT-Xent term (see :func:`~hico.losses.info_nce`)."""
        for view, out in enumerate((out1, out2), start=1):
            for key in ("global", "logits"):
                if key not in out:
                    raise KeyError(f"USCLLoss: out{view} has no {key!r}")
        contrastive = info_nce(out1["global"], out2["global"], self.temperature, weights)
        logits1, logits2 = out1["logits"], out2["logits"]
        if labels is None:
            labels = logits1.new_full(logits1.shape[:1], -1, dtype=torch.long)
        ce = labelled_cross_entropy(logits1, labels) + labelled_cross_entropy(logits2, labels)
        return {"total": contrastive + self.lam * ce, "global": contrastive, "ce": ce}
