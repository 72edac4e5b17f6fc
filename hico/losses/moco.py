"""MoCo v2 (He et al. 2020; Chen et al. 2020): a momentum key encoder and a queue of negative keys.

For a batch of queries q (view 1 through the trained encoder) and keys k (view 2 through the momentum encoder),
all L2-normalised, and a queue Q of K earlier keys:

    logits_i = [q_i . k_i, q_i . Q_1, ..., q_i . Q_K] / t        loss = mean_i -log softmax(logits_i)_0

Extra negatives per query (UCL's intra-video hard negatives) go between the positive and the queue, followed, with
``support_size`` = s > 0, by UCL's cross-video hard negative: the s queued keys nearest to q, mixed with weights
softmax(q . Q_j / t_s) over those s (``soft_nn_temperature``), then normalised; it is a constant (no gradient)
like every other negative. After the
optimizer step the batch's keys replace the oldest ones in the queue (first in, first out), and the key encoder
follows the query encoder: theta_k <- m * theta_k + (1 - m) * theta_q.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hico.losses.info_nce import _autocast_off

__all__ = ["MoCoLoss", "momentum_update"]


@torch.no_grad()
def momentum_update(key_model: nn.Module, model: nn.Module, momentum: float) -> None:
    """theta_k <- m * theta_k + (1 - m) * theta_q for every parameter (buffers such as BatchNorm statistics are
    left to the key encoder's own forward passes, as in MoCo)."""
    for pk, pq in zip(key_model.parameters(), model.parameters(), strict=True):
        pk.mul_(momentum).add_(pq.detach(), alpha=1 - momentum)


class MoCoLoss(nn.Module):
    """The MoCo contrastive loss and its queue (a buffer: it is saved in checkpoints with the loss's state).

    Args:
        dim: embedding size of the keys.
        queue_size: K, the number of queued negative keys (MoCo: 65536; small data sets need far fewer).
        temperature: t (MoCo v2: 0.2; UCL: 0.07).
        momentum: m of the key encoder (0.999); read by :class:`hico.methods.moco.MoCo`, which owns both encoders.
        key: the model output used as the embedding (``"global"``).
        support_size: UCL's cross-video hard negative from the ``support_size`` nearest queued keys (0: none).
        soft_nn_temperature: t_s of its mixing weights (UCL: 0.07).

    The queue starts as random unit vectors (as in MoCo) and ``filled`` counts the real keys written so far.
    """

    def __init__(
        self,
        dim: int = 128,
        queue_size: int = 4096,
        temperature: float = 0.2,
        momentum: float = 0.999,
        key: str = "global",
        support_size: int = 0,
        soft_nn_temperature: float = 0.07,
    ):
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"MoCoLoss: queue_size must be at least 1, got {queue_size}")
        if not temperature > 0:
            raise ValueError(f"MoCoLoss: temperature must be > 0, got {temperature}")
        if not 0 <= momentum < 1:
            raise ValueError(f"MoCoLoss: momentum must be in [0, 1), got {momentum}")
        if not 0 <= support_size <= queue_size:
            raise ValueError(f"MoCoLoss: support_size must be in [0, queue_size={queue_size}], got {support_size}")
        if not soft_nn_temperature > 0:
            raise ValueError(f"MoCoLoss: soft_nn_temperature must be > 0, got {soft_nn_temperature}")
        self.temperature, self.momentum, self.key = temperature, momentum, key
        self.support_size, self.soft_nn_temperature = support_size, soft_nn_temperature
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"queue={tuple(self.queue.shape)}, temperature={self.temperature}, momentum={self.momentum}, "
            f"support_size={self.support_size}"
        )

    @property
    def outputs(self) -> tuple[str, ...]:
        """The model outputs this loss reads (of the queries and of the keys)."""
        return (self.key,)

    def forward(
        self,
        out_q: Mapping[str, Tensor],
        out_k: Mapping[str, Tensor],
        labels: Tensor | None = None,
        weights: Tensor | None = None,
        negatives: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The loss of queries ``out_q[key]`` (N, D) against keys ``out_k[key]`` (N, D, no gradient needed)
        and the queue; ``negatives``: optional (N, E, D) extra negatives per query, ``weights``: optional (N,)
        per-query weights. Returns ``{"total", "moco"}`` (the same 0-dim tensor).

        Computed in float32 with autocast switched off, as :func:`hico.losses.info_nce`: under bf16 autocast
        the negatives' matmuls would otherwise run in bf16 and the positive in fp32."""
        with _autocast_off(out_q[self.key].device.type):
            return self._loss(out_q, out_k, weights, negatives)

    def _loss(self, out_q, out_k, weights, negatives) -> dict[str, Tensor]:
        q = F.normalize(out_q[self.key].float(), dim=1)
        k = F.normalize(out_k[self.key].float(), dim=1).detach()
        queue = self.queue.to(q.dtype)
        columns = [(q * k).sum(1, keepdim=True)]
        if negatives is not None:
            columns.append(torch.einsum("nd,ned->ne", q, F.normalize(negatives.float(), dim=-1)))
        if self.support_size:
            columns.append((q * self.cross_video_negative(q)).sum(1, keepdim=True))
        columns.append(q @ queue.T)
        logits = torch.cat(columns, dim=1) / self.temperature
        per_query = torch.logsumexp(logits, dim=1) - logits[:, 0]
        if weights is not None:
            per_query = per_query * weights.to(per_query.dtype)
        loss = per_query.mean()
        return {"total": loss, "moco": loss}

    @torch.no_grad()
    def cross_video_negative(self, q: Tensor) -> Tensor:
        """UCL's mixed hard negative of each unit query (N, D): the ``support_size`` nearest queued keys,
        weighted by softmax(similarity / soft_nn_temperature), summed and normalised; (N, D), no gradient."""
        queue = self.queue.to(q.dtype)
        sim, idx = (q.detach() @ queue.T).topk(self.support_size, dim=1)  # (N, s)
        w = torch.softmax(sim / self.soft_nn_temperature, dim=1)
        return F.normalize(torch.einsum("ns,nsd->nd", w, queue[idx]), dim=1)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` (B, D) over the oldest entries, in order (the last K when B > K)."""
        keys = F.normalize(keys.detach().to(self.queue.dtype), dim=1)[-len(self.queue) :]
        size, b = len(self.queue), len(keys)
        idx = (self.ptr + torch.arange(b, device=keys.device)) % size
        self.queue[idx] = keys
        self.ptr.copy_((self.ptr + b) % size)
        self.filled.copy_(torch.clamp(self.filled + b, max=size))
