"""What the app's embedding maps show beside the points: per-level quality readouts and nearest neighbours."""

from __future__ import annotations

import warnings

import numpy as np

from hico.eval.features import Features
from hico.eval.knn import knn_predict


def leave_one_video_out_knn(features: Features, k: int = 10) -> dict[str, float]:
    """Per level, the frame accuracy of k-NN where each video's frames are classified by all OTHER videos' frames
    (a frame's own video never votes: neighbours from it would be near-copies)."""
    out = {}
    n_classes = len(features.classes)
    videos = np.unique(features.video)
    for name, x in features.levels.items():
        correct = 0
        for v in videos:
            test = features.video == v
            if test.all():
                continue
            pred = knn_predict(x[~test], features.labels[~test], x[test], k=k, num_classes=n_classes)
            correct += int(np.sum(pred == features.labels[test]))
        out[name] = correct / len(features) if len(videos) > 1 else float("nan")
    return out


def silhouettes(features: Features) -> dict[str, float]:
    """Per level, the silhouette score of the classes (cosine distance); nan with fewer than 2 classes present."""
    from sklearn.metrics import silhouette_score

    present = len(np.unique(features.labels))
    out = {}
    for name, x in features.levels.items():
        if present < 2 or present >= len(features):
            out[name] = float("nan")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[name] = float(silhouette_score(x, features.labels, metric="cosine"))
    return out


def nearest(x: np.ndarray, row: int, n: int = 5) -> np.ndarray:
    """Indices of the ``n`` rows of ``x`` most cosine-similar to row ``row`` (itself excluded), closest first."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit[row]
    sim[row] = -np.inf
    n = min(n, len(x) - 1)
    top = np.argpartition(-sim, n - 1)[:n] if n > 0 else np.zeros(0, np.int64)
    return top[np.argsort(-sim[top], kind="stable")]
