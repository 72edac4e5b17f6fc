"""Turn what a user names as a backbone (a run folder, a file, ``random``, ``imagenet``) into a model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .checkpoint import load_backbone
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


def resolve_backbone(spec: str | Path, config: ModelConfig | None = None) -> HiCoNet:
    """A :class:`HiCoNet` whose backbone (+ FPN) comes from ``spec``; heads and classifier are new.

    Args:
        spec: ``"random"``, ``"imagenet"``, a run directory, or a file (``export_backbone`` output or a
            training checkpoint).
        config: architecture to build; default: the one stored with the weights (or :class:`ModelConfig`'s
            defaults for ``random`` / ``imagenet``).
    """
    if str(spec) in ("random", "imagenet"):
        return HiCoNet(dataclasses.replace(config or ModelConfig(), init=str(spec)))
    return load_backbone(backbone_file(spec), config)
