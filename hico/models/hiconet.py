"""HiCoNet: ResNet-18 + feature pyramid + local/medium/global projection heads + classifier.

Example::

    >>> model = HiCoNet(ModelConfig())                   # the paper's model, random init
    >>> out = model(torch.randn(4, 3, 224, 224), return_maps=True)
    >>> {k: tuple(v.shape) for k, v in out.items() if k != "maps"}
    {'local': (4, 256), 'medium': (4, 256), 'global': (4, 256), 'logits': (4, 3)}
    >>> {k: tuple(v.shape) for k, v in out["maps"].items()}
    {'c2': (4, 64, 56, 56), 'c3': (4, 128, 28, 28), 'c4': (4, 256, 14, 14), 'c5': (4, 512, 7, 7),
     'p2': (4, 256, 56, 56), 'p3': (4, 256, 28, 28), 'p4': (4, 256, 14, 14), 'p5': (4, 256, 7, 7)}
    >>> model.export_backbone("runs/x/backbone.pt")       # ResNet + FPN only; reload with resolve_backbone
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from torch import Tensor, nn

from .backbone import STAGE_CHANNELS, ResNetTrunk, load_imagenet_state_dict
from .checkpoint import BACKBONE_PREFIXES, export_backbone, load_backbone_state, read_backbone_file
from .config import ModelConfig
from .fpn import PyramidNeck
from .heads import CodeClassifier, ProjectionHead


def map_size(image_size: int, stride: int) -> int:
    """Side of a ResNet map of the given stride (4 .. 32): every stride-2 step rounds up."""
    size = image_size
    while stride > 1:
        size, stride = (size + 1) // 2, stride // 2
    return size


class HiCoNet(nn.Module):
    """Hierarchical contrastive model of HiCo (ACCV 2022), with the authors', SimCLR and USCL variants.

    ``forward(x)`` with x of shape (N, 3, H, W) returns a dict:

    * ``"local"``, ``"medium"``, ``"global"``: (N, head_dim) embeddings from the pyramid levels
      ``config.levels`` (not normalised; the losses normalise). Without the FPN (``fpn=False``: SimCLR, USCL)
      only ``"global"`` exists, computed from C5 (512 channels).
    * ``"logits"``: (N, num_classes), the classifier on the global embedding (``classifier="linear"``) or on
      avgpool(C5) (``"code"``); absent when ``num_classes == 0``.
    * ``"maps"`` (only with ``return_maps=True``): dict of the backbone maps ``"c2".."c5"`` (64/128/256/512
      channels, strides 4/8/16/32) and the pyramid maps ``"pK"`` (``fpn_channels`` channels, stride 2**K) from
      the finest level used up to ``"p5"``. A level that feeds no head (P3 by default) has no 3x3 conv: its
      map is the merged lateral + top-down map, so every parameter receives a gradient.

    After pretraining only ``backbone`` (+ ``fpn``) is kept: see :meth:`export_backbone`.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else ModelConfig()
        if cfg.num_classes is None:
            raise ValueError(
                "model.num_classes is auto (the number of classes of the data) and not resolved yet: "
                "set it (e.g. model.num_classes=3), or resolve it with hico.config.resolve_classes"
            )
        self.backbone = ResNetTrunk()
        self.fpn: PyramidNeck | None = None
        if cfg.fpn:
            first = min(int(level[1]) for level in cfg.levels)
            smoothed = set(cfg.levels) - (set() if cfg.fpn_smooth_top else {"p5"})
            in_channels = {f"c{k}": STAGE_CHANNELS[f"c{k}"] for k in range(first, 6)}
            self.fpn = PyramidNeck(in_channels, cfg.fpn_channels, cfg.fpn_norm, cfg.fpn_upsample, smoothed)
            self.sources = dict(zip(cfg.embeddings, cfg.levels, strict=True))
        else:
            self.sources = {"global": "c5"}
        self.heads = nn.ModuleDict({name: self._head(level) for name, level in self.sources.items()})
        self.classifier: nn.Module | None = None
        if cfg.num_classes and cfg.classifier == "code":
            self.classifier = CodeClassifier(STAGE_CHANNELS["c5"], cfg.num_classes)
        elif cfg.num_classes:
            self.classifier = nn.Linear(cfg.head_dim, cfg.num_classes)
        self._init_weights(cfg.init)

    def _head(self, level: str) -> ProjectionHead:
        cfg = self.config
        channels = cfg.fpn_channels if level.startswith("p") else STAGE_CHANNELS[level]
        side = map_size(cfg.image_size, 2 ** int(level[1]))
        return ProjectionHead(channels, cfg.head_dim, cfg.pooling, (side, side), cfg.head_layers, cfg.hidden_dim)

    def _init_weights(self, init: str) -> None:
        if init == "random":
            return
        if init == "imagenet":
            self.backbone.load_state_dict(load_imagenet_state_dict())
            return
        state, _ = read_backbone_file(init)
        load_backbone_state(self, state, source=init)

    def forward_maps(self, x: Tensor) -> dict[str, Tensor]:
        """(N, 3, H, W) -> the backbone maps ``"c2".."c5"`` and, with the FPN, the pyramid maps ``"pK"``."""
        maps = self.backbone(x)
        if self.fpn is not None:
            maps.update(self.fpn({name: maps[name] for name in self.fpn.in_names}))
        return maps

    @property
    def output_names(self) -> tuple[str, ...]:
        """Everything ``forward`` can return besides the maps: the embeddings, then ``"logits"`` if a classifier."""
        return (*self.sources, *(("logits",) if self.classifier is not None else ()))

    def forward(self, x: Tensor, return_maps: bool = False, outputs: Collection[str] | None = None) -> dict[str, Any]:
        """See the class docstring. ``outputs``: compute and return only these of :attr:`output_names`
        (default: all). A loss that reads fewer outputs (an ablation row) then leaves the other heads and the
        classifier out of the graph: they get no gradient (``None``), which DistributedDataParallel finds with
        ``find_unused_parameters=True``; computed and discarded, they would get zero gradients, and Adam's
        weight decay would move them."""
        cfg = self.config
        if cfg.pooling == "flatten" and tuple(x.shape[-2:]) != (cfg.image_size, cfg.image_size):
            raise ValueError(
                f"pooling='flatten' fixes the input to {cfg.image_size}x{cfg.image_size} "
                f"(ModelConfig.image_size), got {x.shape[-2]}x{x.shape[-1]}"
            )
        wanted = set(self.output_names if outputs is None else outputs)
        unknown = sorted(wanted - set(self.output_names))
        if unknown:
            raise ValueError(f"HiCoNet has no output {unknown}; it makes {list(self.output_names)}")
        linear_logits = "logits" in wanted and cfg.classifier != "code"  # the linear classifier reads "global"
        maps = self.forward_maps(x)
        out: dict[str, Any] = {
            name: self.heads[name](maps[level])
            for name, level in self.sources.items()
            if name in wanted or (name == "global" and linear_logits)
        }
        if "logits" in wanted:
            features = maps["c5"] if cfg.classifier == "code" else out["global"]
            out["logits"] = self.classifier(features)
        out = {name: value for name, value in out.items() if name in wanted}
        if return_maps:
            out["maps"] = maps
        return out

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """The ``backbone.*`` and ``fpn.*`` entries of ``state_dict()`` (what :meth:`export_backbone` saves)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(BACKBONE_PREFIXES)}

    def export_backbone(self, path: str | os.PathLike[str]) -> None:
        """Save backbone + FPN weights and the config, atomically; see :func:`hico.models.export_backbone`."""
        export_backbone(self, path)
