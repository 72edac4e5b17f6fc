"""Configuration of :class:`~hico.models.HiCoNet`: one validated dataclass and named presets.

Example::

    >>> cfg = ModelConfig()                       # the paper's model (pooled P2/P4/P5, BN+ReLU FPN), random init
    >>> cfg = ModelConfig.preset("hico-code")     # the authors' code: P2/P3/P5, flatten heads (205 M params)
    >>> cfg = ModelConfig(levels=["p2", "p3", "p5"])  # lists (from YAML) become tuples
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from typing import Any, Literal

from hico.checks import check_choice, check_int
from hico.names import LEVELS, PYRAMID_MAPS

PRESETS: dict[str, dict[str, Any]] = {
    # HiCo as the paper describes it (ACCV 2022, Sec. 3): ModelConfig() with ImageNet init.
    "hico": {"init": "imagenet"},
    # HiCo as the authors' public code builds it (see docs/METHOD.md, section 3).
    "hico-code": {
        "levels": ("p2", "p3", "p5"),
        "pooling": "flatten",
        "image_size": 224,
        "fpn_norm": False,
        "fpn_upsample": "bilinear",
        "fpn_smooth_top": False,
        "head_layers": 2,
        "hidden_dim": 256,
        "classifier": "code",
        "init": "imagenet",
    },
    # SimCLR baseline: plain ResNet-18, global embedding only, no classifier.
    "simclr": {"fpn": False, "head_layers": 2, "hidden_dim": 512, "num_classes": 0},
    # USCL (MICCAI 2021): head 512 -> 512 -> 256 on avgpool(C5), CE on the 256-d z, random init.
    "uscl": {"fpn": False, "head_layers": 2, "hidden_dim": 512, "classifier": "linear"},
}


@dataclass
class ModelConfig:
    """What :class:`~hico.models.HiCoNet` builds. Every field is checked in ``__post_init__``.

    Attributes:
        levels: FPN levels feeding the (local, medium, global) heads. Paper: ``("p2", "p4", "p5")``;
            authors' code: ``("p2", "p3", "p5")``. Unused when ``fpn=False``.
        pooling: ``"avg"``: global average pooling of each level map (N, C, H, W) -> (N, C); ``"flatten"``:
            the authors' variant, (N, C, H, W) -> (N, C*H*W), which fixes the input size to ``image_size``
            and is costly: at 224 px the local head's first Linear(256*56*56 -> 256) alone has
            205,521,152 parameters (0.8 GB in fp32, ~3.3 GB with gradients and Adam state).
        image_size: input side in pixels (square inputs); only used (and enforced) with ``pooling="flatten"``.
        fpn: build the feature pyramid. ``False`` is the SimCLR/USCL baseline: only the ``"global"`` embedding
            exists, computed from C5 (512 channels).
        fpn_channels: channels of every pyramid map (256 in the paper).
        fpn_norm: BatchNorm + ReLU after every FPN conv (paper) or plain convs (authors' code).
        fpn_upsample: top-down upsampling, ``"nearest"`` (torchvision's FPN) or ``"bilinear"`` (authors' code).
        fpn_smooth_top: apply the 3x3 conv to the top level (P5); the authors' code does not.
        head_layers: Linear layers per projection head: 1 = the paper's Linear(C -> head_dim);
            2 = Linear(C -> hidden_dim) -> ReLU -> Linear(hidden_dim -> head_dim) (authors' code, USCL).
        head_dim: embedding size of every head.
        hidden_dim: width of the hidden layers of a head (``head_layers >= 2``).
        num_classes: classes of the classifier; 0 builds no classifier and ``forward`` returns no ``"logits"``;
            ``None`` (``auto`` in YAML or ``--set``): the number of classes of the training data, which the trainer
            fills in (:func:`hico.config.resolve_classes`) before it builds the model.
        classifier: ``"linear"``: Linear(head_dim -> K) on the global embedding (paper, USCL);
            ``"code"``: avgpool(C5) -> Linear(512 -> 256) -> ReLU -> Linear(256 -> K) (authors' HiCo code).
        init: ``"random"``, ``"imagenet"`` (torchvision's IMAGENET1K_V1, needs the file in the torch hub cache
            offline) or the path of a file written by ``export_backbone`` or of a training checkpoint.
    """

    levels: tuple[str, str, str] = ("p2", "p4", "p5")
    pooling: str = "avg"
    image_size: int = 224
    fpn: bool = True
    fpn_channels: int = 256
    fpn_norm: bool = True
    fpn_upsample: str = "nearest"
    fpn_smooth_top: bool = True
    head_layers: int = 1
    head_dim: int = 256
    hidden_dim: int = 256
    num_classes: int | Literal["auto"] | None = 3  # "auto" (None once read): the number of the data's classes
    classifier: str = "linear"
    init: str = "random"

    def __post_init__(self) -> None:
        if isinstance(self.levels, str) or not isinstance(self.levels, (list, tuple)):
            raise ValueError(f"ModelConfig.levels must be 3 level names, e.g. ('p2', 'p4', 'p5'), got {self.levels!r}")
        self.levels = tuple(self.levels)
        if len(self.levels) != 3 or any(level not in PYRAMID_MAPS for level in self.levels):
            raise ValueError(
                f"ModelConfig.levels must name the (local, medium, global) levels among {PYRAMID_MAPS}, "
                f"got {self.levels!r}"
            )
        _check_choice("pooling", self.pooling, ("avg", "flatten"))
        _check_choice("fpn_upsample", self.fpn_upsample, ("nearest", "bilinear"))
        _check_choice("classifier", self.classifier, ("linear", "code"))
        for name in ("fpn", "fpn_norm", "fpn_smooth_top"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ModelConfig.{name} must be true or false, got {getattr(self, name)!r}")
        for name, low in (("image_size", 32), ("fpn_channels", 1), ("head_layers", 1), ("head_dim", 1)):
            _check_int(name, getattr(self, name), low)
        _check_int("hidden_dim", self.hidden_dim, 1)
        if self.num_classes == "auto":
            self.num_classes = None
        if self.num_classes is not None:
            _check_int("num_classes", self.num_classes, 0)
        if isinstance(self.init, os.PathLike):
            self.init = os.fspath(self.init)
        if not isinstance(self.init, str) or not self.init:
            raise ValueError(f"ModelConfig.init must be 'random', 'imagenet' or a checkpoint path, got {self.init!r}")

    @property
    def embeddings(self) -> tuple[str, ...]:
        """Names of the embeddings ``forward`` returns: all three with the FPN, only ``"global"`` without."""
        return LEVELS if self.fpn else ("global",)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/``torch.save`` friendly; ``levels`` as a list)."""
        out = dataclasses.asdict(self)
        out["levels"] = list(self.levels)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict; an unknown key is an error that names it (and the closest valid key)."""
        known = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"ModelConfig has no field {key!r}{hint}; valid fields: {', '.join(known)}")
        return cls(**data)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named configuration from :data:`PRESETS` ("hico", "hico-code", "simclr", "uscl"), with overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    check_choice(f"ModelConfig.{name}", value, choices)


def _check_int(name: str, value: Any, low: int) -> None:
    check_int(f"ModelConfig.{name}", value, low)
