"""Feature pyramid on ResNet stages: torchvision's ``FeaturePyramidNetwork`` with HiCo's options.

Example::

    >>> neck = PyramidNeck({"c2": 64, "c3": 128, "c4": 256, "c5": 512}, smoothed=("p2", "p4", "p5"))
    >>> sizes = {"c2": (64, 16), "c3": (128, 8), "c4": (256, 4), "c5": (512, 2)}
    >>> maps = neck({k: torch.randn(2, c, s, s) for k, (c, s) in sizes.items()})
    >>> {k: tuple(v.shape) for k, v in maps.items()}
    {'p2': (2, 256, 16, 16), 'p3': (2, 256, 8, 8), 'p4': (2, 256, 4, 4), 'p5': (2, 256, 2, 2)}
"""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork


class PyramidNeck(FeaturePyramidNetwork):
    """Top-down FPN: 1x1 lateral convs, 2x upsampling added top-down, 3x3 convs on the merged maps.

    Same modules and state-dict keys as ``torchvision.ops.FeaturePyramidNetwork`` (``inner_blocks.i``,
    ``layer_blocks.i``), plus:

    * ``norm=True``: every conv is followed by BatchNorm2d and ReLU (the paper); ``False``: plain convs with
      bias (the authors' code, and torchvision's default).
    * ``upsample``: ``"nearest"`` (torchvision) or ``"bilinear"`` (the authors' code; ``align_corners=False``).
    * ``smoothed``: the levels that get the 3x3 conv. A level outside it outputs its merged map as it is: the
      authors leave P5 unsmoothed, and a level that feeds no head gets no conv, so that no parameter
      goes without a gradient (which DistributedDataParallel would otherwise have to search for).

    Shapes: {"cK": (N, C_K, H_K, W_K)} for consecutive K ending at 5 -> {"pK": (N, out_channels, H_K, W_K)}.
    """

    def __init__(
        self,
        in_channels: dict[str, int],
        out_channels: int = 256,
        norm: bool = True,
        upsample: str = "nearest",
        smoothed: Iterable[str] = ("p2", "p3", "p4", "p5"),
    ) -> None:
        super().__init__(list(in_channels.values()), out_channels, norm_layer=nn.BatchNorm2d if norm else None)
        if upsample not in ("nearest", "bilinear"):
            raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")
        self.upsample = upsample
        self.in_names = list(in_channels)
        self.out_names = ["p" + name[1:] for name in in_channels]
        smoothed = set(smoothed)
        for i, name in enumerate(self.out_names):
            if norm:
                self.inner_blocks[i].append(nn.ReLU(inplace=True))
                self.layer_blocks[i].append(nn.ReLU(inplace=True))
            if name not in smoothed:
                self.layer_blocks[i] = nn.Identity()

    def forward(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        """Maps ordered finest first, as given; returns the pyramid maps ``pK`` in the same order."""
        feats = list(x.values())
        last = self.inner_blocks[-1](feats[-1])
        results = [self.layer_blocks[-1](last)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.inner_blocks[i](feats[i])
            if self.upsample == "nearest":
                top_down = F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            else:
                top_down = F.interpolate(last, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            last = lateral + top_down
            results.insert(0, self.layer_blocks[i](last))
        return dict(zip(self.out_names, results, strict=True))
