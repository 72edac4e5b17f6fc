"""The distributed bits of the trainer: rank and world size, device setup, gathers with gradients.

The same code runs in one process (``python -m hico.cli pretrain ...``) and under ``torchrun`` (one process
per GPU, DistributedDataParallel): every function is the identity / a no-op when no process group is set up.

The contrastive losses need every rank's embeddings (negatives come from the global batch), so each rank
gathers the outputs of its local batch with :func:`gather_outputs` and computes the loss of the GLOBAL batch
(every rank computes the same loss, so it needs no all-reduce for logging)::

    device = setup()                                       # torchrun: init the group, cuda:LOCAL_RANK
    out1, out2 = forward_views(ddp_model, view1, view2)    # local: (B, D) per view
    out1, out2 = gather_outputs(out1), gather_outputs(out2)  # global: (W * B, D), rank 0's rows first
    labels = all_gather_nograd(labels)                     # (W * B,)
    loss_fn(out1, out2, labels)["total"].backward()        # loss and gradients of 1 process on W * B pairs
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "all_gather_nograd",
    "all_reduce_mean",
    "any_rank",
    "barrier",
    "broadcast_object",
    "cleanup",
    "gather_outputs",
    "gather_with_grad",
    "is_dist",
    "is_main",
    "local_rank",
    "maybe_sync_batchnorm",
    "on_rank0",
    "rank",
    "setup",
    "sync_bn_choice",
    "world_size",
]


def is_dist() -> bool:
    """True when a process group is initialised (under torchrun with WORLD_SIZE > 1, after :func:`setup`)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank of this process, 0 when not distributed."""
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    """Number of processes, 1 when not distributed."""
    return dist.get_world_size() if is_dist() else 1


def local_rank() -> int:
    """Rank of this process on its node (env ``LOCAL_RANK``, set by torchrun), 0 when unset."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on the process that logs, writes checkpoints and evaluates (global rank 0)."""
    return rank() == 0


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device of a single-process run: ``None`` / ``"auto"`` = cuda if available, else cpu; otherwise the
    named device, which must be available (ValueError naming the fix otherwise)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {str(device)!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but CUDA is not available: use cpu or auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but MPS is not available: use cpu or auto")
    return dev


DEFAULT_TIMEOUT_S = 2 * 3600.0
"""How long a collective waits for the slowest rank before the run fails (:func:`setup`): 2 h, because rank 0
alone decodes an uncached dataset and evaluates each epoch while the others wait (torch's default, 10 min
with NCCL, aborts a run on a large dataset). A rank that really hangs is then found after 2 h."""

_T = TypeVar("_T")


def setup(
    backend: str | None = None, device: str | None = None, timeout_s: float | None = DEFAULT_TIMEOUT_S
) -> torch.device:
    """Initialise the process group under torchrun and return this process's device.

    With env ``WORLD_SIZE`` > 1 (torchrun): picks ``cuda:LOCAL_RANK`` when CUDA is available (else cpu), sets
    it as the current CUDA device and initialises the default process group from the env (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) with ``backend`` (default ``"nccl"`` on CUDA, ``"gloo"``
    on cpu). Calling it again is harmless. Otherwise nothing is initialised and the device is returned.

    Args:
        backend: ``"nccl"``, ``"gloo"`` or None (chosen from the device).
        device: None / ``"auto"`` (cuda if available, else cpu; MPS is never picked automatically),
            ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (single process only) or ``"mps"`` (single process only).
            Under torchrun ``"cuda"`` means ``cuda:LOCAL_RANK``.
        timeout_s: Timeout of the collectives, :data:`DEFAULT_TIMEOUT_S` (2 h) unless given; None: torch's
            default (NCCL 10 min, gloo 30 min), too short while rank 0 decodes a large dataset alone.

    Returns:
        The device to put the model and the batches on.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return resolve_device(device)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 (torchrun) but this torch build has no torch.distributed")
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if dev.index is not None:
            raise ValueError(f"under torchrun every process uses cuda:LOCAL_RANK; pass device='cuda', not {device!r}")
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but CUDA is not available: use cpu or auto")
        dev = torch.device("cuda", local_rank())
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise ValueError(f"distributed training (torchrun) runs on 'cuda' or 'cpu', got device {device!r}")
    if not dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        kwargs: dict[str, Any] = {}
        if timeout_s is not None:
            kwargs["timeout"] = timedelta(seconds=timeout_s)
        if backend == "nccl":
            kwargs["device_id"] = dev  # binds the communicator to this GPU (no "device unknown" barrier warning)
        dist.init_process_group(backend=backend, **kwargs)
    return dev


def cleanup() -> None:
    """Destroy the process group if one is initialised (call at the end of training)."""
    if is_dist():
        dist.destroy_process_group()


_MAX_DIMS = 8  # sizes compared by the shape check (the number of dims is always compared)


_CHECKED: set[str] = set()  # the gathers whose shapes were compared once in this process


def _check_same_shape(x: Tensor, what: str) -> None:
    """Raise the same ValueError on every rank unless ``x`` has the same shape on all ranks.

    One tiny all_gather (and, on CUDA, one device-to-host sync), on the first call of each kind of gather only:
    every rank makes the same calls, so all of them check at the same one, and a training step with fixed shapes
    (drop_last) then pays no sync for it. A gather of unequal sizes would otherwise hang or return garbage,
    depending on the backend; a shape that changes after the first call is not caught.
    """
    if what in _CHECKED:
        return
    _CHECKED.add(what)
    sizes = [x.dim(), *x.shape[:_MAX_DIMS]] + [-1] * (_MAX_DIMS - min(x.dim(), _MAX_DIMS))
    mine = torch.tensor(sizes, dtype=torch.long, device=x.device)
    parts = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, mine)
    shapes = [(s[0], tuple(s[1 : 1 + min(s[0], _MAX_DIMS)])) for s in torch.stack(parts).tolist()]
    if len(set(shapes)) > 1:
        raise ValueError(
            f"{what}: every rank must pass a tensor of the same shape (drop_last=True in the sampler / loader), "
            f"got {', '.join(f'rank {r}: {s}' for r, (_, s) in enumerate(shapes))}"
        )


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0; backward: all_reduce(SUM) of the gathered gradient, then this rank's rows."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()  # all_reduce works in place; autograd may reuse ``grad``
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n : (dist.get_rank() + 1) * n]


def gather_with_grad(x: Tensor, check: bool = True) -> Tensor:
    """All-gather ``x`` along dim 0 from every rank, differentiably; the identity when not distributed.

    Every rank computes the SAME global loss L from the gathered tensor. Rank r's loss only reaches rank r's
    parameters through rank r's own rows, so the backward SUMS the gradients of rank r's rows over all ranks
    (all_reduce): rank r's rows get W * dL/dx_r, and its parameters W * (dL/dtheta through rank r's rows).
    DDP then AVERAGES the parameter gradients over the W ranks: (1/W) * sum_r W * dL/dtheta|_r = dL/dtheta,
    exactly the gradient of a 1-process run on the global batch (checked in tests/test_dist.py). A backward
    without the sum (gathered rows as constants, or an all_gather with no backward) is off by 1/W.

    Args:
        x: (B, ...) local rows; B must be the same on every rank (the trainer uses drop_last).
        check: First gather the shapes (one tiny collective) and raise a clear ValueError on every rank if
            they differ; ``False`` skips it.

    Returns:
        (W * B, ...): rank 0's rows, then rank 1's, ...

    Raises:
        ValueError: if ``check`` and the shapes differ across ranks.
    """
    if not is_dist():
        return x
    if check:
        _check_same_shape(x, "gather_with_grad")
    return _GatherWithGrad.apply(x.contiguous())


def all_gather_nograd(x: Tensor, check: bool = True) -> Tensor:
    """All-gather ``x`` along dim 0 without gradient (labels, indices, features for evaluation).

    Shapes: (B, ...) -> (W * B, ...), rank 0's rows first; the identity when not distributed.
    """
    if not is_dist():
        return x
    if check:
        _check_same_shape(x, "all_gather_nograd")
    x = x.detach().contiguous()
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts)


def gather_outputs(out: Mapping[str, Tensor], check: bool = True) -> dict[str, Tensor]:
    """Gather every tensor of a model-output dict from all ranks along dim 0.

    Floating-point tensors are gathered with gradients (:func:`gather_with_grad`), the others (integer labels,
    indices) without (:func:`all_gather_nograd`). The tensors are flattened and concatenated so that a whole
    dict costs one collective per (dtype, batch size) group, not one per key.

    Gather the output of EACH VIEW separately (the output of ``forward_views``), not the (2B, ...) output of
    the one forward on both views: gathering that one would interleave the views of the ranks.

    Every rank must pass the same keys, dtypes and shapes.

    Args:
        out: name -> (B, ...) tensor, e.g. ``{"local": (B, D), "medium": (B, D), "global": (B, D),
            "logits": (B, K)}``.
        check: Check that the shapes agree across ranks (see :func:`gather_with_grad`).

    Returns:
        name -> (W * B, ...), rank 0's rows first; a copy of ``out`` when not distributed.

    Raises:
        TypeError: a value is not a tensor (e.g. the ``"maps"`` dict of ``return_maps=True``).
    """
    for key, value in out.items():
        if not isinstance(value, Tensor) or value.dim() == 0:
            raise TypeError(f"gather_outputs: {key!r} is not a tensor with a batch dimension ({type(value).__name__})")
    if not is_dist():
        return dict(out)
    groups: dict[tuple[torch.dtype, int], list[str]] = {}
    for key, value in out.items():
        groups.setdefault((value.dtype, value.shape[0]), []).append(key)
    result: dict[str, Tensor] = {}
    for (dtype, n), keys in groups.items():
        flat = torch.cat([out[k].reshape(n, -1) for k in keys], dim=1)  # (B, sum of the feature sizes)
        gather = gather_with_grad if dtype.is_floating_point or dtype.is_complex else all_gather_nograd
        gathered = gather(flat, check=check)  # (W * B, sum of the feature sizes)
        widths = [out[k][0].numel() for k in keys]
        for key, part in zip(keys, gathered.split(widths, dim=1), strict=True):
            result[key] = part.reshape(-1, *out[key].shape[1:])
    return {key: result[key] for key in out}  # the input's key order


def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over the ranks, detached (for logging); integer tensors come back as float32."""
    x = x.detach().clone()
    if not x.is_floating_point():
        x = x.float()
    if is_dist():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= dist.get_world_size()
    return x


