"""What the app's embedding maps show beside the points: per-level quality readouts and nearest neighbours."""

from __future__ import annotations

import warnings

import numpy as np

from hico.eval.features import Features
from hico.eval.knn import knn_vote


def leave_one_video_out_knn(features: Features, k: int = 10) -> dict[str, float]:
    """Per level, the frame accuracy of k-NN where each video's frames are classified by all OTHER videos' frames
    (a frame's own video never votes: neighbours from it would be near-copies)."""
    import torch
    import torch.nn.functional as F

    videos = torch.as_tensor(features.video)
    labels = torch.as_tensor(features.labels).long()
    same_video = videos[:, None] == videos[None, :]
    out = {}
    for name, x in features.levels.items():
        if len(np.unique(features.video)) < 2:
            out[name] = float("nan")
            continue
        unit = F.normalize(torch.as_tensor(x, dtype=torch.float32), dim=1)
        sim = (unit @ unit.T).masked_fill_(same_video, -torch.inf)  # a frame's own video never votes
        pred = knn_vote(sim, labels, k, len(features.classes), temperature=0.07)
        out[name] = float((pred == labels).double().mean())
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


def align_map(xy: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``xy`` (F, 2) scaled to the spread of ``reference`` (F, 2), the same frames' map, then turned, mirrored and
    shifted to lie as close to it as possible (orthogonal Procrustes). A UMAP map's orientation is arbitrary: the
    app aligns the maps of a run's epochs on its last epoch's, so that the slider shows the points move, not the
    map spin. The shape of ``xy`` is unchanged (every distance is multiplied by the same factor)."""
    from scipy.linalg import orthogonal_procrustes

    a = np.asarray(xy, np.float64) - np.mean(xy, axis=0)
    b = np.asarray(reference, np.float64) - np.mean(reference, axis=0)
    if not np.linalg.norm(a) or not np.linalg.norm(b):
        return np.asarray(xy, np.float32)
    rotation, _ = orthogonal_procrustes(a, b)
    scale = np.linalg.norm(b) / np.linalg.norm(a)
    return (scale * a @ rotation + np.mean(reference, axis=0)).astype(np.float32)


def level_maps(features: Features, cache_dir=None) -> dict:
    """Everything an embedding map of the three levels shows: per level the features, their 2-D UMAP (cached on
    disk by content, see :func:`hico.eval.embed.umap_2d`), leave-one-video-out k-NN accuracy and silhouette; and
    per frame its label, video and frame number.

    Returns ``{"levels", "umap", "knn", "silhouette": {level: ...}, "labels", "classes", "video", "video_ids",
    "frame"}``.
    """
    from hico.eval.embed import umap_2d

    return {
        "levels": dict(features.levels),
        "umap": {name: umap_2d(x, cache_dir=cache_dir) for name, x in features.levels.items()},
        "knn": leave_one_video_out_knn(features),
        "silhouette": silhouettes(features),
        "labels": features.labels,
        "classes": list(features.classes),
        "video": features.video,
        "video_ids": features.frame_video_ids,
        "frame": features.frame,
    }


def features_key(source: str, per_video: int | None) -> str:
    """The key naming the features of ``source`` (a checkpoint or a saved features file; ``random``: random init)
    for ``per_video`` frames per video: its path and modification time, so it changes when the file does."""
    from pathlib import Path

    return f"{source}:{Path(source).stat().st_mtime if source != 'random' else 0}:{per_video}"


def features_cache_file(key: str, data: str, size: int, per_video: int, videos):
    """``<hico cache>/app/features/<hash>.npz``, where the app keeps the features it extracted: the hash names the
    checkpoint (``key``, from :func:`features_key`), the frame selection, and the dataset ``videos`` loaded from
    ``data`` (every source file's path, mtime and size, and every video's class and group)."""
    import hashlib
    from pathlib import Path

    from hico.data.cache import default_cache_dir, source_key

    files = [f for v in videos.videos for f in v.files]
    labels = "|".join(f"{v.video_id}:{v.label}:{v.group}" for v in videos.videos)
    text = f"{key}|{Path(data).resolve()}|{size}|{per_video}|{source_key(files, size)}|{labels}"
    return default_cache_dir() / "app" / "features" / f"{hashlib.sha1(text.encode()).hexdigest()}.npz"
