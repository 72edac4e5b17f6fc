"""Models: HiCoNet (ResNet-18 + FPN + hierarchical projection heads), its config, and backbone export."""

from .backbone import ResNetTrunk, WeightsUnavailableError
from .checkpoint import CheckpointMismatchError, export_backbone
from .config import PRESETS, ModelConfig
from .fpn import PyramidNeck
from .heads import ProjectionHead
from .hiconet import HiCoNet
from .resolve import backbone_file, load_backbone, resolve_backbone
from .summary import count_parameters

__all__ = [
    "PRESETS",
    "CheckpointMismatchError",
    "HiCoNet",
    "ModelConfig",
    "ProjectionHead",
    "PyramidNeck",
    "ResNetTrunk",
    "WeightsUnavailableError",
    "count_parameters",
    "export_backbone",
    "load_backbone",
    "backbone_file",
    "resolve_backbone",
]
