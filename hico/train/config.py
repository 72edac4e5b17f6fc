"""The ``train`` section of a method configuration: optimisation, schedule, devices, logging, evaluation."""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    """How pretraining runs. The defaults reproduce the paper (METHOD.md section 5).

    Attributes:
        epochs: passes over the training videos (paper: 300).
        batch_size: positive pairs per optimizer step, over all processes (paper: 32).
        lr, weight_decay: Adam (paper: 3e-4, 1e-4).
        constant_epochs: epochs at constant lr before the cosine decay to 0 (authors' code: 10).
        pairs_per_video: pairs drawn from each training video per epoch.
        workers: data-loader worker processes; -1 = auto (0 on CPU, where frames come from the cache in
            microseconds and augmentation runs in the main process, up to 8 on CUDA).
        device: ``auto`` (CUDA, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``auto`` (bf16 autocast on CUDA, fp32 elsewhere), ``bf16`` or ``fp32``.
        compile: ``torch.compile`` the model (checkpoints always hold the uncompiled weights).
        channels_last: NHWC memory format (auto: on CUDA).
        seed: seeds model init, splits, labelled subset, pairs and augmentations.
        log_every: write a step record to metrics.jsonl every this many steps.
        holdout: fraction of videos (grouped by patient) held out for the k-NN monitor and best.pt.
        knn_every: epochs between k-NN evaluations, which also run before training and at the last epoch (0 = never).
        knn_frames_per_video: frames per video in the k-NN feature bank and queries.
        knn_k: neighbours of the k-NN classifier.
        max_steps: stop after this many optimizer steps in total (0 = no limit; for benchmarks and tests).
        checkpoint_every: also write last.pt every this many steps (0 = at the end of every epoch only).
        epoch_checkpoints: keep the backbone + FPN weights of epoch 0 (before training), of powers of two and of
            the last epoch in ``checkpoints/epoch_NNNN.pt`` (as ``backbone.pt``; about 53 MB each at ResNet-18
            + FPN), whether or not k-NN runs or videos are held out.
    """

    epochs: int = 300
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    constant_epochs: int = 10
    pairs_per_video: int = 1
    workers: int = -1
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    channels_last: str | bool = "auto"
    seed: int = 0
    log_every: int = 10
    holdout: float = 0.2
    knn_every: int = 1
    knn_frames_per_video: int = 4
    knn_k: int = 10
    max_steps: int = 0
    checkpoint_every: int = 0
    epoch_checkpoints: bool = True

    def __post_init__(self) -> None:
        for name, low in (
            ("epochs", 1),
            ("batch_size", 2),
            ("pairs_per_video", 1),
            ("log_every", 1),
            ("knn_frames_per_video", 1),
            ("knn_k", 1),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"train.{name} must be an integer >= {low}, got {v!r}")
        for name in ("constant_epochs", "knn_every", "max_steps", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"train.{name} must be an integer >= 0, got {v!r}")
        if not (isinstance(self.workers, int) and self.workers >= -1):
            raise ValueError(f"train.workers must be -1 (auto) or >= 0, got {self.workers!r}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"train.holdout must be in [0, 1), got {self.holdout}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not isinstance(self.epoch_checkpoints, bool):
            raise ValueError(f"train.epoch_checkpoints must be true or false, got {self.epoch_checkpoints!r}")
        if self.channels_last not in ("auto", True, False):
            raise ValueError(f"train.channels_last must be auto, true or false, got {self.channels_last!r}")
