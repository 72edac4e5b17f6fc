"""Classification metrics of the downstream evaluation: pure numpy functions, no warnings.

- :func:`confusion`: the (K, K) confusion matrix, rows = true class, columns = predicted class.
- :func:`classification_report`: accuracy = trace / total, per-class precision / recall / F1 and support,
  macro F1 (the unweighted mean of the per-class F1 over all K classes). A ratio whose denominator is 0 (no
  prediction of a class, no sample of a class, or precision = recall = 0) is reported as 0, silently.
- :func:`video_vote`: one prediction per video from its frames' predictions.
- :func:`bootstrap_ci`: a percentile bootstrap interval of the accuracy, resampling groups when they are
  given. Frames of one video, and videos of one patient, are strongly correlated, so resampling frames (or
  videos) as if they were independent gives intervals that are too narrow; resampling whole patient groups
  (the unit that was split into folds) is the honest one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """The (K, K) int64 confusion matrix: ``cm[t, p]`` counts the samples of true class t predicted as p.

    Raises:
        ValueError: different lengths, or a label outside [0, num_classes).
    """
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} has labels outside [0, {num_classes}): min {a.min()}, max {a.max()}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0 where den == 0 (no division warning)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def classification_report(cm: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, per-class precision / recall / F1 / support and macro F1 of a confusion matrix.

    Returns a JSON-serialisable dict::

        {"accuracy": trace / total, "total": N, "correct": trace, "macro_f1": mean F1 over the K classes,
         "per_class": {name: {"precision", "recall", "f1", "support"}}}

    precision = cm[k, k] / column k sum, recall = cm[k, k] / row k sum (support = row sum),
    F1 = 2 P R / (P + R); each is 0 when its denominator is 0. An empty matrix has accuracy 0.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (K, K), got shape {cm.shape}")
    if cm.shape[0] != len(classes):
        raise ValueError(f"confusion matrix has {cm.shape[0]} classes but {len(classes)} names were given")
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = int(cm.sum())
    correct = int(tp.sum())
    return {
        "accuracy": correct / total if total else 0.0,
        "total": total,
        "correct": correct,
        "macro_f1": float(f1.mean()) if len(classes) else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, name in enumerate(classes)
        },
    }


def video_vote(
    pred_frames: Sequence[int] | np.ndarray,
    video_ids: Sequence | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    probs: np.ndarray | None = None,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One (true, predicted) class per video from per-frame predictions.

    Without ``probs``: majority vote of the frames' predicted classes; a tie goes to the lowest class index.
    With ``probs`` (F, K): soft vote, the class of the highest mean probability over the video's frames (a
    tie again goes to the lowest index); ``pred_frames`` is then ignored except for its length.

    Args:
        pred_frames: (F,) predicted class of each frame.
        video_ids: (F,) video of each frame (any hashable values that numpy can sort).
        labels: (F,) true class of each frame; must be the same for all frames of a video.
        probs: optional (F, K) class probabilities of each frame.
        num_classes: K for the majority vote (default: max label / prediction + 1).

    Returns:
        (video_true, video_pred), two (V,) int64 arrays, videos in sorted order of their ids
        (``np.unique(video_ids)``).

    Raises:
        ValueError: lengths differ, or a video's frames carry different true labels.
    """
    pred = np.asarray(pred_frames, dtype=np.int64).ravel()
    ids = np.asarray(video_ids).ravel()
    lab = np.asarray(labels, dtype=np.int64).ravel()
    if not (pred.size == ids.size == lab.size):
        raise ValueError(f"pred_frames, video_ids and labels differ in length: {pred.size}, {ids.size}, {lab.size}")
    if pred.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    _, first, inv = np.unique(ids, return_index=True, return_inverse=True)
    inv = inv.ravel()
    video_true = lab[first]
    if np.any(lab != video_true[inv]):
        bad = ids[np.flatnonzero(lab != video_true[inv])[0]]
        raise ValueError(f"video {bad!r} has frames with different true labels")
    n_videos = first.size
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[0] != pred.size:
            raise ValueError(f"probs must be (F, K) with F = {pred.size}, got shape {probs.shape}")
        score = np.zeros((n_videos, probs.shape[1]))
        np.add.at(score, inv, probs)  # the sum: same argmax as the mean
    else:
        k = num_classes if num_classes is not None else int(max(pred.max(), lab.max())) + 1
        score = np.zeros((n_videos, k), dtype=np.int64)
        np.add.at(score, (inv, pred), 1)
    return video_true, score.argmax(axis=1).astype(np.int64)  # argmax: first (lowest) index on ties


