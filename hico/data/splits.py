"""Splits at the level of videos and patients: no frame of a video, and no patient, on both sides.

All functions take per-video arrays (``labels`` (V,) int, ``groups`` (V,) hashable) and return arrays of video
indices; expand them to frames afterwards.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


def kfold_splits(
    labels: np.ndarray, groups: np.ndarray, k: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k folds of (train, test) video indices, grouped by patient and stratified by class.

    Each video is in exactly one test fold; the videos of a group are always on the same side.

    Raises:
        ValueError: fewer groups than folds, or k < 2.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    n_groups = len(np.unique(groups))
    if k < 2:
        raise ValueError(f"k must be at least 2 folds, got {k}")
    if n_groups < k:
        raise ValueError(f"{k} folds need at least {k} patient groups, the data has {n_groups}: lower --folds")
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(tr), np.sort(te)) for tr, te in cv.split(np.zeros(len(labels)), labels, groups)]


def keep_in_training(
    splits: list[tuple[np.ndarray, np.ndarray]], groups: np.ndarray, keep: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``splits`` with every video of a patient group that holds a ``keep`` video moved out of the test folds.

    ``keep`` is a (V,) bool mask (e.g. the videos whose labels a pretraining used). Those videos and the other
    videos of their groups join the training part of the fold that would have tested them, so they are in the
    training part of every fold and in no test fold; every other video keeps its fold. Deterministic; with an
    empty ``keep`` the splits come back unchanged.

    Raises:
        ValueError: a fold would be left with no test video (name the fold; lower the number of folds).
    """
    groups, keep = np.asarray(groups), np.asarray(keep, dtype=bool)
    held = np.isin(groups, groups[keep])
    out = []
    for f, (train, test) in enumerate(splits):
        if held[test].all():
            raise ValueError(
                f"fold {f + 1} of {len(splits)} has no test video left once the {int(keep.sum())} videos kept in "
                f"training (and their patients' other videos) leave it: lower the number of folds"
            )
        out.append((np.sort(np.concatenate([train, test[held[test]]])), test[~held[test]]))
    return out


def holdout_split(
    labels: np.ndarray, groups: np.ndarray, fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One grouped, stratified (train, held-out) split with about ``fraction`` of the videos held out."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    k = max(2, round(1 / fraction))
    return kfold_splits(labels, groups, k=min(k, len(np.unique(groups))), seed=seed)[0]


def label_subset(labels: np.ndarray, rate: float, seed: int = 0) -> np.ndarray:
    """Indices of the videos whose labels are kept, about ``rate`` of each class (at least one per class).

    Labels are chosen per video (all frames of a chosen video are labelled), stratified by class. ``rate=1``
    keeps all videos, ``rate=0`` none.
    """
    if not 0 <= rate <= 1:
        raise ValueError(f"label rate must be in [0, 1], got {rate}")
    labels = np.asarray(labels)
    if rate == 0:
        return np.array([], dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = max(1, round(rate * len(members)))
        chosen.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(chosen))


def semi_labels(labels: np.ndarray, rate: float, seed: int = 0, ignore_index: int = -1) -> np.ndarray:
    """Per-video labels with the unchosen videos set to ``ignore_index`` (see :func:`label_subset`)."""
    out = np.full(len(labels), ignore_index, dtype=np.int64)
    keep = label_subset(labels, rate, seed)
    out[keep] = np.asarray(labels)[keep]
    return out
