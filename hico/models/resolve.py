"""Turn what a user names as a backbone (a run folder, a file, ``random``, ``imagenet``) into a model.

:func:`resolve_backbone` is the one loader of pretrained backbones: ``hico probe``, ``hico embed``,
``hico finetune``, the app and the notebooks all go through it, so a file that one accepts, all accept.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from .checkpoint import read_backbone_file
from .config import ModelConfig
from .hiconet import HiCoNet


def backbone_file(spec: str | Path) -> Path:
    """The weights file behind ``spec``: a file as given, or ``RUNDIR/backbone.pt`` (else its ``last.pt``).

    Raises:
        FileNotFoundError: naming the path and what was looked for.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        for candidate in (path / "backbone.pt", path / "checkpoints" / "last.pt"):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"{path} holds neither backbone.pt nor checkpoints/last.pt: is it a `hico pretrain` run directory?"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone {str(spec)!r} not found: give a run directory, a .pt file, random or imagenet"
        )
    return path


def load_backbone(path: str | os.PathLike[str], config: ModelConfig | None = None) -> HiCoNet:
    """A new :class:`HiCoNet` with backbone + FPN from ``path`` (heads and classifier freshly initialised).

    The architecture comes from ``config`` if given (its ``init`` is replaced by ``path``), else from the
    config stored in the file; a file that stores none (a bare or torchvision ResNet-18 state dict) builds the
    architecture it fits: :class:`ModelConfig`'s defaults, with the FPN when the file has FPN weights, a plain
    ResNet otherwise.

    Raises:
        FileNotFoundError: no such file.
        CheckpointMismatchError: the file cannot be read or its weights do not fit ``config``.
    """
    path = os.fspath(path)
    if config is None:
        state, stored = read_backbone_file(path)
        if stored is not None:
            config = ModelConfig.from_dict(stored)
        else:
            config = ModelConfig(fpn=any(k.startswith("fpn.") for k in state))
    return HiCoNet(ModelConfig.from_dict({**config.to_dict(), "init": path}))


def resolve_backbone(spec: str | Path, config: ModelConfig | None = None, *, seed: int | None = None) -> HiCoNet:
    """A :class:`HiCoNet` whose backbone (+ FPN) comes from ``spec``; heads and classifier are new.

    Args:
        spec: ``"random"``, ``"imagenet"``, a run directory, or a file (``export_backbone`` output, a
            training checkpoint, a bare or torchvision ResNet-18 state dict: :func:`load_backbone`).
        config: architecture to build; default: the one stored with the weights (or :class:`ModelConfig`'s
            defaults for ``random`` / ``imagenet``, or the one a file without a config fits).
        seed: build the model under ``torch.manual_seed(seed)`` and leave the global RNG state as it was, so
            that ``random`` (and the new heads) are the same network on every call; None: draw from the
            global RNG.

    Raises:
        FileNotFoundError: the path does not exist (one line, naming it).
        CheckpointMismatchError, WeightsUnavailableError: :class:`~hico.errors.UserError`\\ s (ValueError):
            the file cannot be read or does not fit, or ImageNet weights are unavailable offline.
    """
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return resolve_backbone(spec, config)
    if str(spec) in ("random", "imagenet"):
        return HiCoNet(dataclasses.replace(config or ModelConfig(), init=str(spec)))
    return load_backbone(backbone_file(spec), config)