def average_gradients(params: list[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over the ranks in place (parameters outside DDP, such as BYOL's
    predictor); parameters without a gradient are skipped. A no-op when not distributed."""
    grads = [p.grad for p in params if p.grad is not None]
    if not is_dist() or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(part.view_as(g))


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (one tiny all-reduce); ``flag`` when not
    distributed. For decisions every rank must take at the same step (stop, non-finite loss): one rank that
    stopped alone would leave the others waiting in their next collective."""
    if not is_dist():
        return bool(flag)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    box = torch.tensor([float(bool(flag))], device=device)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return bool(box.item())


def barrier() -> None:
    """Wait for every rank; a no-op when not distributed."""
    if is_dist():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (e.g. a run folder name chosen by rank 0)."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_rank0(choose: Callable[[], _T], device: str | None = None) -> _T:
    """``choose()`` evaluated on rank 0 only, and its result on every rank: for what the ranks must share but
    would each choose differently (a run folder named after the time it starts). Under torchrun it first sets up
    the process group (:func:`setup` with ``device``; setting it up again later is harmless)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        setup(device=device)
    return broadcast_object(choose() if is_main() else None)


def sync_bn_choice(setting: str | bool, compile: bool, device: torch.device, world: int) -> tuple[bool, str]:
    """Whether to convert BatchNorm to SyncBatchNorm (``train.sync_bn``), and a line to say about it (or "").

    Only several CUDA processes synchronise BatchNorm (gloo on the CPU cannot). ``auto`` does, except with
    ``compile``: SyncBatchNorm's collectives break a compiled graph at every layer, so auto leaves BatchNorm per
    GPU there; ``true`` with compile converts anyway and warns.
    """
    possible = world > 1 and device.type == "cuda"
    if not possible or setting is False:
        return False, ""
    if setting == "auto" and compile:
        return False, "train.compile: BatchNorm per GPU (SyncBatchNorm would break the compiled graph at every layer)"
    if compile:
        return True, "train.sync_bn=true with train.compile: every SyncBatchNorm layer breaks the compiled graph"
    return True, ""


def maybe_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Convert BatchNorm to SyncBatchNorm when distributed on CUDA, so BN sees the global batch's statistics.

    On cpu (gloo) it returns ``model`` unchanged: torch's SyncBatchNorm raises ``ValueError`` in training
    mode on cpu tensors, so each rank then normalises with its local batch statistics.
    """
    if is_dist() and world_size() > 1 and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model
