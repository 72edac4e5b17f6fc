"""BYOL (Grill et al., NeurIPS 2020): a predictor on the trained network chases a momentum copy of it; no negatives.

With z1, z2 the projections (the ``global`` embedding) of the two views by the trained (online) network,
p = predictor(z), and z1', z2' those of the target network (a momentum copy, no gradient):

    L = |p1/|p1| - z2'/|z2'||^2 + |p2/|p2| - z1'/|z1'||^2 = 4 - 2 cos(p1, z2') - 2 cos(p2, z1')

averaged over the pairs (BYOL's symmetrised loss). After each optimizer step the target follows the online
network: xi <- tau xi + (1 - tau) theta (``loss.momentum``; BYOL raises tau from 0.996 to 1 over training,
here it stays constant). The predictor is BYOL's MLP, head_dim -> hidden_dim -> head_dim with BatchNorm.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hico import dist
from hico.engine import forward_views
from hico.losses import momentum_update
from hico.methods.base import Method
from hico.models.checkpoint import unwrap
from hico.names import TERMS

if TYPE_CHECKING:
    from hico.config import LossConfig, MethodConfig


class BYOLLoss(nn.Module):
    """``|p1/|p1| - z2/|z2||^2 + |p2/|p2| - z1/|z1||^2``, averaged over the N pairs (optionally weighted).

    Shapes: p1, p2 (N, D) predictions of the online network; z1, z2 (N, D) target projections (detached here).
    Returns ``{"total", "byol"}`` (the same 0-dim tensor).
    """

    def forward(self, p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor, weights: Tensor | None = None) -> dict:
        """The loss; see the class docstring."""
        p1, p2 = F.normalize(p1.float(), dim=1), F.normalize(p2.float(), dim=1)
        z1, z2 = F.normalize(z1.detach().float(), dim=1), F.normalize(z2.detach().float(), dim=1)
        per_pair = (p1 - z2).pow(2).sum(1) + (p2 - z1).pow(2).sum(1)
        if weights is not None:
            per_pair = per_pair * weights.to(per_pair.dtype)
        loss = per_pair.mean()
        return {"total": loss, "byol": loss}


def predictor(dim: int, hidden: int) -> nn.Sequential:
    """BYOL's predictor: Linear, BatchNorm, ReLU, Linear (dim -> hidden -> dim)."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))


class BYOL(Method):
    """BYOL on the ``global`` embedding; state: ``predictor`` (trained) and ``target`` (momentum copy)."""

    terms = TERMS["byol"]
    key = "global"

    def __init__(self, cfg: MethodConfig, model: nn.Module) -> None:
        super().__init__(cfg, model)
        self.momentum = cfg.loss.momentum
        self.predictor = predictor(cfg.model.head_dim, cfg.model.hidden_dim)
        self.target = copy.deepcopy(unwrap(model)).requires_grad_(False)

    @property
    def outputs(self) -> tuple[str, ...]:
        """BYOL reads the global embedding only."""
        return (self.key,)

    @classmethod
    def build_loss(cls, loss: LossConfig, dim: int) -> nn.Module:
        """:class:`BYOLLoss`; checks ``loss.momentum`` (the target's tau)."""
        if not 0 <= loss.momentum < 1:
            raise ValueError(f"BYOL: loss.momentum (the target's tau) must be in [0, 1), got {loss.momentum}")
        return BYOLLoss()

    def forward(
        self,
        model: nn.Module,
        view1: Tensor,
        view2: Tensor,
        labels: Tensor | None = None,
        weights: Tensor | None = None,
        negatives: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Predictions of both views against the target's projections of the other view; see
        :meth:`Method.forward`. Under ``torchrun`` the loss is the global batch's, as for the other methods
        (the same logged terms on every rank; the predictor's gradients are averaged by the training step)."""
        return self._loss(model, view1, view2, weights, gather=dist.world_size() > 1)

    def _loss(self, model: nn.Module, view1: Tensor, view2: Tensor, weights: Tensor | None, gather: bool) -> dict:
        out1, out2 = forward_views(model, view1, view2, self.outputs)
        p1, p2 = self.predictor(torch.cat([out1[self.key], out2[self.key]])).chunk(2)  # BatchNorm sees both views
        with torch.no_grad():
            t1, t2 = (t[self.key] for t in forward_views(self.target, view1, view2, self.outputs))
        if gather:
            p1, p2 = dist.gather_with_grad(p1), dist.gather_with_grad(p2)
            t1, t2 = dist.all_gather_nograd(t1), dist.all_gather_nograd(t2)
            weights = None if weights is None else dist.all_gather_nograd(weights)
        return self.loss(p1, p2, t1, t2, weights)

    def after_step(self, model: nn.Module) -> None:
        """The target follows the online network: xi <- tau xi + (1 - tau) theta."""
        momentum_update(self.target, unwrap(model), self.momentum)

    def holdout_loss(self, model: nn.Module, view1: Tensor, view2: Tensor, weights: Tensor | None = None) -> Tensor:
        """The BYOL loss of held-out pairs (online network and predictor against the target), this process only."""
        return self._loss(model, view1, view2, weights, gather=False)["total"]
