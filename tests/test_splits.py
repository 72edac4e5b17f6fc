"""Splits by patient group: checked by independent assertions on the returned indices."""

from __future__ import annotations

import numpy as np
import pytest

from hico.data.splits import holdout_split, kfold_splits, label_subset, semi_labels


def toy(n_groups: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Videos of patients: each patient has 1-4 videos, all of one class (3 classes)."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for g in range(n_groups):
        k = rng.integers(1, 5)
        labels += [g % 3] * k
        groups += [f"p{g}"] * k
    return np.array(labels), np.array(groups)


@pytest.mark.parametrize("k", [2, 5])
def test_kfold_never_puts_a_patient_on_both_sides(k):
    labels, groups = toy()
    folds = kfold_splits(labels, groups, k=k, seed=3)
    assert len(folds) == k
    seen = np.concatenate([te for _, te in folds])
    assert sorted(seen.tolist()) == list(range(len(labels)))  # every video tested exactly once
    for tr, te in folds:
        assert set(tr).isdisjoint(te) and len(tr) + len(te) == len(labels)
        assert set(groups[tr]).isdisjoint(set(groups[te]))  # no patient leaks
        assert set(labels[te]) == {0, 1, 2}  # stratified: each class in each test fold


def test_kfold_is_seeded():
    labels, groups = toy()
    a = kfold_splits(labels, groups, 5, seed=1)
    b = kfold_splits(labels, groups, 5, seed=1)
    c = kfold_splits(labels, groups, 5, seed=2)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c, strict=True))


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 5 patient groups"):
        kfold_splits(np.array([0, 1, 0]), np.array(["a", "b", "c"]), k=5)


def test_holdout_is_grouped_and_about_the_asked_fraction():
    labels, groups = toy(40)
    tr, te = holdout_split(labels, groups, 0.2, seed=0)
    assert set(groups[tr]).isdisjoint(groups[te])
    assert 0.1 < len(te) / len(labels) < 0.3


def test_label_subset_is_per_video_stratified_and_seeded():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    keep = label_subset(labels, 0.1, seed=0)
    counts = np.bincount(labels[keep], minlength=3)
    assert counts.tolist() == [5, 3, 2]
    assert len(np.unique(keep)) == len(keep)
    assert np.array_equal(keep, label_subset(labels, 0.1, seed=0))
    assert np.bincount(labels[label_subset(labels, 0.01)], minlength=3).tolist() == [1, 1, 1]
    assert len(label_subset(labels, 0.0)) == 0 and len(label_subset(labels, 1.0)) == 100


def test_semi_labels_marks_the_rest_unlabelled():
    labels = np.array([0, 0, 1, 1, 2, 2])
    out = semi_labels(labels, 0.5, seed=0)
    kept = out != -1
    assert kept.sum() == 3 and np.array_equal(out[kept], labels[kept])
    with pytest.raises(ValueError, match="label rate"):
        semi_labels(labels, 1.5)
