"""Losses: InfoNCE / NT-Xent, HiCo's hierarchical loss, USCL's loss, MoCo's queue loss, softened targets.

>>> from hico.losses import info_nce, HiCoLoss, USCLLoss, MoCoLoss, soft_targets
"""

from hico.losses.hico_loss import CROSS_PAIRINGS, HICO_TERMS, HiCoLoss
from hico.losses.info_nce import info_nce
from hico.losses.moco import MoCoLoss, momentum_update
from hico.losses.soft_ce import SMOOTHINGS, labelled_cross_entropy, soft_targets, softened_cross_entropy
from hico.losses.uscl_loss import USCLLoss

__all__ = [
    "CROSS_PAIRINGS",
    "HICO_TERMS",
    "SMOOTHINGS",
    "HiCoLoss",
    "MoCoLoss",
    "USCLLoss",
    "info_nce",
    "labelled_cross_entropy",
    "momentum_update",
    "soft_targets",
    "softened_cross_entropy",
]
