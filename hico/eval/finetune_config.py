"""The settings of ``hico finetune`` (:class:`FinetuneConfig`), validated; no torch, so the command line can
build its parser (defaults, choices) without importing the model code (:mod:`hico.eval.finetune`)."""

from __future__ import annotations

from dataclasses import dataclass

from hico.checks import check_int, is_number

TRAINABLE = ("last_block", "head", "layer4", "all")
"""The ``trainable`` modes, the default first."""


@dataclass
class FinetuneConfig:
    """Settings of :func:`finetune` (see the module docstring for what they do).

    folds: number of cross-validation folds (grouped by patient, stratified by class), >= 2.
    epochs: training epochs per fold (>= 1).
    batch_size: training batch size (>= 2: trained BatchNorm layers need more than one sample).
    lr, weight_decay: Adam learning rate (> 0) and L2 weight decay (>= 0); cosine decay over all steps.
    trainable: one of :data:`TRAINABLE`.
    size: input side in pixels (>= 32).
    frames_per_video: evenly spaced frames per training video, or None for all.
    test_frames_per_video: evenly spaced frames per test / inner-validation video, or None for all.
    seed: seeds the folds, the inner split, the head's init, the batch order and the augmentation.
    device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    classes: the classes to keep (others are dropped), or None for all of the dataset's.
    val_fraction: fraction of each fold's training videos held out as inner validation, in (0, 1).
    bootstrap: bootstrap replicates of the accuracy interval (>= 1).
    """

    folds: int = 5
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.01
    weight_decay: float = 1e-4
    trainable: str = "last_block"
    size: int = 224
    frames_per_video: int | None = 16
    test_frames_per_video: int | None = None
    seed: int = 0
    device: str = "auto"
    classes: list[str] | None = None
    val_fraction: float = 0.2
    bootstrap: int = 1000

    def __post_init__(self) -> None:
        _check_int("folds", self.folds, 2)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 2)
        _check_int("size", self.size, 32)
        _check_int("seed", self.seed, 0)
        _check_int("bootstrap", self.bootstrap, 1)
        for name in ("frames_per_video", "test_frames_per_video"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1, extra=" or None (all frames)")
        if not is_number(self.lr) or not self.lr > 0:
            raise ValueError(f"FinetuneConfig.lr must be a finite number > 0, got {self.lr!r}")
        if not is_number(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"FinetuneConfig.weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not is_number(self.val_fraction) or not 0 < self.val_fraction < 1:
            raise ValueError(f"FinetuneConfig.val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"FinetuneConfig.trainable must be one of {', '.join(TRAINABLE)}, got {self.trainable!r}")
        if not isinstance(self.device, str):
            raise ValueError(f"FinetuneConfig.device must be a string such as auto, cpu, cuda, got {self.device!r}")
        if self.device != "auto":
            import torch

            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise ValueError(
                    f"FinetuneConfig.device must be auto, cpu, cuda or cuda:N, got {self.device!r}"
                ) from None
        if self.classes is not None:
            if isinstance(self.classes, str) or not all(isinstance(c, str) for c in self.classes):
                raise ValueError(f"FinetuneConfig.classes must be a list of class names, got {self.classes!r}")
            self.classes = list(self.classes)
            if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
                raise ValueError(f"FinetuneConfig.classes must name at least 2 distinct classes, got {self.classes}")


def _check_int(name: str, v: object, minimum: int, extra: str = "") -> None:
    check_int(f"FinetuneConfig.{name}", v, minimum, extra)
