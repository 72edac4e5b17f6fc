"""The interface every method implements, and nothing more: the trainer and the benchmarks call only this.

A method is an ``nn.Module``: what it holds beyond the trained model (MoCo's key encoder and queue, BYOL's
predictor and target network) are its submodules and buffers, so ``method.state_dict()`` is what a checkpoint
needs to resume it, and its trainable parameters (BYOL's predictor) join the optimizer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from hico.config import LossConfig, MethodConfig


class Method(nn.Module):
    """One pretraining method. Subclasses set :attr:`terms` and implement :meth:`build_loss` and :meth:`forward`.

    Attributes:
        terms: every key :meth:`forward` returns, in order, with its one-line meaning (``hico.names.TERMS``).
        sums: the terms that add up others; a non-finite loss is reported by the first term that is not one.
        takes_negatives: whether :meth:`forward` uses the pair sampler's extra negatives (UCL's ``data.pairs``).
        loss: the loss module, built from ``cfg.loss`` by :meth:`build_loss`.
    """

    terms: dict[str, str] = {}
    sums: tuple[str, ...] = ("total",)
    takes_negatives: bool = False

    def __init__(self, cfg: MethodConfig, model: nn.Module) -> None:
        super().__init__()
        self.loss = self.build_loss(cfg.loss, cfg.model.head_dim)

    @classmethod
    def build_loss(cls, loss: LossConfig, dim: int) -> nn.Module:
        """The loss module of this method from the ``loss`` section (``dim``: the embedding size)."""
        raise NotImplementedError

    @classmethod
    def labels_needed(cls, loss: LossConfig) -> bool:
        """Whether the loss has a term that reads labels (then ``model.num_classes`` must be set)."""
        return False

    @classmethod
    def uses_labels(cls, cfg: MethodConfig) -> bool:
        """Whether training feeds labels to the loss: ``data.label_rate`` > 0 and a term that reads them."""
        return cfg.data.label_rate > 0 and cls.labels_needed(cfg.loss)

    @classmethod
    def check(cls, cfg: MethodConfig) -> None:
        """Checks across sections that this method needs (raise ValueError naming the key and the fix)."""

    def forward(
        self,
        model: nn.Module,
        view1: Tensor,
        view2: Tensor,
        labels: Tensor | None = None,
        weights: Tensor | None = None,
        negatives: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The loss terms of one training batch (``total`` is the one to minimise), keys as in :attr:`terms`.

        Args:
            model: the trained network, possibly wrapped (DDP, ``torch.compile``): call it, never change it.
            view1, view2: (B, 3, H, W) the two augmented views of B positive pairs (this rank's share).
            labels: (B,) class per pair, -1 for unlabelled (None: none).
            weights: (B,) per-pair loss weights (IVPP) or None.
            negatives: (B, M, 3, H, W) extra negatives per pair (UCL) or None.
        """
        raise NotImplementedError

    @property
    def outputs(self) -> tuple[str, ...]:
        """The model outputs this method reads (``HiCoNet.forward(x, outputs=...)`` computes only these; the
        trainer asks DDP to find unused parameters when the model has others)."""
        return tuple(self.loss.outputs)

    def after_step(self, model: nn.Module) -> None:
        """Called after each optimizer step (momentum encoders, queues); nothing by default."""

    def holdout_loss(self, model: nn.Module, view1: Tensor, view2: Tensor, weights: Tensor | None = None) -> Tensor:
        """The criterion of best.pt on held-out pairs (no labels, this process only, no state changed)."""
        raise NotImplementedError
