"""One training step, shared by the trainer and the benchmarks.

Both views go through the model in ONE forward pass (concatenated along the batch), so the backbone runs once
per step on 2B images, BatchNorm sees both views, and the outputs are split back into the two views. The
authors' trainer ran four forward passes per step; this runs one.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hico import dist


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


def pair_similarities(z1: Tensor, z2: Tensor) -> tuple[float, float]:
    """Mean cosine similarity of the B positive pairs (row i of ``z1`` with row i of ``z2``) and of the B(B - 1)
    negative combinations (row i of ``z1`` with row j != i of ``z2``), for (B, D) embeddings, B >= 2."""
    sim = F.normalize(z1.float(), dim=1) @ F.normalize(z2.float(), dim=1).T
    off = ~torch.eye(len(sim), dtype=torch.bool, device=sim.device)
    return float(sim.diagonal().mean()), float(sim[off].mean())


class NonFiniteLossError(ValueError, RuntimeError):
    """A loss term became NaN or inf; the step stops before the backward pass (``term``: its name, ``value``).

    A ValueError: ``hico pretrain`` reports it in one line and exits 2, like other errors in what was given
    (here settings that diverge, such as a learning rate too high)."""

    def __init__(self, message: str, term: str, value: float, rank: int | None = None) -> None:
        super().__init__(message)
        self.term, self.value, self.rank = term, value, rank  # rank: where it happened, under torchrun


def train_step(
    method: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    view1: Tensor,
    view2: Tensor,
    labels: Tensor | None = None,
    weights: Tensor | None = None,
    negatives: Tensor | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """One optimizer step of a method (:class:`hico.methods.base.Method`): its forward over both views,
    every loss term, backward, optimizer step, then the method's own update (queue, momentum encoder).

    The trainer and the step benchmarks both call this. Returns the terms as floats (one device sync).

    Args:
        model: the trained network (possibly DDP / compiled); its optimizer also holds the method's trainable
            parameters (:func:`trainable_parameters`).
        view1, view2: (B, 3, H, W) augmented views of B positive pairs.
        labels: (B,) int64 class per pair, -1 for unlabelled (None: no labels).
        weights, negatives: per-pair loss weights (IVPP) and extra negatives (UCL), or None.
        autocast_dtype: ``torch.bfloat16`` to run the forward under autocast (mixed precision), or None.

    Raises:
        NonFiniteLossError: a term is NaN or inf on any rank (named: the first one that is not a sum of
            others, and the rank under torchrun); raised on every rank at the same step; nothing was updated.
    """
    device_type = view1.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        terms = method(model, view1, view2, labels, weights, negatives)
    values = torch.stack([v.detach().float() for v in terms.values()])
    # every rank's terms (W, T), so that a non-finite loss on ONE rank stops every rank at this step (a rank
    # that raised alone would leave the others waiting); the backward is queued before the one host sync of the
    # step, so the device computes it while the host waits for the terms, and the optimizer steps only after
    # the check: a non-finite loss updates nothing
    every = dist.all_gather_nograd(values[None], check=False)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    every = every.cpu()
    if not torch.isfinite(every).all():
        where = int((~torch.isfinite(every)).any(1).nonzero()[0])  # the first rank with a non-finite term
        bad = [(k, v) for k, v in zip(terms, every[where].tolist(), strict=True) if not math.isfinite(v)]
        term, value = next(((k, v) for k, v in bad if k not in method.sums), bad[0])
        rank = where if len(every) > 1 else None
        on = "" if rank is None else f" on rank {rank}"
        raise NonFiniteLossError(f"non-finite loss{on}: term {term!r} is {value}", term, value, rank)
    if dist.world_size() > 1:  # the method's own trainable parameters sit outside DDP: average their gradients
        dist.average_gradients(trainable_parameters(method))
    optimizer.step()
    method.after_step(model)
    return dict(zip(terms, every[dist.rank()].tolist(), strict=True))


def trainable_parameters(method: nn.Module) -> list[nn.Parameter]:
    """The method's parameters that the optimizer trains beside the model's (BYOL's predictor; often none)."""
    return [p for p in method.parameters() if p.requires_grad]


FLUSH_BELOW = 1e-30
"""Weights and optimizer state smaller than this in magnitude are set to 0 by :func:`flush_subnormals`."""


def flush_subnormals(optimizer: torch.optim.Optimizer, below: float = FLUSH_BELOW) -> int:
    """Set the values of magnitude under ``below`` (not 0) of the optimizer's float32 parameters and of their state
    (Adam's moments) to 0, in place; returns how many there were.

    On a CPU, arithmetic on subnormal floats (under 1.2e-38) is very slow (microcode assists). Over a long run,
    weight decay shrinks the weights of a part whose gradients vanish geometrically toward 0, until they, and their
    products with the activations, are subnormal, and every convolution that reads them slows down: a 180-epoch
    SimCLR run at 64 px fell from 100 to 30 pairs/s; at epoch 130 its weights held 3.0 M subnormal values and
    4.2 M under 1e-30 (of 11.6 M), most in the last ResNet block, and its forward and backward took 1.04 s against
    0.57 s with the subnormal ones flushed, 0.32 s with all under 1e-30 flushed (a fresh network: 0.29 s).
    ``torch.set_flush_denormal`` switches subnormals off for the calling thread only, not for the intra-op
    threads. A weight under 1e-30 adds nothing a float32 sum of normal-sized terms can hold: the network computes
    the same.
    """
    flushed = 0
    with torch.no_grad():
        for group in optimizer.param_groups:
            for p in group["params"]:
                tensors = [p, *(v for v in optimizer.state.get(p, {}).values() if torch.is_tensor(v))]
                for t in tensors:
                    if t.dtype != torch.float32 or t.dim() == 0:
                        continue
                    small = (t.abs() < below) & (t != 0)
                    n = int(small.sum())
                    if n:
                        t.masked_fill_(small, 0.0)
                        flushed += n
    return flushed
