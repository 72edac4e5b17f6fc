"""ResNet-18 trunk returning its four stages as named maps, and offline-safe ImageNet weights.

Example::

    >>> trunk = ResNetTrunk()
    >>> maps = trunk(torch.randn(2, 3, 224, 224))
    >>> {k: tuple(v.shape) for k, v in maps.items()}
    {'c2': (2, 64, 56, 56), 'c3': (2, 128, 28, 28), 'c4': (2, 256, 14, 14), 'c5': (2, 512, 7, 7)}
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn
from torchvision.models import ResNet18_Weights, resnet18

from hico.errors import UserError

STAGE_CHANNELS = {"c2": 64, "c3": 128, "c4": 256, "c5": 512}
"""Output channels of the ResNet-18 stages; ``cK`` has stride ``2**K``."""


class WeightsUnavailableError(UserError, RuntimeError):
    """Pretrained weights are neither in the local cache nor downloadable (e.g. offline).

    A :class:`~hico.errors.UserError` (one line, exit 2: the message says where to put the file).
    """


class ResNetTrunk(nn.Module):
    """torchvision's ``resnet18`` without ``avgpool``/``fc``; ``forward`` returns C2..C5.

    Every parameter is trainable and BatchNorm is the regular ``nn.BatchNorm2d`` (unlike
    ``torchvision.models.detection.resnet_fpn_backbone``, which freezes BN and early stages by default).
    Submodule names equal torchvision's (``conv1``, ``bn1``, ``layer1`` .. ``layer4``), so its state dicts load
    as they are and ``trunk.layer4[1]`` is the last residual block.

    Shapes: (N, 3, H, W) -> {"c2": (N, 64, H/4, W/4), "c3": (N, 128, H/8, W/8), "c4": (N, 256, H/16, W/16),
    "c5": (N, 512, H/32, W/32)} (sizes rounded up for sides that are not multiples of 32).
    """

    def __init__(self) -> None:
        super().__init__()
        net = resnet18(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return {"c2": c2, "c3": c3, "c4": c4, "c5": c5}


def imagenet_cache_path() -> str:
    """Where torch hub keeps (or would keep) torchvision's ImageNet ResNet-18 weights."""
    filename = os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def load_imagenet_state_dict() -> dict[str, Tensor]:
    """torchvision's ``ResNet18_Weights.IMAGENET1K_V1`` state dict, without the ``fc`` classifier.

    Reads the torch hub cache; if the file is not there, tries to download it (as torchvision does). Offline,
    raises :class:`WeightsUnavailableError` with one sentence saying where to put the file.
    """
    url = ResNet18_Weights.IMAGENET1K_V1.url
    cached = imagenet_cache_path()
    present = os.path.isfile(cached)
    try:
        state = torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True, weights_only=True)
    except OSError as err:  # URLError, HTTPError, timeouts, unwritable cache
        if present:
            raise WeightsUnavailableError(
                f"ImageNet weights for resnet18 in the torch hub cache ({cached}) cannot be read ({err}): "
                f"delete the file and download {url} again, or use init='random'."
            ) from err
        raise WeightsUnavailableError(
            f"ImageNet weights for resnet18 are not in the torch hub cache ({cached}) and cannot be downloaded "
            f"({err}): download {url} on a machine with internet and copy it there, or use init='random'."
        ) from err
    except Exception as err:  # truncated or corrupt cache file (pickle / zip errors)
        raise WeightsUnavailableError(
            f"ImageNet weights for resnet18 could not be loaded from {cached} ({type(err).__name__}: {err}): "
            f"delete the file and download {url} again, or use init='random'."
        ) from err
    return {k: v for k, v in state.items() if not k.startswith("fc.")}
