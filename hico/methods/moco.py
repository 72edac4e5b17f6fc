"""MoCo v2 and UCL: queries from the trained encoder, keys from a momentum copy of it, a queue of keys.

Each step the key encoder first follows the trained one (theta_k <- m theta_k + (1 - m) theta_q), then encodes
the second view (and UCL's intra-video negatives) into keys; after the optimizer step the batch's keys, gathered
from every rank, replace the oldest ones in the queue (:class:`~hico.losses.MoCoLoss`).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from hico import dist
from hico.engine import forward_views
from hico.losses import MoCoLoss, info_nce, momentum_update
from hico.methods.base import Method
from hico.models.checkpoint import unwrap
from hico.names import TERMS

if TYPE_CHECKING:
    from hico.config import LossConfig, MethodConfig


class MoCo(Method):
    """MoCo v2 (UCL with ``data.pairs: ucl`` and ``loss.support_size``); state: ``key_model`` and the queue."""

    terms = TERMS["moco"]
    takes_negatives = True

    def __init__(self, cfg: MethodConfig, model: nn.Module) -> None:
        super().__init__(cfg, model)
        self.key_model = copy.deepcopy(unwrap(model)).requires_grad_(False)  # never trained directly
        self._new_keys: Tensor | None = None  # this step's keys, queued by after_step

    @classmethod
    def build_loss(cls, loss: LossConfig, dim: int) -> nn.Module:
        """:class:`~hico.losses.MoCoLoss` with a queue of ``loss.queue_size`` keys of size ``dim``."""
        return MoCoLoss(
            dim,
            queue_size=loss.queue_size,
            temperature=loss.temperature,
            momentum=loss.momentum,
            support_size=loss.support_size,
            soft_nn_temperature=loss.soft_nn_temperature,
        )

    def forward(
        self,
        model: nn.Module,
        view1: Tensor,
        view2: Tensor,
        labels: Tensor | None = None,
        weights: Tensor | None = None,
        negatives: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The queue loss of view 1's queries against view 2's keys; see :meth:`Method.forward`."""
        out1 = model(view1, outputs=self.outputs)
        with torch.no_grad():
            momentum_update(self.key_model, unwrap(model), self.loss.momentum)
            out2, negs = self._keys(view2, negatives)
        self._new_keys = out2[self.loss.key]
        return self.loss(out1, out2, labels, weights, negatives=negs)

    def after_step(self, model: nn.Module) -> None:
        """The batch's keys (of every rank) replace the oldest queued ones."""
        keys, self._new_keys = self._new_keys, None
        self.loss.enqueue(dist.all_gather_nograd(keys) if dist.world_size() > 1 else keys)

    def holdout_loss(self, model: nn.Module, view1: Tensor, view2: Tensor, weights: Tensor | None = None) -> Tensor:
        """The in-batch InfoNCE of the two views' embeddings: the queue loss would depend on what the queue
        holds (random vectors at first, then keys that age), not only on the model."""
        out1, out2 = forward_views(model, view1, view2, self.outputs)
        key = self.loss.key
        return info_nce(out1[key], out2[key], self.loss.temperature, weights)

    def _keys(self, view: Tensor, negatives: Tensor | None) -> tuple[dict, Tensor | None]:
        """MoCo keys of ``view`` (B, 3, s, s) and, for UCL, of the intra-video negatives (B, M, 3, s, s), in one
        pass of the momentum encoder: the key outputs and the negatives' (B, M, D) embeddings (or None)."""
        if negatives is None:
            return self.key_model(view, outputs=self.outputs), None
        b, m = negatives.shape[:2]
        negatives = negatives.flatten(0, 1)
        if not view.is_contiguous() and view.is_contiguous(memory_format=torch.channels_last):
            negatives = negatives.contiguous(memory_format=torch.channels_last)  # the views' layout
        out = self.key_model(torch.cat([view, negatives]), outputs=self.outputs)
        key = self.loss.key
        return {key: out[key][:b]}, out[key][b:].unflatten(0, (b, m))
