"""Linear probe and k-NN on frozen features, per level, with grouped stratified k-fold over videos.

Folds are built on videos with :func:`hico.data.splits.kfold_splits` (stratified by class, grouped by patient:
no patient, hence no video and no frame, on both sides of a fold), then expanded to the videos' frames. For each
level and fold:

- linear probe: ``StandardScaler -> LogisticRegression(C)`` (scikit-learn, lbfgs, multinomial), fitted on the
  training frames; ``C=None`` chooses C from :data:`C_GRID` by a grouped cross-validation *inside* the training
  frames (:func:`choose_C`), as a pretrained backbone's features overfit a weakly regularised probe where a random
  one's hardly change;
- k-NN: cosine similarity, k neighbours, votes weighted by ``exp(sim / 0.07)`` (:mod:`hico.eval.knn`).

When the features come from a backbone pretrained on these videos with some of their labels (a softened CE),
those videos and their patients' other videos are in no test fold (:mod:`hico.eval.leakage`); the result says
how many (``label_overlap``) and how many test videos the pretraining trained on without labels
(``pretrained_on_test_videos``).

Reported per level: mean and (population) standard deviation of the per-fold frame accuracies, the frame
accuracy pooled over folds (= trace / total of the summed confusion matrices), and the video accuracy by
majority vote of a video's frames (ties: lowest class index).

Command line::

    hico probe --backbone runs/x --data ../data/pocus --classes covid pneumonia regular --size 224 --out probe.json
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hico.eval.features import Features
from hico.eval.leakage import Guard, overlap_line


def probe_splits(
    features: Features, folds: int = 5, seed: int = 0, seen: Guard | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per fold, (train, test) arrays of video indices (values of :attr:`Features.video`).

    Stratified by class and grouped by patient over the videos present in ``features``; with ``seen`` (the
    :class:`~hico.eval.leakage.Guard` of these videos, in the order of ``np.unique(features.video)``), the videos
    whose labels the pretraining used and their patients' other videos are in no test fold.
    """
    from hico.data.splits import kfold_splits

    vids, first = np.unique(features.video, return_index=True)
    groups = features.groups[first]
    splits = kfold_splits(features.labels[first], groups, k=folds, seed=seed)
    if seen is not None:
        splits = seen.constrain(splits, groups)
    return [(vids[tr], vids[te]) for tr, te in splits]


C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
"""The inverse L2 strengths :func:`choose_C` tries, ascending."""


def choose_C(
    x_train: np.ndarray, y_train: np.ndarray, groups: np.ndarray, grid: Sequence[float] = C_GRID, folds: int = 3,
    max_iter: int = 2000,
) -> float:  # fmt: skip
    """The C of ``grid`` whose probe scores best in a grouped cross-validation of the training rows alone.

    ``folds`` folds of ``groups`` (the patient group of each row: no group on both sides, scikit-learn's
    ``GroupKFold``, deterministic); a fold whose training part holds a single class is skipped. The score is the
    mean accuracy over the folds; ties go to the smaller C (the stronger regularisation). With fewer than two
    groups, or no usable fold, there is nothing to compare: 1.0.
    """
    from sklearn.model_selection import GroupKFold

    g = np.asarray(groups).ravel()
    if len(g) != len(y_train):
        raise ValueError(f"groups has {len(g)} entries but there are {len(y_train)} training rows")
    n_groups = len(np.unique(g))
    if n_groups < 2:
        return 1.0
    splits = [
        (tr, te)
        for tr, te in GroupKFold(n_splits=min(folds, n_groups)).split(x_train, y_train, g)
        if len(np.unique(y_train[tr])) >= 2
    ]
    if not splits:
        return 1.0
    grid = sorted(grid)
    scores = [
        np.mean([np.mean(fit_linear(x_train[tr], y_train[tr], c, max_iter)[0].predict(x_train[te]) == y_train[te])
                 for tr, te in splits])
        for c in grid
    ]  # fmt: skip
    return float(grid[int(np.argmax(scores))])  # the first best: the smallest C among equals


