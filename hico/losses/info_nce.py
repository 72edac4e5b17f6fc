"""InfoNCE / NT-Xent (SimCLR), the contrastive loss every HiCo term is built from (paper eq. 1-2)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["info_nce"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16 / bfloat16 -> float32; float32 and float64 are kept."""
    return torch.promote_types(dtype, torch.float32)


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """Switch autocast off for the loss so that its matmul runs in the upcast dtype."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def info_nce(a: Tensor, b: Tensor, temperature: float = 0.5, weights: Tensor | None = None) -> Tensor:
    """NT-Xent loss over the 2N vectors of two views, symmetric, averaged over the 2N anchors.

    For the 2N vectors z = [a; b], anchor i has one positive (its pair: a_i <-> b_i) and 2N - 2
    negatives (every other vector, in both views):

        loss_i = -log( exp(sim(z_i, z_pos(i)) / t) / sum_{k != i} exp(sim(z_i, z_k) / t) )
        loss   = mean_i loss_i,   i = 1 .. 2N

    with sim the cosine similarity. This is eq. 1 of SimCLR / HiCo, and eq. 2-5 of HiCo are exactly
    ``info_nce(x, x')`` for the relevant pair of embeddings. It is computed with one similarity matmul
    (z @ z.T), the self-similarity masked with -inf, and a log-sum-exp cross-entropy on float32 logits (inputs in
    float16 / bfloat16 are upcast first, autocast is switched off inside), so it is stable in mixed
    precision. The result is symmetric: ``info_nce(a, b) == info_nce(b, a)``.

    The function is pure: it contrasts exactly the vectors it is given. For distributed training,
    all-gather the embeddings (with gradients) before calling it.

    Args:
        a: First view, shape (N, D). A leading batch of independent problems, shape (T, N, D), is also
            accepted and is computed with one batched matmul.
        b: Second view, same shape as ``a``; row i of ``b`` is the positive of row i of ``a``.
        temperature: Softmax temperature t > 0 (the paper uses 0.5).
        weights: optional (N,) weight of each pair (IVPP): both anchors of pair i, a_i and b_i, count with
            weight w_i, ``loss = mean_i w_pair(i) * loss_i`` (the weights are not renormalised, so pairs of
            weight 1 give the unweighted loss).

    Returns:
        The loss: a 0-dim tensor for (N, D) inputs, shape (T,) for (T, N, D) inputs. Its dtype is
        float32, or float64 for float64 inputs.

    Raises:
        ValueError: if the shapes differ, are not (N, D) / (T, N, D), if N < 2 (no negatives), or if
            the temperature is not positive.

    Example:
        >>> import math, torch
        >>> a, b = torch.randn(8, 256), torch.randn(8, 256)  # projections of two views of 8 videos
        >>> loss = info_nce(a, b, temperature=0.5)
        >>> loss.shape
        torch.Size([])
        >>> same = torch.ones(8, 16)  # all 16 vectors identical: loss = log(2N - 1)
        >>> round(info_nce(same, same).item(), 4) == round(math.log(15), 4)
        True
    """
    if a.shape != b.shape:
        raise ValueError(f"info_nce: the two views must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() not in (2, 3):
        raise ValueError(f"info_nce: expected inputs of shape (N, D) or (T, N, D), got {tuple(a.shape)}")
    n = a.shape[-2]
    if n < 2:
        raise ValueError(f"info_nce: needs N >= 2 pairs (negatives come from other pairs), got N = {n}")
    if not temperature > 0:
        raise ValueError(f"info_nce: temperature must be > 0, got {temperature}")
    if weights is not None and weights.shape != (n,):
        raise ValueError(f"info_nce: weights must have shape ({n},), one per pair, got {tuple(weights.shape)}")

    with _autocast_off(a.device.type):
        z = torch.cat([a, b], dim=-2).to(_compute_dtype(a.dtype))  # (..., 2N, D), upcast before the norm
        z = F.normalize(z, dim=-1)
        logits = z @ z.transpose(-1, -2) / temperature  # (..., 2N, 2N) cosine similarities / t
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))  # an anchor is not its own negative
        # cross-entropy with target i <-> i + N: logsumexp over the row minus the positive's logit
        positives = torch.cat(
            [logits.diagonal(offset=n, dim1=-2, dim2=-1), logits.diagonal(offset=-n, dim1=-2, dim2=-1)], dim=-1
        )  # (..., 2N): sim(a_i, b_i) / t for the anchors a_i, then sim(b_i, a_i) / t for the anchors b_i
        per_anchor = torch.logsumexp(logits, dim=-1) - positives  # (..., 2N)
        if weights is not None:
            per_anchor = per_anchor * torch.cat([weights, weights]).to(per_anchor.dtype)
        return per_anchor.mean(dim=-1)
