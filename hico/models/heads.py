"""Projection heads (pool or flatten a level map, then an MLP) and the authors' classifier variant.

Example::

    >>> head = ProjectionHead(256, out_dim=256)              # the paper: avgpool -> Linear(256 -> 256)
    >>> head(torch.randn(4, 256, 56, 56)).shape
    torch.Size([4, 256])
    >>> head = ProjectionHead(256, out_dim=256, pooling="flatten", spatial=(7, 7), layers=2, hidden_dim=256)
    >>> head(torch.randn(4, 256, 7, 7)).shape                # authors: Linear(256*7*7 -> 256) -> ReLU -> Linear
    torch.Size([4, 256])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def mlp(in_dim: int, out_dim: int, layers: int = 1, hidden_dim: int = 256) -> nn.Sequential:
    """``layers`` Linear layers with ReLU between them: in_dim -> hidden_dim -> ... -> out_dim."""
    dims = [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]
    modules: list[nn.Module] = []
    for i in range(layers):
        if i:
            modules.append(nn.ReLU(inplace=True))
        modules.append(nn.Linear(dims[i], dims[i + 1]))
    return nn.Sequential(*modules)


class ProjectionHead(nn.Module):
    """(N, C, H, W) map -> (N, out_dim) embedding.

    ``pooling="avg"`` averages over H, W (any input size); ``pooling="flatten"`` (the authors' code) flattens
    to C*H*W features, so the map must have exactly ``spatial`` = (H, W), and the first Linear has
    C*H*W*width weights (205 M for C=256, 56x56, width 256).
    """

    def __init__(
        self,
        in_channels: int,
        out_dim: int = 256,
        pooling: str = "avg",
        spatial: tuple[int, int] | None = None,
        layers: int = 1,
        hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        if pooling not in ("avg", "flatten"):
            raise ValueError(f"pooling must be 'avg' or 'flatten', got {pooling!r}")
        if pooling == "flatten" and spatial is None:
            raise ValueError("pooling='flatten' needs the map size: spatial=(H, W)")
        self.pooling = pooling
        self.spatial = tuple(spatial) if pooling == "flatten" else None
        in_dim = in_channels * spatial[0] * spatial[1] if pooling == "flatten" else in_channels
        self.mlp = mlp(in_dim, out_dim, layers, hidden_dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.pooling == "avg":
            return self.mlp(x.mean(dim=(2, 3)))
        if tuple(x.shape[-2:]) != self.spatial:
            raise ValueError(
                f"pooling='flatten' head was built for {self.spatial[0]}x{self.spatial[1]} maps "
                f"(ModelConfig.image_size) but got {x.shape[-2]}x{x.shape[-1]}: resize inputs to image_size"
            )
        return self.mlp(torch.flatten(x, 1))


class CodeClassifier(nn.Module):
    """The authors' HiCo classifier: avgpool(C5) -> Linear(512 -> 256) -> ReLU -> Linear(256 -> K).

    Shapes: (N, 512, H, W) -> (N, K).
    """

    def __init__(self, in_channels: int, num_classes: int, hidden_dim: int = 256) -> None:
        super().__init__()
        self.mlp = mlp(in_channels, num_classes, layers=2, hidden_dim=hidden_dim)

    def forward(self, c5: Tensor) -> Tensor:
        return self.mlp(c5.mean(dim=(2, 3)))
