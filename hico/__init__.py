"""HiCo workbench: hierarchical contrastive pretraining on ultrasound video."""

__version__ = "0.1.0"
