"""One contrastive training step, shared by the trainer and the benchmarks.

Both views go through the model in ONE forward pass (concatenated along the batch), so the backbone runs once
per step on 2B images, BatchNorm sees both views, and the outputs are split back into the two views. The
authors' trainer ran four forward passes per step; this runs one.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import Tensor, nn


def forward_views(
    model: nn.Module, view1: Tensor, view2: Tensor, outputs: Collection[str] | None = None
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Run the model once on both views (B, 3, H, W) each; returns the output dict of each view.

    Every (2B, ...) tensor of the model's output is split into its first and second B rows; other entries
    (such as a ``"maps"`` dict) are left out. ``outputs``: passed on to the model (``HiCoNet``: only these
    outputs, e.g. the loss's ``outputs``); None calls ``model(x)``.
    """
    b = view1.shape[0]
    x = torch.cat([view1, view2])
    out = model(x) if outputs is None else model(x, outputs=outputs)
    out1 = {k: v[:b] for k, v in out.items() if isinstance(v, Tensor)}
    out2 = {k: v[b:] for k, v in out.items() if isinstance(v, Tensor)}
    return out1, out2


def training_step(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    view1: Tensor,
    view2: Tensor,
    labels: Tensor | None,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, Tensor]:
    """Forward both views, compute every loss term, backward, optimizer step. Returns the detached terms.

    Args:
        view1, view2: (B, 3, H, W) augmented views of B positive pairs.
        labels: (B,) int64 class per pair, -1 for unlabelled (None: no labels).
        autocast_dtype: ``torch.bfloat16`` to run the forward under autocast (mixed precision), or None.
    """
    device_type = view1.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        out1, out2 = forward_views(model, view1, view2)
        terms = loss_fn(out1, out2, labels)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    optimizer.step()
    return {k: v.detach() for k, v in terms.items()}
