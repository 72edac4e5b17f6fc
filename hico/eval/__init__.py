"""Downstream evaluation of pretrained backbones: k-NN, linear probes, fine-tuning and their metrics."""
