"""In-batch contrastive methods: HiCo (and SimCLR, IVPP: HiCo with the global term only) and USCL.

Both views go through the model in one forward (:func:`hico.engine.forward_views`); under ``torchrun`` every
term is computed on the embeddings gathered from all ranks, so the negatives of a pair are those of the global
batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from hico import dist
from hico.engine import forward_views
from hico.losses import HiCoLoss, USCLLoss
from hico.methods.base import Method
from hico.names import TERMS, term_names

if TYPE_CHECKING:
    from hico.config import LossConfig, MethodConfig


class Contrastive(Method):
    """The shared forward: one pass over both views, gather across ranks, the loss on the global batch."""

    def forward(
        self,
        model: nn.Module,
        view1: Tensor,
        view2: Tensor,
        labels: Tensor | None = None,
        weights: Tensor | None = None,
        negatives: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Every term of the loss on the global batch; see :meth:`Method.forward`."""
        out1, out2 = forward_views(model, view1, view2, self.outputs)
        if dist.world_size() > 1:
            out1, out2 = dist.gather_outputs(out1), dist.gather_outputs(out2)
            labels = None if labels is None else dist.all_gather_nograd(labels)
            weights = None if weights is None else dist.all_gather_nograd(weights)
        return self.loss(out1, out2, labels, weights)


class HiCo(Contrastive):
    """HiCo's peer-level and cross-level InfoNCE and softened CE (:class:`~hico.losses.HiCoLoss`)."""

    terms = TERMS["hico"]
    sums = ("total", "con")

    def __init__(self, cfg: MethodConfig, model: nn.Module) -> None:
        super().__init__(cfg, model)
        self.terms = term_names(cfg.to_dict())  # + soft_ce_skipped with the authors' smoothing

    @classmethod
    def build_loss(cls, loss: LossConfig, dim: int) -> nn.Module:
        """:class:`~hico.losses.HiCoLoss` with the section's arguments."""
        return HiCoLoss(
            lam=loss.lam,
            alpha=loss.alpha,
            beta=loss.beta,
            temperature=loss.temperature,
            terms=loss.terms,
            cross_pairing=loss.cross_pairing,
            smoothing=loss.smoothing,
        )

    @classmethod
    def labels_needed(cls, loss: LossConfig) -> bool:
        """The softened CE reads labels."""
        return "soft_ce" in loss.terms

    @classmethod
    def check(cls, cfg: MethodConfig) -> None:
        """The local / medium terms need the FPN's levels."""
        needs_fpn = [t for t in cfg.loss.terms if t not in ("global", "soft_ce")]
        if needs_fpn and not cfg.model.fpn:
            raise ValueError(f"loss.terms {needs_fpn} need the local/medium levels: set model.fpn: true")

    def holdout_loss(self, model: nn.Module, view1: Tensor, view2: Tensor, weights: Tensor | None = None) -> Tensor:
        """``con``: the contrastive part, without labels."""
        out1, out2 = forward_views(model, view1, view2, self.outputs)
        return self.loss(out1, out2, None, weights)["con"]


class USCL(Contrastive):
    """USCL's NT-Xent + lam x CE (:class:`~hico.losses.USCLLoss`)."""

    terms = TERMS["uscl"]

    @classmethod
    def build_loss(cls, loss: LossConfig, dim: int) -> nn.Module:
        """:class:`~hico.losses.USCLLoss` (lam, temperature)."""
        return USCLLoss(lam=loss.lam, temperature=loss.temperature)

    @classmethod
    def labels_needed(cls, loss: LossConfig) -> bool:
        """The CE term reads labels."""
        return True

    def holdout_loss(self, model: nn.Module, view1: Tensor, view2: Tensor, weights: Tensor | None = None) -> Tensor:
        """``total`` without labels: the NT-Xent (the CE of no labelled pair is 0)."""
        out1, out2 = forward_views(model, view1, view2, self.outputs)
        return self.loss(out1, out2, None, weights)["total"]
