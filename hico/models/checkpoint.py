"""Save and load the reusable part of a model: the ResNet backbone and the FPN (heads are discarded).

The file written by :func:`export_backbone` is a dict::

    {"format": "hico-backbone", "version": 1, "config": ModelConfig.to_dict(),
     "state_dict": {"backbone.conv1.weight": ..., "fpn.inner_blocks.0.0.weight": ..., ...}}

Example::

    >>> export_backbone(model, "runs/x/backbone.pt")
    >>> model2 = load_backbone("runs/x/backbone.pt")      # hico.models.resolve: same config, new heads
    >>> model3 = HiCoNet(ModelConfig(fpn=False, init="runs/x/backbone.pt"))   # just the ResNet
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from hico.errors import UserError
from hico.io import atomic_write

FORMAT = "hico-backbone"
VERSION = 1
BACKBONE_PREFIXES = ("backbone.", "fpn.")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


class CheckpointMismatchError(UserError, RuntimeError):
    """A checkpoint's backbone/FPN weights do not fit the model being built, or the file cannot be read.

    A :class:`~hico.errors.UserError` (the user named the file: one line, exit 2); still a ``RuntimeError``.
    """


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside ``torch.compile`` and (Distributed)DataParallel wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def export_backbone(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write ``model``'s backbone + FPN weights (not heads or classifier) and its config to ``path``.

    Written atomically (:func:`hico.io.atomic_write`: a temporary file in the same folder, fsynced, renamed over
    ``path``), so a crash never leaves a truncated file and a full disk raises :class:`hico.io.DiskFullError`.
    ``model`` may be wrapped by DDP or ``torch.compile``.
    """
    model = unwrap(model)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.backbone_state_dict().items()},
    }
    atomic_write(path, lambda f: torch.save(payload, f), mode="wb")


def read_backbone_file(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """Backbone/FPN state dict (keys ``backbone.*``, ``fpn.*``) and model config dict (or None) from a file.

    Accepts a file from :func:`export_backbone`; a training checkpoint dict whose ``"model"`` is the full
    state dict (config read from its ``"model_config"`` key, if any); a bare model state dict; or a
    torchvision ResNet-18 state dict (``conv1.weight``, ...; its ``fc`` is dropped).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"checkpoint file not found: {path!r} (ModelConfig.init must be 'random', 'imagenet' or the path "
            "of an existing checkpoint)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointMismatchError(f"cannot read checkpoint {path!r}: {_load_error(err)}") from err
    config = None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        state, config = obj["state_dict"], obj.get("config")
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        state, config = obj["model"], obj.get("model_config")
    elif isinstance(obj, dict) and all(isinstance(v, Tensor) for v in obj.values()):
        state = obj
    else:
        raise CheckpointMismatchError(
            f"{path!r} is neither a hico backbone file, a training checkpoint with a 'model' state dict, "
            "nor a state dict"
        )
    state = {_strip_wrappers(k): v for k, v in state.items()}
    if not any(k.startswith(BACKBONE_PREFIXES) for k in state) and "conv1.weight" in state:
        state = {"backbone." + k: v for k, v in state.items() if not k.startswith("fc.")}  # torchvision ResNet
    return {k: v for k, v in state.items() if k.startswith(BACKBONE_PREFIXES)}, config


def load_backbone_state(model: nn.Module, state: dict[str, Tensor], source: str = "checkpoint") -> None:
    """Load backbone (+ FPN) weights into ``model``; any mismatch raises, listing a few offending keys.

    The backbone must match exactly. FPN weights are loaded when both the model and the file have an FPN;
    a model without one ignores them; a file without any (SimCLR/USCL or torchvision weights) leaves the
    model's FPN at its initialisation.
    """
    own = unwrap(model).backbone_state_dict()
    if not any(k.startswith("fpn.") for k in own) or not any(k.startswith("fpn.") for k in state):
        own = {k: v for k, v in own.items() if k.startswith("backbone.")}
        state = {k: v for k, v in state.items() if k.startswith("backbone.")}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if not state:
        raise CheckpointMismatchError(f"{source!r} holds no backbone weights")
    if missing or unexpected or wrong:
        found = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        parts = [
            f"{label} ({len(keys)}): {', '.join(keys[:4])}{', ...' * (len(keys) > 4)}" for label, keys in found if keys
        ]
        raise CheckpointMismatchError(
            f"backbone/FPN weights in {source!r} do not fit this ModelConfig (fpn, levels, fpn_norm, "
            f"fpn_smooth_top must match those it was trained with): " + "; ".join(parts)
        )
    model = unwrap(model)
    model.backbone.load_state_dict(_sub(state, "backbone."), strict=False)
    if model.fpn is not None and any(k.startswith("fpn.") for k in state):
        model.fpn.load_state_dict(_sub(state, "fpn."))


def _load_error(err: Exception) -> str:
    """One line for why ``torch.load`` failed (its refusals of a pickle span several paragraphs)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:  # not a tensors-only PyTorch file: keep the unpickler's own reason
        reason = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n\n")[0]
        return f"not a checkpoint of tensors (torch.load: {' '.join(reason.split())})"
    return f"{type(err).__name__}: {' '.join(text.split())}"


def _strip_wrappers(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _sub(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