def fit_linear(
    x_train: np.ndarray, y_train: np.ndarray, C: float | None = 1.0, max_iter: int = 2000,
    groups: np.ndarray | None = None,
):  # fmt: skip
    """A ``StandardScaler -> LogisticRegression(C)`` pipeline fitted on the rows; returns (model, converged).

    ``C=None``: chosen by :func:`choose_C` on these rows, grouped by ``groups`` (then required); the C used is
    ``model[-1].C``.

    Raises:
        ValueError: the training rows hold a single class; C is None without groups.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_train)) < 2:
        raise ValueError("a training fold holds a single class: lower --folds or add videos of the other classes")
    if C is None:
        if groups is None:
            raise ValueError("fit_linear: C=None chooses C by a grouped cross-validation, so it needs groups")
        C = choose_C(x_train, y_train, groups, max_iter=max_iter)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x_train, y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return model, converged


def probe(
    features: Features,
    folds: int = 5,
    seed: int = 0,
    k: int = 10,
    C: float = 1.0,
    max_iter: int = 2000,
    backbone: str | None = None,
    data: str | Path | None = None,
    keep_in_training: Sequence[str] = (),
) -> dict:
    """Linear-probe and k-NN accuracy of every level of ``features`` under grouped k-fold over videos.

    Args:
        features: from :func:`hico.eval.features.extract_features`.
        folds: number of folds (at least 2, at most the number of patient groups).
        seed: seed of the fold assignment.
        k: neighbours of the k-NN classifier.
        C: inverse L2 strength of the logistic regression; None: chosen per fold (:func:`choose_C`).
        max_iter: lbfgs iterations.
        backbone: the backbone the features come from (default: ``features.meta["backbone"]``), and
        data: the dataset folder (default: ``features.meta["data"]``): when it is the folder a run pretrained
            on with some videos' labels, those videos (and their patients' others) are in no test fold
            (:mod:`hico.eval.leakage`). Without either, the counts are None (unknown).
        keep_in_training: ids of further videos never to test (e.g. another backbone's labelled videos).

    Returns:
        ``{"classes", "folds", "seed", "k", "C", "n_frames", "n_videos", "n_groups",
        "splits": [{"train_videos": [...ids], "test_videos": [...ids], "test_frames": int}, ...],
        "levels": {level: {"dim", "linear_mean", "linear_std", "linear_folds", "linear_frame_acc",
        "linear_video_acc", "linear_confusion", "linear_converged", "linear_C", "knn_mean", "knn_std",
        "knn_folds", "knn_frame_acc", "knn_video_acc"}}, "meta", "label_overlap", "pretrained_on_test_videos",
        "kept_in_training", "pretraining"}``; accuracies are fractions in [0, 1]; ``linear_C``: the C each fold
        used (``C``, or the one chosen in that fold).

    Raises:
        ValueError: a fold is left without test videos once the labelled videos are kept in training.
    """
    from hico.eval.knn import knn_predict
    from hico.eval.leakage import guard
    from hico.eval.metrics import confusion, video_vote

    backbone = backbone if backbone is not None else features.meta.get("backbone")
    data = data if data is not None else features.meta.get("data")
    present = np.unique(features.video)
    ids = np.asarray(features.video_ids, dtype=str)
    seen = None
    if backbone is not None and data is not None:
        seen = guard(backbone, data, ids[present].tolist(), keep_in_training)
    splits = probe_splits(features, folds, seed, seen)
    y = features.labels
    n_classes = len(features.classes)
    masks = [(np.isin(features.video, tr), np.isin(features.video, te)) for tr, te in splits]
    tested = np.any([te for _, te in masks], axis=0)  # the frames scored (kept videos are only trained on)
    result: dict = {
        "classes": list(features.classes),
        "folds": folds,
        "seed": seed,
        "k": k,
        "C": C,
        "n_frames": len(features),
        "n_videos": len(np.unique(features.video)),
        "n_groups": len(np.unique(features.groups)),
        "splits": [
            {"train_videos": ids[tr].tolist(), "test_videos": ids[te].tolist(), "test_frames": int(m_te.sum())}
            for (tr, te), (_, m_te) in zip(splits, masks, strict=True)
        ],
        "levels": {},
        "meta": dict(features.meta),
    }
    if seen is not None:  # the guard's positions are those of ``present``
        position = {v: i for i, v in enumerate(present)}
        rel = [(np.array([position[v] for v in tr]), np.array([position[v] for v in te])) for tr, te in splits]
        result.update(seen.report(rel, ids[present].tolist()))
    else:
        result.update(label_overlap=None, pretrained_on_test_videos=None, kept_in_training=[], pretraining=None)
    for name, x in features.levels.items():
        x = np.asarray(x, dtype=np.float32)
        lin_pred = np.full(len(y), -1, dtype=np.int64)
        knn_pred = np.full(len(y), -1, dtype=np.int64)
        lin_acc, knn_acc, used_C, converged = [], [], [], True
        for train, test in masks:
            model, ok = fit_linear(x[train], y[train], C, max_iter, groups=features.groups[train])
            converged &= ok
            used_C.append(float(model[-1].C))
            lin_pred[test] = model.predict(x[test])
            knn_pred[test] = knn_predict(x[train], y[train], x[test], k=k, num_classes=n_classes)
            lin_acc.append(float(np.mean(lin_pred[test] == y[test])))
            knn_acc.append(float(np.mean(knn_pred[test] == y[test])))
        level = {
            "dim": int(x.shape[1]),
            "linear_mean": float(np.mean(lin_acc)),
            "linear_std": float(np.std(lin_acc)),
            "linear_folds": lin_acc,
            "linear_frame_acc": float(np.mean(lin_pred[tested] == y[tested])),
            "linear_confusion": confusion(y[tested], lin_pred[tested], n_classes).tolist(),
            "linear_converged": bool(converged),
            "linear_C": used_C,
            "knn_mean": float(np.mean(knn_acc)),
            "knn_std": float(np.std(knn_acc)),
            "knn_folds": knn_acc,
            "knn_frame_acc": float(np.mean(knn_pred[tested] == y[tested])),
        }
        for kind, pred in (("linear", lin_pred), ("knn", knn_pred)):
            v_true, v_pred = video_vote(pred[tested], features.video[tested], y[tested], num_classes=n_classes)
            level[f"{kind}_video_acc"] = float(np.mean(v_true == v_pred))
        result["levels"][name] = level
    return result


def format_table(result: dict) -> str:
    """A plain-text table: one row per level, linear and k-NN accuracy (mean ± std over folds, in %)."""

    def pct(mean: float, std: float) -> str:
        return f"{100 * mean:5.1f} ± {100 * std:4.1f}"

    head = (
        f"{result['folds']}-fold grouped CV: {result['n_videos']} videos, {result['n_frames']} frames, "
        f"{result['n_groups']} groups; classes {', '.join(result['classes'])}"
    )
    lines = [
        head,
        f"{'level':<8}{'dim':>5}  {'linear %':>13}  {'k-NN %':>13}  {'lin pooled':>10}  {'lin video':>9}",
    ]
    for name, r in result["levels"].items():
        lines.append(
            f"{name:<8}{r['dim']:>5}  {pct(r['linear_mean'], r['linear_std']):>13}  "
            f"{pct(r['knn_mean'], r['knn_std']):>13}  {100 * r['linear_frame_acc']:>10.1f}  "
            f"{100 * r['linear_video_acc']:>9.1f}"
        )
    if result["C"] is None:
        lines.append("C of the linear probe, chosen per fold inside its training videos:")
        lines += [f"  {name:<8}{', '.join(f'{c:g}' for c in r['linear_C'])}" for name, r in result["levels"].items()]
    if "label_overlap" in result:
        lines.append(overlap_line(result))
    if not all(r["linear_converged"] for r in result["levels"].values()):
        lines.append("note: the logistic regression did not converge on some folds (raise max_iter)")
    return "\n".join(lines)
