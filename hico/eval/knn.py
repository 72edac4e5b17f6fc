"""Weighted k-nearest-neighbour classification on frozen features (InstDisc / DINO style).

Cosine similarity between L2-normalised features; each test row takes its k most similar training rows, whose
votes for their class weigh ``exp(sim / temperature)``; the class with the largest total wins. Ties between
classes go to the lowest class index; among training rows of equal similarity, torch's ``topk`` decides
(deterministically for the same inputs and device). Test rows are processed in chunks, so memory stays
O(chunk * N_train).

Example::

    >>> pred = knn_predict(train_x, train_y, test_x, k=10)            # (N_test,) int64
    >>> level_knn_accuracy(features, train_videos, test_videos)       # {"local": 0.81, "medium": ..., ...}
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hico.eval.features import Features


def knn_predict(
    train_x: np.ndarray | torch.Tensor,
    train_y: np.ndarray | torch.Tensor,
    test_x: np.ndarray | torch.Tensor,
    k: int = 10,
    num_classes: int | None = None,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Predicted class of every test row, (N_test,) int64.

    Args:
        train_x: (N, D) training features.
        train_y: (N,) int training labels in [0, num_classes).
        test_x: (M, D) test features.
        k: neighbours per test row; clipped to N.
        num_classes: K (default: ``max(train_y) + 1``).
        temperature: vote weight ``exp(cos_sim / temperature)``.
        chunk_size: test rows per similarity block.

    Raises:
        ValueError: no training row, mismatched shapes, k < 1 or temperature <= 0.
    """
    tr = torch.as_tensor(train_x, dtype=torch.float32)
    te = torch.as_tensor(test_x, dtype=torch.float32, device=tr.device)
    ty = torch.as_tensor(np.asarray(train_y) if not torch.is_tensor(train_y) else train_y, device=tr.device).long()
    if tr.ndim != 2 or te.ndim != 2 or tr.shape[1] != te.shape[1]:
        raise ValueError(f"train_x and test_x must be (N, D) and (M, D), got {tuple(tr.shape)} and {tuple(te.shape)}")
    if ty.shape != (tr.shape[0],):
        raise ValueError(f"train_y must be ({tr.shape[0]},), got {tuple(ty.shape)}")
    if tr.shape[0] == 0:
        raise ValueError("k-NN needs at least one training row")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    num_classes = int(num_classes if num_classes is not None else int(ty.max()) + 1)
    k = min(k, tr.shape[0])
    tr = F.normalize(tr, dim=1)
    out = torch.empty(te.shape[0], dtype=torch.int64)
    for start in range(0, te.shape[0], chunk_size):
        q = F.normalize(te[start : start + chunk_size], dim=1)
        out[start : start + len(q)] = knn_vote(q @ tr.T, ty, k, num_classes, temperature).cpu()
    return out.numpy()


def knn_vote(sim: torch.Tensor, train_y: torch.Tensor, k: int, num_classes: int, temperature: float) -> torch.Tensor:
    """The weighted k-NN vote of :func:`knn_predict` from a (M, N) cosine-similarity block; (M,) int64 classes.

    Entries set to ``-inf`` never vote (weight 0): the way to leave rows out without copying the features.
    """
    sim, idx = sim.topk(min(k, sim.shape[1]), dim=1)  # (M, k), most similar first
    weight = torch.exp((sim - sim[:, :1]) / temperature)  # shifted by the row max: same ratios, no overflow
    votes = torch.zeros(sim.shape[0], num_classes, dtype=torch.float64, device=sim.device)
    votes.scatter_add_(1, train_y[idx], weight.double())
    return votes.argmax(dim=1)  # argmax: first (lowest) class on ties


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    k: int = 10,
    num_classes: int | None = None,
    temperature: float = 0.07,
) -> float:
    """Fraction of test rows whose :func:`knn_predict` class equals ``test_y`` (nan without test rows)."""
    test_y = np.asarray(test_y)
    if len(test_y) == 0:
        return float("nan")
    pred = knn_predict(train_x, train_y, test_x, k=k, num_classes=num_classes, temperature=temperature)
    return float(np.mean(pred == test_y))


def level_knn_accuracy(
    features: Features, train_videos: np.ndarray, test_videos: np.ndarray, k: int = 10, temperature: float = 0.07
) -> dict[str, float]:
    """Per-level frame accuracy of k-NN with the frames of ``train_videos`` as neighbours.

    Train and test are chosen by video index (:attr:`Features.video`), so no frame of a test video is ever a
    neighbour of a test frame.

    Raises:
        ValueError: a video is on both sides, or no frame belongs to the training videos.
    """
    train_videos, test_videos = np.asarray(train_videos), np.asarray(test_videos)
    both = np.intersect1d(train_videos, test_videos)
    if len(both):
        raise ValueError(f"video {int(both[0])} is in both the training and the test videos")
    train = np.isin(features.video, train_videos)
    test = np.isin(features.video, test_videos)
    if not train.any():
        raise ValueError("no frame belongs to the training videos")
    k_classes = len(features.classes)
    return {
        name: knn_accuracy(x[train], features.labels[train], x[test], features.labels[test], k, k_classes, temperature)
        for name, x in features.levels.items()
    }
