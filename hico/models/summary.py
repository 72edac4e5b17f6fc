"""Parameter counts of a :class:`~hico.models.HiCoNet` by part (for ``hico model summary``).

Example::

    >>> count_parameters(ModelConfig())          # built on the meta device: no memory is allocated
    {'backbone': 11176512, 'fpn': 2018816, 'head_local': 65792, 'head_medium': 65792, 'head_global': 65792,
     'classifier': 771, 'total': 13393475}
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from hico.names import LEVELS

from .checkpoint import unwrap
from .config import ModelConfig
from .hiconet import HiCoNet


def count_parameters(model: nn.Module | ModelConfig) -> dict[str, int]:
    """Parameters per part: backbone, fpn, head_local, head_medium, head_global, classifier, total.

    Every key is always present (0 for a part the model lacks, e.g. the FPN and the local/medium heads of
    ``fpn=False``). Given a :class:`ModelConfig`, the model is built on the ``meta`` device (random init), so
    even the authors' 205 M-parameter flatten heads cost no memory to count. A classifier sized by the data
    (``num_classes`` auto, not resolved) is not counted: its size depends on the dataset.
    """
    if isinstance(model, ModelConfig):
        with torch.device("meta"):
            model = HiCoNet(dataclasses.replace(model, init="random", num_classes=model.num_classes or 0))
    model = unwrap(model)

    def numel(module: nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    counts = {"backbone": numel(model.backbone), "fpn": numel(model.fpn)}
    for name in LEVELS:
        counts[f"head_{name}"] = numel(model.heads[name]) if name in model.heads else 0
    counts["classifier"] = numel(model.classifier)
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