def bootstrap_ci(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Sequence | np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the accuracy.

    With ``groups`` (the patient group of each frame, the unit the folds were split by): a cluster bootstrap. Each replicate draws as many groups
    as there are, with replacement, and its accuracy is (correct frames in the drawn groups) / (frames in the
    drawn groups), so large groups weigh as much as in the point estimate. With patient groups this is the
    honest interval for frames, which are correlated within a video and within a patient.

    Without ``groups``: frames are resampled independently. A replicate's number of correct frames is then
    exactly Binomial(F, accuracy), which is what is drawn (same distribution as resampling indices, no
    (n, F) index array).

    Returns:
        (low, high): the alpha/2 and 1 - alpha/2 quantiles of the replicates' accuracies.

    Raises:
        ValueError: empty input, different lengths, n < 1, alpha outside (0, 1).
    """
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    if t.size != p.size:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    if t.size == 0:
        raise ValueError("bootstrap_ci needs at least one sample")
    if n < 1:
        raise ValueError(f"n must be >= 1 bootstrap replicates, got {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    correct = (t == p).astype(np.int64)
    if groups is None:
        accs = rng.binomial(correct.size, correct.mean(), size=n) / correct.size
    else:
        g = np.asarray(groups).ravel()
        if g.size != t.size:
            raise ValueError(f"groups has {g.size} entries but there are {t.size} samples")
        _, inv = np.unique(g, return_inverse=True)
        inv = inv.ravel()
        hits = np.bincount(inv, weights=correct).astype(np.int64)
        sizes = np.bincount(inv).astype(np.int64)
        n_groups = sizes.size
        accs = np.empty(n)
        chunk = max(1, 4_000_000 // n_groups)  # bound the (replicates, groups) index array to ~32 MB
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            idx = rng.integers(0, n_groups, size=(stop - start, n_groups))
            accs[start:stop] = hits[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    low, high = np.quantile(accs, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def per_video_correct(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, video_ids: Sequence[str] | np.ndarray
) -> dict[str, list[int]]:
    """``{video id: [correct frames, test frames]}``: one test's results per video, what a paired comparison of
    two backbones needs (:func:`paired_difference`), whatever order each test put the frames in."""
    t, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    v = np.asarray(video_ids).ravel()
    if not t.size == p.size == v.size:
        raise ValueError(f"y_true, y_pred and video_ids differ in length: {t.size}, {p.size}, {v.size}")
    out: dict[str, list[int]] = {}
    for vid, hit in zip(v.tolist(), (t == p).tolist(), strict=True):
        tally = out.setdefault(str(vid), [0, 0])
        tally[0] += int(hit)
        tally[1] += 1
    return out


def paired_difference(
    a: dict[str, Sequence[int]],
    b: dict[str, Sequence[int]],
    group_of: dict[str, str],
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Frame accuracy of test ``a`` minus that of test ``b`` on the same videos, with a paired bootstrap interval.

    Args:
        a, b: :func:`per_video_correct` of two tests of the same videos (e.g. two backbones, same folds).
        group_of: patient group of each video id (the unit the folds were split by).
        n, seed, alpha: replicates, seed, and 1 - the interval's coverage.

    Each replicate draws the patient groups with replacement once and scores *both* tests on that draw, so what
    the two share (hard patients, easy ones) cancels in the difference. Returns ``(difference, low, high)``:
    the difference on all videos and the alpha/2, 1 - alpha/2 quantiles of the replicates' differences.

    Raises:
        ValueError: the two tests cover different videos, a video without a group, n < 1, alpha outside (0, 1).
    """
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise ValueError(f"the two tests cover different videos ({len(only)} in one only, e.g. {only[0]})")
    if not a:
        raise ValueError("paired_difference needs at least one video")
    if n < 1:
        raise ValueError(f"n must be >= 1 bootstrap replicates, got {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    missing = [v for v in a if v not in group_of]
    if missing:
        raise ValueError(f"video {missing[0]} has no patient group")
    videos = sorted(a)
    _, inv = np.unique([group_of[v] for v in videos], return_inverse=True)
    inv = inv.ravel()
    per_group = [
        np.bincount(inv, weights=[float(test[v][i]) for v in videos]) for test in (a, b) for i in (0, 1)
    ]  # correct and frames of a, then of b, per group
    rng = np.random.default_rng(seed)
    g = per_group[0].size
    counts = rng.multinomial(g, np.full(g, 1.0 / g), size=n).astype(np.float64)  # times each group is drawn
    diffs = counts @ per_group[0] / (counts @ per_group[1]) - counts @ per_group[2] / (counts @ per_group[3])
    point = per_group[0].sum() / per_group[1].sum() - per_group[2].sum() / per_group[3].sum()
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return float(point), float(low), float(high)
