"""Softened cross-entropy on the labelled part of a semi-supervised batch (HiCo eq. 7-8, USCL's CE).

Two smoothings are offered:

- ``"normalized"`` (default): the standard label smoothing over the K classes,
  y~ = (1 - alpha) * onehot + alpha / K, rows sum to 1. This is what ``F.cross_entropy(...,
  label_smoothing=alpha)`` uses. The loss is the mean over the labelled samples of both views, i.e.
  eq. 8's 1/(2N) sum_i (CE(o_i, y~_i) + CE(o'_i, y~_i)) over the labelled samples.
- ``"reference"``: the authors' code, y~ = (1 - alpha) * onehot + alpha / (N - 1) with N the number of
  labelled samples in the batch (the rows do not sum to 1), soft cross-entropy averaged over the
  labelled samples of each view and SUMMED over the two views. Their code divides by zero when N = 1
  (the run cannot go on) and gives NaN when N = 0. Here a batch with N = 0 or N = 1 contributes exactly
  0 (graph-connected, zero gradients): the term is skipped for that batch. :func:`reference_skipped`
  says when N = 1, and ``HiCoLoss`` logs it as ``soft_ce_skipped``: at label rate 0.2 and batch 32,
  32 * 0.2 * 0.8**31, about one batch in 160, so a long run meets it almost surely.

Samples with a negative label (use -1) are unlabelled and ignored.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SMOOTHINGS", "labelled_cross_entropy", "reference_skipped", "soft_targets", "softened_cross_entropy"]

Smoothing = Literal["normalized", "reference"]
SMOOTHINGS: tuple[str, ...] = ("normalized", "reference")


def _check_alpha(alpha: float) -> None:
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")


def _check_mode(mode: str) -> None:
    if mode not in SMOOTHINGS:
        raise ValueError(f"smoothing mode must be one of {SMOOTHINGS}, got {mode!r}")


def _check_labels(labels: Tensor, logits: Tensor, name: str = "logits") -> None:
    if logits.dim() != 2:
        raise ValueError(f"{name} must have shape (N, K), got {tuple(logits.shape)}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},) to match {name}, got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor (class index, -1 = unlabelled), got {labels.dtype}")


def soft_targets(labels: Tensor, num_classes: int, alpha: float = 0.2, mode: Smoothing = "normalized") -> Tensor:
    """Softened target rows for the labelled samples of a batch.

    Args:
        labels: Class indices, shape (N,); negative values (-1) mark unlabelled samples, which get no row.
        num_classes: K.
        alpha: Smoothing weight in [0, 1).
        mode: ``"normalized"``: (1 - alpha) * onehot + alpha / K (rows sum to 1);
            ``"reference"``: (1 - alpha) * onehot + alpha / (N_l - 1) with N_l the number of labelled
            samples (the authors' formula; rows do not sum to 1).

    Returns:
        Float32 targets of shape (N_l, K), in the order of the labelled samples; (0, K) if none.

    Raises:
        ValueError: bad alpha or mode, or ``"reference"`` mode with exactly one labelled sample.

    Example:
        >>> import torch
        >>> soft_targets(torch.tensor([0, -1, 2, 1]), num_classes=3, alpha=0.2, mode="reference")
        tensor([[0.9000, 0.1000, 0.1000],
                [0.1000, 0.1000, 0.9000],
                [0.1000, 0.9000, 0.1000]])
    """
    _check_alpha(alpha)
    _check_mode(mode)
    labelled = labels[labels >= 0]
    onehot = F.one_hot(labelled.long(), num_classes).float()
    n = labelled.numel()
    if mode == "normalized":
        return (1 - alpha) * onehot + alpha / num_classes
    if n == 1:
        raise ValueError(
            "reference smoothing needs at least 2 labelled samples in the batch "
            "(alpha / (N - 1) with N = 1); use smoothing='normalized'"
        )
    return (1 - alpha) * onehot + (alpha / (n - 1) if n > 1 else 0.0)


def labelled_cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy over the labelled rows (label >= 0); exactly 0 if there are none.

    The zero stays connected to the graph (backward gives zero gradients, never NaN), and no
    device-to-host synchronisation is needed.

    Args:
        logits: Shape (N, K), any float dtype (computed in float32 or float64).
        labels: Shape (N,), integer class indices, -1 = unlabelled.
        label_smoothing: As in ``F.cross_entropy`` (normalized smoothing over the K classes).

    Returns:
        0-dim tensor.
    """
    _check_alpha(label_smoothing)
    _check_labels(labels, logits)
    labelled = labels >= 0
    log_p = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
    # F.cross_entropy(label_smoothing=e), written out: target (1 - e) * onehot + e / K
    nll = -log_p.gather(1, labels.long().clamp(min=0)[:, None]).squeeze(1)
    per_sample = (1 - label_smoothing) * nll - label_smoothing * log_p.mean(dim=1) if label_smoothing else nll
    per_sample = torch.where(labelled, per_sample, torch.zeros_like(per_sample))  # NaN-safe masking
    return per_sample.sum() / labelled.sum().clamp(min=1)


def softened_cross_entropy(
    logits1: Tensor,
    logits2: Tensor,
    labels: Tensor | None,
    alpha: float = 0.2,
    mode: Smoothing = "normalized",
) -> Tensor:
    """HiCo's softened CE (eq. 8) on the classifier logits of both views.

    Args:
        logits1: Logits of view 1, shape (N, K).
        logits2: Logits of view 2, shape (N, K).
        labels: Shape (N,), -1 = unlabelled; ``None`` = nothing labelled (the loss is 0).
        alpha: Smoothing weight in [0, 1).
        mode: ``"normalized"`` or ``"reference"``, see the module docstring.

    Returns:
        0-dim tensor; exactly 0 (graph-connected) when no sample is labelled, and in ``"reference"`` mode
        also when exactly one is (the authors' alpha / (N - 1) has no value: the term is skipped for that
        batch, see :func:`reference_skipped`).

    Example:
        >>> import torch
        >>> o1, o2 = torch.randn(4, 3), torch.randn(4, 3)
        >>> loss = softened_cross_entropy(o1, o2, torch.tensor([0, -1, 2, -1]), alpha=0.2)
    """
    _check_alpha(alpha)
    _check_mode(mode)
    if logits1.shape != logits2.shape:
        raise ValueError(
            f"the logits of the two views must have the same shape, got {tuple(logits1.shape)} "
            f"and {tuple(logits2.shape)}"
        )
    if labels is None:
        labels = torch.full(logits1.shape[:1], -1, dtype=torch.long, device=logits1.device)
    _check_labels(labels, logits1, "logits1")
    if mode == "normalized":
        both = torch.cat([logits1, logits2])
        return labelled_cross_entropy(both, torch.cat([labels, labels]), label_smoothing=alpha)

    labelled = labels >= 0
    n = int(labelled.sum())  # the reference formula depends on N: one host sync
    dtype = torch.promote_types(logits1.dtype, torch.float32)
    if n <= 1:  # nothing labelled, or the authors' formula divides by zero: skipped, 0 in the graph
        return (logits1[:0].sum() + logits2[:0].sum()).to(dtype)  # empty sums: 0, in the graph
    targets = soft_targets(labels, logits1.shape[1], alpha, mode="reference").to(logits1.device, dtype)
    total = logits1.new_zeros((), dtype=dtype)
    for logits in (logits1, logits2):  # per view: mean over the labelled samples; summed over the 2 views
        log_p = F.log_softmax(logits[labelled].to(dtype), dim=1)
        total = total + (-(targets * log_p).sum(dim=1)).mean()
    return total


def reference_skipped(labels: Tensor | None) -> Tensor:
    """1.0 when the ``"reference"`` softened CE skips the batch (exactly one labelled sample), else 0.0.

    Args:
        labels: (N,) integer classes, -1 = unlabelled.

    Returns:
        A float32 0-dim tensor on the labels' device, computed without a host sync. A batch with no
        labelled sample is not counted: no smoothing mode has anything to learn from it.
    """
    return (labels >= 0).sum().eq(1).float()
